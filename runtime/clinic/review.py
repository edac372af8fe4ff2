"""The doctor's review of triaged cases: ``review.csv`` beside ``results.csv``, append-only.

Each decision is one row, appended, flushed and fsynced as it is made, so closing the app (or a
crash) loses nothing and reopening resumes where the reviewer stopped. History is never
rewritten: ``results.csv`` is never touched, and an undo appends an ``undo`` row naming the
``seq`` of the row it takes back. :meth:`ReviewLog.cases` folds the rows into each case's current
state. The file is a plain CSV that opens in a spreadsheet.

Actions: ``confirmed`` (the flag is right), ``overruled`` (the case is normal), ``unsure``,
``note`` (free text, no decision) and ``undo``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from runtime.running.results import ResultsError, one_line, repair_tail

REVIEW = "review.csv"
DECISIONS = ("confirmed", "overruled", "unsure")
NOTE = "note"
UNDO = "undo"
ACTIONS = (*DECISIONS, NOTE, UNDO)


@dataclass(frozen=True)
class ReviewEntry:
    """One row of review.csv (``seq`` is given by the log when it is appended)."""

    path: str  # as in results.csv
    image_sha256: str  # of the image file the reviewer saw
    action: str  # one of ACTIONS
    note: str = ""
    reviewer: str = ""
    time: str = ""  # ISO 8601, UTC
    bundle: str = ""  # the bundle's path (results' run.json / summary.json)
    artifact: str = ""  # the artifact that scored the case
    probability: str = ""  # as in results.csv
    threshold: str = ""  # the threshold in force
    seq: int = 0  # position in the log, from 1
    undoes: int = 0  # for an undo: the seq of the row taken back

    def as_list(self) -> list[str]:
        return [str(self.seq), self.path, self.image_sha256, self.action, one_line(self.note),
                self.reviewer, self.time, self.bundle, self.artifact, self.probability,
                self.threshold, str(self.undoes) if self.undoes else ""]


COLUMNS = ("seq", "path", "image_sha256", "action", "note", "reviewer", "time", "bundle",
           "artifact", "probability", "threshold", "undoes")


@dataclass
class CaseReview:
    """The current state of one case after folding its rows (undone rows left out)."""

    path: str
    decision: str = ""  # the latest of DECISIONS, "" when undecided
    reviewer: str = ""
    time: str = ""
    notes: list[str] = field(default_factory=list)


def now() -> str:
    """The time written into a row (UTC, seconds)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _parse(values: list[str], path: Path, line: int) -> ReviewEntry:
    row = dict(zip(COLUMNS, values))
    try:
        seq, undoes = int(row["seq"]), int(row["undoes"] or 0)
    except (KeyError, ValueError) as exc:
        raise ResultsError(f"{path} line {line} is damaged ({values[:3]}…); move the file away "
                           "to start the review again") from exc
    if row["action"] not in ACTIONS:
        raise ResultsError(f"{path} line {line} has an unknown action {row['action']!r} "
                           f"(expected one of {', '.join(ACTIONS)})")
    names = {f.name for f in fields(ReviewEntry)} - {"seq", "undoes"}
    return ReviewEntry(**{k: row.get(k, "") for k in names}, seq=seq, undoes=undoes)


class ReviewLog:
    """The review.csv of one results folder: read at open, appended to as decisions are made."""

    def __init__(self, results_dir: str | os.PathLike):
        self.path = Path(results_dir) / REVIEW
        self.entries: list[ReviewEntry] = []
        if self.path.exists():
            repair_tail(self.path)  # a kill mid-write leaves a cut line: dropped, not misread
            self.entries = self._read()

    def _read(self) -> list[ReviewEntry]:
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != COLUMNS:
            raise ResultsError(f"{self.path} is not a review file (header {header[:4]}…); move it "
                               "away to start the review again")
        return [_parse(values, self.path, n) for n, values in enumerate(reader, 2) if values]

    def append(self, entry: ReviewEntry) -> ReviewEntry:
        """Write one row (numbered), flushed and fsynced before returning it."""
        if entry.action not in ACTIONS:
            raise ValueError(f"unknown review action {entry.action!r}")
        if entry.action == UNDO and entry.undoes not in {e.seq for e in self.entries}:
            raise ValueError(f"undo names row {entry.undoes}, which is not in {self.path}")
        seq = self.entries[-1].seq + 1 if self.entries else 1
        entry = ReviewEntry(**{**entry.__dict__, "seq": seq, "time": entry.time or now()})
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            if fresh:
                writer.writerow(COLUMNS)
            writer.writerow(entry.as_list())
            handle.flush()
            os.fsync(handle.fileno())
        self.entries.append(entry)
        return entry

    def undone(self) -> set[int]:
        """The seq of every row taken back by an undo."""
        return {e.undoes for e in self.entries if e.action == UNDO}

    def last_undoable(self) -> ReviewEntry | None:
        """The newest decision or note not yet taken back (what the next undo takes back)."""
        undone = self.undone()
        for entry in reversed(self.entries):
            if entry.action != UNDO and entry.seq not in undone:
                return entry
        return None

    def undo(self, reviewer: str) -> ReviewEntry | None:
        """Take back the newest decision or note (appends an undo row); None when none is left."""
        target = self.last_undoable()
        if target is None:
            return None
        return self.append(ReviewEntry(target.path, target.image_sha256, UNDO,
                                       reviewer=reviewer, bundle=target.bundle,
                                       artifact=target.artifact,
                                       probability=target.probability,
                                       threshold=target.threshold, undoes=target.seq))

    def cases(self) -> dict[str, CaseReview]:
        """Each reviewed case's current state (decisions and notes that were not undone)."""
        undone = self.undone()
        state: dict[str, CaseReview] = {}
        for entry in self.entries:
            if entry.action == UNDO or entry.seq in undone:
                continue
            case = state.setdefault(entry.path, CaseReview(entry.path))
            if entry.action == NOTE:
                case.notes.append(entry.note)
            else:
                case.decision, case.reviewer, case.time = entry.action, entry.reviewer, entry.time
        return state
