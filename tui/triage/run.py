"""The run, in a worker thread: load the bundle, call :func:`runtime.running.triage.triage`, report
by messages posted to the screen.

Rows come from the run itself (its ``on_row``), batched to at most one message every
:data:`ROWS_EVERY_S` (:class:`RowFeed`); the rows an earlier run left in the same results folder (a resumed run) are
read once, when the run starts. Cancel is an event: the progress callback then raises
KeyboardInterrupt, which the runtime turns into a clean stop (rows so far kept, summary.json marked
interrupted).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from textual.message import Message

from runtime.running.results import RESULTS, SUMMARY, ResultsError, Row, read_rows

ROWS_EVERY_S = 0.5  # at most one batch of new rows a half-second is posted to the screen

Post = Callable[[Message], object]


@dataclass
class TriageStarted(Message):
    """The bundle is loaded and the folder walked: ``total`` files to score now; ``earlier``: the
    rows already in the results folder (a resumed run)."""

    total: int
    described: dict
    earlier: list[dict] = field(default_factory=list)


@dataclass
class TriageRows(Message):
    """Rows the run has just written, in results.csv's order."""

    rows: list[dict]


@dataclass
class TriageProgress(Message):
    done: int
    failed: int
    rate: float


@dataclass
class TriageFinished(Message):
    """The run ended: done, cancelled (``interrupted``) or failed (``error``)."""

    out: Path
    summary: dict = field(default_factory=dict)
    interrupted: bool = False
    error: str | None = None


@dataclass(frozen=True)
class RunRequest:
    """What to run: the folder of X-rays, the bundle and artifact, where the results go."""

    folder: Path
    bundle: Path
    artifact: str
    out: Path
    batch: int
    workers: int




class RowFeed:
    """The run's ``on_row``: collects rows on the triage thread and posts them as
    :class:`TriageRows` at most once every :data:`ROWS_EVERY_S`; a timer posts rows that would
    otherwise wait for the next one (a slow batch), :meth:`flush` posts the rest at the end."""

    def __init__(self, post: Post, labels: Sequence[str]) -> None:
        self.post = post
        self.labels = tuple(labels)  # the model's: one probability column each
        self.pending: list[dict] = []
        self.last = 0.0
        self.timer: threading.Timer | None = None
        self.lock = threading.Lock()  # the timer posts from its own thread

    def __call__(self, row: Row) -> None:
        with self.lock:
            self.pending.append(row.as_dict(self.labels))  # as read_rows reads it back
            if self.timer is None:
                wait = max(0.0, self.last + ROWS_EVERY_S - time.perf_counter())
                self.timer = threading.Timer(wait, self.flush)
                self.timer.daemon = True
                self.timer.start()

    def flush(self) -> None:
        with self.lock:  # posted under the lock: no batch can follow the last flush's message
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.pending:
                self.post(TriageRows(self.pending))
                self.pending = []
            self.last = time.perf_counter()


def run_triage(request: RunRequest, post: Post, cancel: threading.Event) -> None:
    """Run ``request`` on this (worker) thread; every outcome ends with one TriageFinished."""
    from runtime.bundle.load import load_bundle
    from runtime.bundle.selfcheck import SelfCheckError
    from runtime.errors import BundleError
    from runtime.running.lock import FolderBusy
    from runtime.running.triage import triage

    out = request.out
    try:
        bundle = load_bundle(request.bundle, request.artifact)
    except BundleError as exc:
        post(TriageFinished(out, error=f"The model cannot be used: {exc}"))
        return
    except Exception as exc:  # an engine that fails to open: say so, keep the app alive
        post(TriageFinished(out, error=f"The model failed to load: {type(exc).__name__}: {exc}"))
        return
    described = bundle.describe()
    feed = RowFeed(post, bundle.classes)
    start = time.perf_counter()

    def on_total(total: int) -> None:
        nonlocal start
        start = time.perf_counter()  # results.csv is open and nothing new is written yet
        post(TriageStarted(total, described, read_rows(out / RESULTS)))

    def progress(done: int, failed: int) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt  # the runtime stops cleanly and keeps what is done
        elapsed = time.perf_counter() - start
        post(TriageProgress(done, failed, done / elapsed if elapsed > 0 else 0.0))

    def finish(**outcome) -> None:
        feed.flush()  # every row written reaches the table before the run is said to be over
        post(TriageFinished(out, **outcome))

    interrupted = False
    try:
        triage(request.folder, bundle, out, batch=request.batch, workers=request.workers,
               progress=progress, on_total=on_total, on_row=feed)
    except KeyboardInterrupt:
        interrupted = True
    except FolderBusy as exc:
        who = exc.holder.words() if exc.holder else "another process"
        finish(error=f"This results folder is in use by {who}. One run writes a results folder "
                     "at a time: wait for it to finish, or choose another results folder.")
        return
    except (ResultsError, SelfCheckError, FileNotFoundError, OSError) as exc:
        finish(error=str(exc))
        return
    except Exception as exc:
        finish(error=f"Triage failed: {type(exc).__name__}: {exc}")
        return
    try:
        summary = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        finish(error=f"Results were written but cannot be read back: {exc}")
        return
    finish(summary=summary, interrupted=interrupted)
