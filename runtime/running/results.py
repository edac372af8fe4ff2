"""Triage results: ``results.csv`` written row by row, and ``summary.json`` at the end.

Each row is appended and flushed as soon as it is produced (and fsynced after every batch), so a
crash or a kill loses nothing already done. Every row is one physical line: paths and messages
are escaped so that they hold no line breaks. A rerun into the same folder resumes: rows already
present are kept and their files skipped; a last line cut short by a kill is dropped (that file is
simply done again), so no row is ever lost or duplicated.

Each row records the file it read: ``file_bytes`` and ``file_mtime_ns`` (from a stat just before
decoding) and ``sha256`` (of the bytes decoded; empty where the file could not be read). A resume
scores a file again when its size or modification time differs from its latest row (or, with
``--retry-errors``, when that row is an error): the new row is appended, marked in ``reread``
(``changed`` / ``retry``), and is the file's current row; :func:`read_rows` gives the current row
of each file, ``history=True`` every row. A folder written before these columns existed is
resumed: its header is given the new columns once (same rows; their files count as unchanged).

Every scored row says whether the image is in the model's scope (``scope`` = ``in`` / ``out``,
``scope_reason`` in plain words; :mod:`runtime.judging.scope`); an out-of-scope row's prediction is
``OUT-OF-SCOPE`` and it counts as flagged (read by a person, never cleared by the model). Error
rows leave both empty. A folder written before these columns existed is refused (rerun into
another ``--out`` folder), never mixed.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

RESULTS = "results.csv"
SUMMARY = "summary.json"
RUN_INFO = "run.json"
#: the columns before the scope columns were added (such a results folder cannot be resumed)
COLUMNS_BEFORE_SCOPE = ("path", "status", "prediction", "probability", "flagged", "latency_ms",
                        "error", "width", "height", "decode")
#: the columns before the file facts were added (such a results file is upgraded on resume)
COLUMNS_BEFORE_FILE_FACTS = (*COLUMNS_BEFORE_SCOPE, "scope", "scope_reason")
COLUMNS = (*COLUMNS_BEFORE_FILE_FACTS, "file_bytes", "file_mtime_ns", "sha256", "reread")
#: after :data:`COLUMNS`, one probability column per label of the model (``p_NORMAL``, ...)
LABEL_PREFIX = "p_"


def label_columns(labels: Sequence[str]) -> tuple[str, ...]:
    """The probability columns of a model's labels, in its class order."""
    return tuple(LABEL_PREFIX + label for label in labels)


def row_probabilities(row: dict[str, str]) -> dict[str, float]:
    """Every label's probability of a row read from results.csv (its ``p_<label>`` cells, in
    column order); empty for a row written before those columns existed, or an error row."""
    out = {}
    for column, value in row.items():
        if column.startswith(LABEL_PREFIX) and column not in COLUMNS and value:
            try:
                out[column[len(LABEL_PREFIX):]] = float(value)
            except ValueError:
                return {}
    return out


def largest_difference(a: dict[str, str], b: dict[str, str]) -> float:
    """The largest |difference| between two scored rows (read from results.csv) over every
    output column: the row's probability and each label's both rows hold (``p_<label>``)."""
    pa, pb = row_probabilities(a), row_probabilities(b)
    return max([abs(float(a["probability"]) - float(b["probability"])),
                *(abs(pa[label] - pb[label]) for label in pa.keys() & pb.keys())])


def run_thresholds(run: dict) -> dict[str, float]:
    """Every finding's threshold a run recorded in run.json (``thresholds``, in the model's finding
    order): written only for a model with several findings, so empty for a model with one (its
    ``threshold`` is the one) and for runs made before several findings existed."""
    recorded = run.get("thresholds")
    if not isinstance(recorded, dict):
        return {}
    try:
        return {str(label): float(value) for label, value in recorded.items()}
    except (TypeError, ValueError):
        return {}


def named_finding(row: dict[str, str], thresholds: dict[str, float]) -> str:
    """The finding a row read from results.csv names, as :func:`runtime.judging.verdict.decide`
    chose it: its prediction when that is a finding, else the likeliest finding that reached its
    threshold, else the likeliest finding; "" when the row lacks a finding's probability."""
    if row.get("prediction") in thresholds:
        return str(row["prediction"])
    p = row_probabilities(row)
    if not thresholds or any(label not in p for label in thresholds):
        return ""
    reached = [label for label, t in thresholds.items() if p[label] >= t]
    return max(reached or list(thresholds), key=lambda label: p[label])


#: ``reread`` values: the file changed since its latest row / its latest row was an error
REREAD_CHANGED, REREAD_RETRY = "changed", "retry"


class ResultsError(RuntimeError):
    """The results folder cannot be used (unreadable, foreign CSV, another model's results)."""


def display_path(relative: str | bytes | os.PathLike) -> str:
    """A file's path as written in the CSV: UTF-8, undecodable bytes as \\xNN, no line breaks."""
    raw = os.fsencode(relative)
    text = raw.decode("utf-8", errors="backslashreplace")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


#: longest message written to a cell (a message quoting a damaged header must stay readable)
MAX_MESSAGE = 1000


def one_line(message: str) -> str:
    """A message fit for one CSV cell on one line (at most MAX_MESSAGE characters)."""
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


@dataclass
class Row:
    """One result: an image that was scored, or a file that could not be."""

    path: str
    status: str  # "ok" | "error"
    prediction: str = ""
    probability: float | None = None
    flagged: bool | None = None
    latency_ms: float | None = None
    error: str = ""
    width: int | None = None
    height: int | None = None
    decode: str = ""
    scope: str = ""  # "in" | "out" for scored rows, "" for error rows
    scope_reason: str = ""
    file_bytes: int | None = None  # the file's size and modification time when it was read
    file_mtime_ns: int | None = None
    sha256: str = ""  # of the bytes decoded ("" where the file could not be read)
    reread: str = ""  # REREAD_CHANGED / REREAD_RETRY for a file scored again, else ""
    #: every label's probability by name (empty for error rows)
    probabilities: dict[str, float] = field(default_factory=dict)

    def as_list(self, labels: Sequence[str] = ()) -> list[str]:
        """The row's cells: :data:`COLUMNS`, then one per label of ``labels``."""
        return [*self._cells(), *("" if label not in self.probabilities
                                  else f"{self.probabilities[label]:.6f}" for label in labels)]

    def as_dict(self, labels: Sequence[str]) -> dict[str, str]:
        """The row as :func:`read_rows` gives it back from a file with ``labels``' columns."""
        return dict(zip((*COLUMNS, *label_columns(labels)), self.as_list(labels)))

    def _cells(self) -> list[str]:
        return [self.path, self.status, self.prediction,
                "" if self.probability is None else f"{self.probability:.6f}",
                "" if self.flagged is None else str(int(self.flagged)),
                "" if self.latency_ms is None else f"{self.latency_ms:.2f}",
                one_line(self.error), "" if self.width is None else str(self.width),
                "" if self.height is None else str(self.height), self.decode, self.scope,
                one_line(self.scope_reason),
                "" if self.file_bytes is None else str(self.file_bytes),
                "" if self.file_mtime_ns is None else str(self.file_mtime_ns), self.sha256,
                self.reread]


def repair_tail(path: Path) -> None:
    """Cut a last line that a kill left without its newline."""
    with open(path, "rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        # find the last newline, reading backwards in blocks
        position, keep = size, 0
        while position > 0:
            start = max(0, position - 65536)
            handle.seek(start)
            block = handle.read(position - start)
            index = block.rfind(b"\n")
            if index >= 0:
                keep = start + index + 1
                break
            position = start
        handle.truncate(keep)


def _header_and_text(path: Path) -> tuple[tuple[str, ...] | None, str]:
    """A results.csv's header and its text up to the last complete line (no file: None, "")."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None, ""
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    header = next(csv.reader(io.StringIO(text)), None)
    return (None if header is None else tuple(header)), text


def _check_header(path: Path, header: tuple[str, ...]) -> None:
    if header == COLUMNS_BEFORE_SCOPE:
        raise ResultsError(f"{path} was written by an older version of the runner, without the "
                           "scope and scope_reason columns; it cannot be resumed: choose another "
                           "--out folder")
    if header[:len(COLUMNS_BEFORE_FILE_FACTS)] != COLUMNS_BEFORE_FILE_FACTS:
        raise ResultsError(f"{path} is not a triage results file (its header is {list(header[:4])}"
                           "…); choose another --out folder")


def current(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The current row of each file (its latest), in the order the current rows were written."""
    latest: dict[str, dict[str, str]] = {}
    for row in rows:
        latest.pop(row["path"], None)
        latest[row["path"]] = row
    return list(latest.values())


def read_rows(path: str | Path, history: bool = False) -> list[dict[str, str]]:
    """The current row of each file in a results.csv (``history``: every complete row, a file
    read again having several); header checked, a cut-off last line ignored, every column of
    :data:`COLUMNS` and of the header present (empty in rows written before it existed)."""
    path = Path(path)
    header, text = _header_and_text(path)
    if header is None:
        return []
    _check_header(path, header)
    reader = csv.reader(io.StringIO(text))
    next(reader)
    blank = dict.fromkeys((*COLUMNS, *header), "")
    rows = [{**blank, **dict(zip(header, values))} for values in reader if values]
    return rows if history else current(rows)


def upgrade_header(path: Path, columns: Sequence[str] = COLUMNS) -> None:
    """Give a results.csv written before some of ``columns`` existed (the file facts, the label
    probabilities) the header ``columns`` (same rows, written to a temporary file and renamed over
    it: a kill leaves one or the other). A file with other label columns is refused."""
    header, text = _header_and_text(path)
    columns = tuple(columns)
    if header is None or header == columns:
        return
    _check_header(path, header)
    labels = header[len(COLUMNS):]
    if labels and labels != columns[len(COLUMNS):]:
        raise ResultsError(f"{path} holds the probabilities of other labels "
                           f"({', '.join(labels)}): it was written with another model; choose "
                           "another --out folder")
    lines = text.splitlines(keepends=True)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(columns)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())
        handle.writelines(lines[1:])
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ResultsWriter:
    """Appends rows to ``out/results.csv``; knows each file's current row.

    ``rows``: the current row of each file already in the file; ``done``: their paths. A row for
    a path already there is written only when it is a re-read (``Row.reread``), and at most once
    per writer (a file is never written twice by one run).
    """

    def __init__(self, out: str | Path, labels: Sequence[str] = ()):
        self.out = Path(out)
        self.path = self.out / RESULTS
        self.labels = tuple(labels)  # the model's labels: one probability column each
        self.columns = (*COLUMNS, *label_columns(self.labels))
        self.out.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            repair_tail(self.path)
            upgrade_header(self.path, self.columns)
        self.rows: dict[str, dict[str, str]] = {row["path"]: row for row in read_rows(self.path)}
        self.done: set[str] = set(self.rows)
        self.resumed = len(self.done)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._handle = open(self.path, "a", encoding="utf-8", newline="")
        self._writer = csv.writer(self._handle, lineterminator="\n")
        if fresh:
            self._writer.writerow(self.columns)
            self._handle.flush()
        self.written = 0
        self._this_run: set[str] = set()

    def write(self, row: Row) -> bool:
        """Append one row and flush it to the OS (it survives a kill of this process); False
        when it was not written (its file already has its row)."""
        if row.path in self._this_run or (row.path in self.done and not row.reread):
            return False
        self._writer.writerow(row.as_list(self.labels))
        self._handle.flush()
        self.done.add(row.path)
        self._this_run.add(row.path)
        self.written += 1
        return True

    def sync(self) -> None:
        """Flush to disk (survives a power cut too); called after each batch."""
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self.sync()
            self._handle.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def summarize_rows(rows: Iterable[dict[str, str]]) -> dict:
    """Counts over the current rows of a results file (``flagged`` includes the out-of-scope
    rows)."""
    total = ok = errors = flagged = in_scope = out_of_scope = 0
    by_prediction: dict[str, int] = {}
    for row in rows:
        total += 1
        if row.get("status") == "ok":
            ok += 1
            flagged += row.get("flagged") == "1"
            in_scope += row.get("scope") == "in"
            out_of_scope += row.get("scope") == "out"
            by_prediction[row.get("prediction", "")] = by_prediction.get(row.get("prediction", ""), 0) + 1
        else:
            errors += 1
    return {"total": total, "ok": ok, "errors": errors, "flagged": flagged,
            "in_scope": in_scope, "out_of_scope": out_of_scope, "by_prediction": by_prediction}


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
