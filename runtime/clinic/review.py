"""The doctors' review of triaged cases: ``review.csv`` beside ``results.csv``, append-only,
shared by every reviewer of the results folder.

Each decision is one row, appended, flushed and fsynced as it is made, so closing the app (or a
crash) loses nothing and reopening resumes where the reviewer stopped. History is never
rewritten: ``results.csv`` is never touched, and an undo appends an ``undo`` row naming the ``id``
of the row it takes back. Many reviewers (processes, machines on a shared folder) can write one
log: each append takes an exclusive lock on the file, re-reads what the others wrote since, then
writes; every row has a unique ``id`` (and ``seq``, its position, given under the lock). An undo
takes back the newest row of *its* reviewer. :meth:`ReviewLog.cases` folds the rows into each
case's current state: each reviewer's latest decision is an opinion; the first reviewer's is the
case's decision and a later reviewer's is kept beside it as a second opinion, never over it.
The file is a plain CSV that opens in a spreadsheet.

Actions: ``confirmed`` (the flag is right: for a model with several findings, the finding the row
names, e.g. VIRAL), ``overruled`` (the case is normal), ``unsure``,
``note`` (free text, no decision) and ``undo``. A log written before the ``id`` column existed is
read (its rows' ids are their ``seq``) and given the column, under the lock, at its next append.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import fcntl
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import BinaryIO

from runtime.running.results import ResultsError, one_line

REVIEW = "review.csv"
DECISIONS = ("confirmed", "overruled", "unsure")
NOTE = "note"
UNDO = "undo"
ACTIONS = (*DECISIONS, NOTE, UNDO)


@dataclass(frozen=True)
class ReviewEntry:
    """One row of review.csv (``seq`` and ``id`` are given by the log when it is appended)."""

    path: str  # as in results.csv
    image_sha256: str  # of the image file the reviewer saw
    action: str  # one of ACTIONS
    note: str = ""
    reviewer: str = ""
    time: str = ""  # ISO 8601, UTC
    bundle: str = ""  # the bundle's path (results' run.json / summary.json)
    artifact: str = ""  # the artifact that scored the case
    #: as in results.csv: the probability of the finding the row names (for a model with several
    #: findings, the finding a confirmation confirms; results.csv's prediction names it)
    probability: str = ""
    threshold: str = ""  # the threshold in force of that finding
    seq: int = 0  # position in the log, from 1
    undoes: str = ""  # for an undo: the id of the row taken back
    id: str = ""  # unique in the log (a random hex; a pre-id log's rows: their seq)

    def as_list(self) -> list[str]:
        return [str(self.seq), self.path, self.image_sha256, self.action, one_line(self.note),
                self.reviewer, self.time, self.bundle, self.artifact, self.probability,
                self.threshold, self.undoes, self.id]


COLUMNS = ("seq", "path", "image_sha256", "action", "note", "reviewer", "time", "bundle",
           "artifact", "probability", "threshold", "undoes", "id")
#: the columns of a log written before rows had ids (read; given the id column at next append)
COLUMNS_BEFORE_ID = COLUMNS[:-1]


@dataclass(frozen=True)
class Opinion:
    """One reviewer's current decision on a case."""

    reviewer: str
    decision: str
    time: str
    id: str


@dataclass
class CaseReview:
    """The current state of one case after folding its rows (undone rows left out).

    ``opinions``: each reviewer's latest decision, in the order the reviewers first decided;
    ``decision``/``reviewer``/``time`` are the first opinion's (the later ones are second
    opinions, kept beside it).
    """

    path: str
    decision: str = ""  # the first reviewer's current decision, "" when undecided
    reviewer: str = ""
    time: str = ""
    notes: list[str] = field(default_factory=list)
    opinions: list[Opinion] = field(default_factory=list)

    @property
    def second_opinions(self) -> list[Opinion]:
        return self.opinions[1:]

    @property
    def disagreement(self) -> bool:
        """Whether the reviewers' current decisions differ."""
        return len({o.decision for o in self.opinions}) > 1


def now() -> str:
    """The time written into a row (UTC, seconds)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_id() -> str:
    """A row id unique across reviewers, processes and machines."""
    return uuid.uuid4().hex[:16]


def _parse(values: list[str], header: tuple[str, ...], path: Path, line: int) -> ReviewEntry:
    row = dict(zip(header, values))
    try:
        seq = int(row["seq"])
    except (KeyError, ValueError) as exc:
        raise ResultsError(f"{path} line {line} is damaged ({values[:3]}…); move the file away "
                           "to start the review again") from exc
    if row.get("action") not in ACTIONS:
        raise ResultsError(f"{path} line {line} has an unknown action {row.get('action')!r} "
                           f"(expected one of {', '.join(ACTIONS)})")
    names = {f.name for f in fields(ReviewEntry)} - {"seq", "id"}
    return replace(ReviewEntry(**{k: row.get(k, "") for k in names}), seq=seq,
                   id=row.get("id") or str(seq))


def _csv_bytes(lines) -> bytes:
    """CSV lines as UTF-8 bytes (one physical line each)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(lines)
    return text.getvalue().encode("utf-8")


def _read(path: Path, text: str) -> tuple[list[ReviewEntry], bool]:
    """The complete rows of a review.csv's text and whether it has the id column."""
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]  # a line cut by a kill: dropped, not misread
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return [], True
    if tuple(header) not in (COLUMNS, COLUMNS_BEFORE_ID):
        raise ResultsError(f"{path} is not a review file (header {header[:4]}…); move it "
                           "away to start the review again")
    return ([_parse(values, tuple(header), path, n) for n, values in enumerate(reader, 2)
             if values], tuple(header) == COLUMNS)


class ReviewLog:
    """The review.csv of one results folder, shared by its reviewers (see the module docstring).

    ``entries`` is the log as last read; every append (and :meth:`refresh`) reads it again.
    """

    def __init__(self, results_dir: str | os.PathLike):
        self.path = Path(results_dir) / REVIEW
        self.entries: list[ReviewEntry] = []
        self._seen: tuple[int, int] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Read what every reviewer has written so far (cheap when nothing changed)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self.entries, self._seen = [], None
            return
        if self._seen == (info.st_size, info.st_mtime_ns):
            return
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        self.entries = _read(self.path, text)[0]
        self._seen = (info.st_size, info.st_mtime_ns)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[BinaryIO]:
        """The file opened for appending under an exclusive lock, ``entries`` re-read under it
        (a line cut by a kill removed, a pre-id log given its id column)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                handle.seek(0)
                raw = handle.read()
                whole = raw[:raw.rfind(b"\n") + 1]
                self.entries, has_ids = _read(self.path, whole.decode("utf-8", errors="replace"))
                if not has_ids:  # same rows, same order, with the id column
                    handle.truncate(0)
                    handle.write(_csv_bytes([COLUMNS, *(e.as_list() for e in self.entries)]))
                elif len(whole) != len(raw):
                    handle.truncate(len(whole))
                yield handle
            finally:
                handle.flush()
                os.fsync(handle.fileno())
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        self._seen = None

    def _write(self, handle: BinaryIO, entry: ReviewEntry) -> ReviewEntry:
        seq = max((e.seq for e in self.entries), default=0) + 1
        entry = replace(entry, seq=seq, id=new_id(), time=entry.time or now())
        handle.seek(0, os.SEEK_END)
        lines = [entry.as_list()] if handle.tell() else [COLUMNS, entry.as_list()]
        handle.write(_csv_bytes(lines))
        self.entries.append(entry)
        return entry

    def append(self, entry: ReviewEntry) -> ReviewEntry:
        """Write one row (numbered, with its id) after reading what others wrote, under the file
        lock; flushed and fsynced before returning it."""
        if entry.action not in ACTIONS:
            raise ValueError(f"unknown review action {entry.action!r}")
        with self._locked() as handle:
            if entry.action == UNDO:
                if entry.undoes not in {e.id for e in self.entries}:
                    raise ValueError(f"undo names row {entry.undoes}, which is not in {self.path}")
                if entry.undoes in self.undone():
                    raise ValueError(f"row {entry.undoes} of {self.path} is already taken back")
            return self._write(handle, entry)

    def undone(self) -> set[str]:
        """The id of every row taken back by an undo."""
        return {e.undoes for e in self.entries if e.action == UNDO}

    def last_undoable(self, reviewer: str | None = None) -> ReviewEntry | None:
        """The newest decision or note not yet taken back (of ``reviewer``, when given): what
        that reviewer's next undo takes back."""
        undone = self.undone()
        for entry in reversed(self.entries):
            if entry.action != UNDO and entry.id not in undone and \
                    (reviewer is None or entry.reviewer == reviewer):
                return entry
        return None

    def undo(self, reviewer: str) -> ReviewEntry | None:
        """Take back ``reviewer``'s newest decision or note (an undo row naming it, chosen and
        written under the lock: never another reviewer's); None when none is left."""
        with self._locked() as handle:
            target = self.last_undoable(reviewer)
            if target is None:
                return None
            return self._write(handle, ReviewEntry(
                target.path, target.image_sha256, UNDO, reviewer=reviewer, bundle=target.bundle,
                artifact=target.artifact, probability=target.probability,
                threshold=target.threshold, undoes=target.id))

    def cases(self) -> dict[str, CaseReview]:
        """Each reviewed case's current state, from what every reviewer has written so far."""
        self.refresh()
        undone = self.undone()
        state: dict[str, CaseReview] = {}
        for entry in self.entries:
            if entry.action == UNDO or entry.id in undone:
                continue
            case = state.setdefault(entry.path, CaseReview(entry.path))
            if entry.action == NOTE:
                case.notes.append(entry.note)
                continue
            opinion = Opinion(entry.reviewer, entry.action, entry.time, entry.id)
            mine = [i for i, o in enumerate(case.opinions) if o.reviewer == entry.reviewer]
            if mine:  # the same reviewer changed their mind: their opinion, updated in place
                case.opinions[mine[0]] = opinion
            else:  # another reviewer: a second opinion beside the first, never over it
                case.opinions.append(opinion)
        for case in state.values():
            if case.opinions:
                first = case.opinions[0]
                case.decision, case.reviewer, case.time = first.decision, first.reviewer, first.time
        return state
