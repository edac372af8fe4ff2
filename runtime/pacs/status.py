"""``listen --status DIR``: what the listener's folder holds, read from its files only."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.pacs.outbox import OUTBOX, PENDING, SENT, STATE
from runtime.pacs.reports import SR_FOLDER
from runtime.pacs.spool import received
from runtime.running.results import RESULTS, read_rows, summarize_rows


def queue_status(out: Path) -> dict:
    """Counts of a listener folder: received, triaged, flagged, out of scope, errors, SRs, and
    per destination: waiting, sent, the last failure and the SRs refused (with the reason)."""
    out = Path(out)
    counts = summarize_rows(read_rows(out / RESULTS))
    n_received = received(out)
    reports = out / SR_FOLDER
    destinations = []
    outbox = out / OUTBOX
    for folder in sorted(outbox.iterdir()) if outbox.is_dir() else []:
        try:
            state = json.loads((folder / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        destinations.append({
            "destination": state.get("destination", folder.name),
            "waiting": len(list((folder / PENDING).glob("*.sr.dcm"))),
            "sent": len(list((folder / SENT).glob("*.sr.dcm"))),
            "failures_in_a_row": state.get("failures", 0),
            "last_error": state.get("last_error", ""), "last_try": state.get("last_try", ""),
            "refused": state.get("refused", {})})
    return {"received": n_received, "triaged": counts["total"],
            "waiting_for_triage": max(0, n_received - counts["total"]),
            "scored": counts["ok"], "flagged": counts["flagged"],
            "out_of_scope": counts["out_of_scope"], "errors": counts["errors"],
            "reports": len(list(reports.glob("*.sr.dcm"))) if reports.is_dir() else 0,
            "destinations": destinations}


def status_lines(status: dict) -> list[str]:
    """The status as plain lines for the console."""
    lines = [(f"received {status['received']}, triaged {status['triaged']} "
             f"({status['waiting_for_triage']} waiting), flagged {status['flagged']} (of which "
             f"out of scope {status['out_of_scope']}), could not be triaged {status['errors']}, "
             f"SRs written {status['reports']}")]
    for d in status["destinations"]:
        line = f"{d['destination']}: {d['sent']} sent, {d['waiting']} waiting"
        if d["last_error"] and d["waiting"]:
            line += f"; last failure ({d['last_try']}): {d['last_error']}"
        lines.append(line)
        lines += [f"  refused {name}: {why}" for name, why in sorted(d["refused"].items())]
    if not status["destinations"]:
        lines.append("no destinations (no --send-to or --stow): the SRs stay in sr/")
    return lines
