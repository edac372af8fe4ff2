"""The outbox: SRs waiting for each destination, on disk, retried with back-off, sent once.

Layout under ``--out``: ``outbox/<destination>/pending/`` and ``.../sent/`` hold hard links to
the SR files in ``sr/`` (a copy where links are not possible), and ``.../state.json`` the
destination's last failure and next try. An SR is queued for a destination when it is in neither
folder (so a restart queues what a kill left out, and never twice); it moves from ``pending`` to
``sent`` only after the destination answered "stored". A destination that fails waits
``base * 2^(failures-1)`` seconds (at most ``max_backoff_s``) before the next try; the SRs wait
on disk meanwhile. The SR keeps its SOP Instance UID on every try, so a kill between "stored"
and the move re-sends the same instance, which the archive files as the same object.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.pacs.destinations import Destination, Unreachable
from runtime.pacs.reports import SR_FOLDER

OUTBOX = "outbox"
PENDING, SENT, STATE = "pending", "sent", "state.json"
#: SRs sent over one connection
BATCH = 64


@dataclass
class Attempts:
    """A destination's failures in a row and when it may be tried again (monotonic seconds)."""

    failures: int = 0
    next_try: float = 0.0


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


class Outbox:
    def __init__(self, out: Path, destinations: list[Destination], base_backoff_s: float = 1.0,
                 max_backoff_s: float = 300.0):
        self.out = Path(out)
        self.destinations = destinations
        self.base, self.most = base_backoff_s, max_backoff_s
        self.attempts = {d.name: Attempts() for d in destinations}
        for d in destinations:
            for sub in (PENDING, SENT):
                (self.folder(d) / sub).mkdir(parents=True, exist_ok=True)
            state = self.folder(d) / STATE
            if not state.exists():
                _write_json(state, {"destination": d.shown, "failures": 0, "last_error": "",
                                    "refused": {}})

    def folder(self, destination: Destination) -> Path:
        return self.out / OUTBOX / destination.name

    def enqueue_new(self) -> int:
        """Queue every SR of ``sr/`` that a destination has neither pending nor sent."""
        reports = self.out / SR_FOLDER
        if not reports.is_dir():
            return 0
        names = sorted(p.name for p in reports.iterdir() if p.name.endswith(".sr.dcm"))
        queued = 0
        for d in self.destinations:
            pending, sent = self.folder(d) / PENDING, self.folder(d) / SENT
            for name in names:
                if (pending / name).exists() or (sent / name).exists():
                    continue
                partial = pending / (name + ".tmp")
                try:
                    os.link(reports / name, partial)
                except OSError:
                    shutil.copyfile(reports / name, partial)
                os.replace(partial, pending / name)
                queued += 1
        return queued

    def _record(self, d: Destination, error: str, refused: dict[str, str]) -> None:
        attempts = self.attempts[d.name]
        if error or refused:
            attempts.failures += 1
            wait = min(self.most, self.base * 2 ** (attempts.failures - 1))
            attempts.next_try = time.monotonic() + wait
        else:
            attempts.failures, attempts.next_try = 0, 0.0
        state = self.folder(d) / STATE
        previous = json.loads(state.read_text(encoding="utf-8")) if state.exists() else {}
        kept = {k: v for k, v in previous.get("refused", {}).items()
                if (self.folder(d) / PENDING / k).exists()}
        kept.update(refused)
        _write_json(state, {"destination": d.shown, "failures": attempts.failures,
                            "last_error": error or (next(iter(refused.values())) if refused
                                                    else ""),
                            "last_try": _now(), "refused": kept})

    def deliver_due(self) -> int:
        """Try every destination whose back-off has passed; returns the SRs delivered."""
        delivered = 0
        for d in self.destinations:
            if time.monotonic() < self.attempts[d.name].next_try:
                continue
            pending = self.folder(d) / PENDING
            files = sorted((p for p in pending.iterdir() if p.name.endswith(".sr.dcm")),
                           key=lambda p: (p.stat().st_mtime_ns, p.name))  # amended after first
            while files:
                batch, files = files[:BATCH], files[BATCH:]
                try:
                    answers = d.send(batch)
                except Unreachable as exc:
                    print(f"not sent to {d.shown}: {exc}; {len(batch) + len(files)} SRs wait, "
                          "next try later", flush=True)
                    self._record(d, str(exc), {})
                    break
                refused: dict[str, str] = {}
                for path, why in answers.items():
                    if why:
                        refused[path.name] = why
                    else:
                        os.replace(path, self.folder(d) / SENT / path.name)
                        delivered += 1
                        print(f"sent {path.name} to {d.shown}", flush=True)
                self._record(d, "", refused)
                if refused or len(answers) < len(batch):
                    break
        return delivered

    def waiting(self) -> int:
        return sum(len(list((self.folder(d) / PENDING).glob("*.sr.dcm")))
                   for d in self.destinations)
