"""The running gateway: listener -> spool -> folder triage -> SR -> outbox, until stopped.

The spool is triaged by :func:`runtime.running.triage.triage`, the folder runner itself (same
scope rules, feature guard, results.csv and resume), each time instances have arrived: rows
already in ``results.csv`` are skipped, so after a kill or a restart every spooled (acknowledged)
instance is triaged exactly once. After each pass the new DICOM rows get their SR
(:mod:`runtime.pacs.reports`), a decision appended to ``review.csv`` (the app's review of this
folder) an amended SR, and the outbox, in its own thread, queues and sends them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from runtime.bundle.load import Bundle
from runtime.bundle.selfcheck import self_check
from runtime.clinic.review import REVIEW
from runtime.pacs.destinations import Destination
from runtime.pacs.listener import Listener, ListenerSettings
from runtime.pacs.outbox import Outbox
from runtime.pacs.reports import write_amended_reports, write_new_reports
from runtime.pacs.spool import prepare, received
from runtime.running.results import RESULTS, Row, read_rows
from runtime.running.triage import triage

#: seconds between looks at the outbox when nothing happens (back-off decides the real retries)
OUTBOX_POLL_S = 0.5


@dataclass
class GatewaySettings:
    listener: ListenerSettings
    destinations: list[Destination]
    batch: int = 32
    workers: int = 2
    base_backoff_s: float = 1.0
    max_backoff_s: float = 300.0


def _row_words(row: Row, findings: list[str] | None = None) -> str:
    """A row on the console: the SOP Instance UID and the verdict, never the reasons (a scope
    reason names the patient's age, an error may quote the header): those are in results.csv.

    ``findings``: the model's findings; with several, the words name the finding flagged (or,
    not flagged, the likeliest finding whose probability is given)."""
    if row.status != "ok":
        return f"{row.path}: could not be triaged (why: results.csv)"
    if row.scope == "out":
        return f"{row.path}: OUT OF SCOPE, flagged (why: results.csv)"
    if findings and len(findings) > 1:
        p = row.probabilities
        if row.flagged:
            return f"{row.path}: FLAGGED {row.prediction} (probability {row.probability:.3f})"
        likeliest = max(findings, key=lambda label: p.get(label, -1.0))
        return f"{row.path}: not flagged ({row.prediction}; {likeliest} probability " \
               f"{p.get(likeliest, row.probability):.3f})"
    return f"{row.path}: {'FLAGGED' if row.flagged else 'not flagged'} " \
           f"(probability {row.probability:.3f})"


class Gateway:
    def __init__(self, bundle: Bundle, settings: GatewaySettings):
        self.bundle, self.settings = bundle, settings
        self.out = Path(settings.listener.out)
        self.arrived, self.triaged = threading.Event(), threading.Event()
        self.stopping, self.kick = threading.Event(), threading.Event()
        self.reports_final = threading.Event()
        self.review_seen = 0
        self.unreportable: set[str] = set()
        self.outbox = Outbox(self.out, settings.destinations, settings.base_backoff_s,
                             settings.max_backoff_s)

    def triage_pass(self) -> None:
        """Triage what the spool holds beyond results.csv (then the reporter writes the SRs)."""
        spool = self.out / "spool"
        if received(self.out) > len(read_rows(self.out / RESULTS)):
            triage(spool, self.bundle, self.out, batch=self.settings.batch,
                   workers=self.settings.workers, check_device=False,
                   on_row=lambda row: print(_row_words(row, self.bundle.findings), flush=True))
        self.triaged.set()

    def report_pass(self) -> None:
        """The SRs of the rows triaged since the last pass (highdicom is slow: ~0.1-0.3 s each,
        so this runs beside the triage, not after each of its passes)."""
        made = write_new_reports(self.out, self.unreportable)
        for path, why in made.problems:
            print(f"no SR for {path}: {why}", flush=True)
            self.unreportable.add(path)  # said once; tried again at the next start
        if made.written:
            self.kick.set()

    def review_pass(self) -> None:
        """Amended SRs for the review decisions made since the last look at review.csv."""
        try:
            changed = (self.out / REVIEW).stat().st_mtime_ns
        except FileNotFoundError:
            return
        if changed == self.review_seen:
            return
        self.review_seen = changed
        made = write_amended_reports(self.out)
        for path, why in made.problems:
            print(f"no amended SR for {path}: {why}", flush=True)
        for path in made.written:
            print(f"amended SR {path.name} (review decision)", flush=True)
        if made.written:
            self.kick.set()

    def _report_loop(self) -> None:
        new_rows = True  # at start: rows a previous run triaged but did not report
        while True:
            last = self.stopping.is_set()  # set after the last triage pass: this pass sees all
            if new_rows or last:
                self.report_pass()
            self.review_pass()
            if last:
                self.reports_final.set()
                self.kick.set()
                return
            new_rows = self.triaged.wait(0.5)  # review.csv is looked at meanwhile
            self.triaged.clear()

    def _send_loop(self) -> None:
        new_reports = True  # at start: SRs a previous run wrote but did not queue
        while True:
            last = self.reports_final.is_set()  # every SR written: this pass queues them all
            if new_reports or last:
                self.outbox.enqueue_new()
            self.outbox.deliver_due()
            if last:
                return
            new_reports = self.kick.wait(OUTBOX_POLL_S)  # back-off retries meanwhile
            self.kick.clear()

    def run(self) -> None:
        """Serve until :meth:`stop`; returns after a last triage pass and send attempt."""
        spool = prepare(self.out)
        check = self_check(self.bundle, never_inside=spool)
        print(f"device check: agrees with the build on {check['n']} reference images"
              f"{' (remembered)' if check.get('cached') else ''}", flush=True)
        listener = Listener(self.settings.listener, lambda path: self.arrived.set())
        self.triage_pass()  # what a previous run acknowledged but did not triage
        listener.start()
        s = self.settings.listener
        print(f"listening as {s.ae_title} on {s.host}:{s.port}"
              f"{' (TLS)' if s.tls_cert else ''}; Ctrl-C stops", flush=True)
        reporter = threading.Thread(target=self._report_loop, name="reports", daemon=True)
        sender = threading.Thread(target=self._send_loop, name="outbox", daemon=True)
        reporter.start()
        sender.start()
        try:
            while not self.stopping.is_set():
                if self.arrived.wait(0.5):
                    self.arrived.clear()
                    self.triage_pass()
        finally:
            listener.stop()
            self.triage_pass()
            self.stopping.set()
            reporter.join()
            sender.join(timeout=60)

    def stop(self) -> None:
        self.stopping.set()
        self.arrived.set()
