"""Decode worker threads whose stuck jobs can be abandoned.

A job that runs longer than ``timeout`` seconds (counted from when a worker starts it, the time
it waits for decode memory not counted: :func:`clock_paused`) is given up: its result becomes the
caller's timeout value, a new worker thread takes the stuck one's place so the run goes on at full
width, and the stuck thread ends on its own when (if ever) its decode returns. Threads are daemons,
so a stuck one never keeps the process alive. Cost: one ``threading.Event`` per job and a 50 ms
polling wait on the job at the head of the queue.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_POLL_S = 0.05
_running = threading.local()  # the job a worker thread is running (for clock_paused)


@contextlib.contextmanager
def clock_paused() -> Iterator[None]:
    """Stop the time-out clock of the job running on this thread while the block runs (waiting
    for decode memory is not decoding); it starts again from zero after. No-op off a worker."""
    job: Job | None = getattr(_running, "job", None)
    if job is None:
        yield
        return
    with job._lock:
        job.started = None
    try:
        yield
    finally:
        with job._lock:
            job.started = time.monotonic()


class Job:
    """One submitted call; ``result`` is set when it finishes (or is abandoned)."""

    def __init__(self, fn: Callable[..., Any], args: tuple):
        self.fn, self.args = fn, args
        self.done = threading.Event()
        self.result: Any = None
        self.started: float | None = None
        self.thread: threading.Thread | None = None
        self.cancelled = False
        self.abandoned = False
        self._lock = threading.Lock()

    def _start(self) -> bool:
        with self._lock:
            if self.cancelled:
                return False
            self.started = time.monotonic()
            self.thread = threading.current_thread()
            return True

    def _finish(self, result: Any) -> bool:
        """Store the result; False when the job was abandoned meanwhile (the thread retires)."""
        with self._lock:
            if self.abandoned:
                return False
            self.result = result
            self.done.set()
            return True

    def _abandon(self, result: Any) -> bool:
        with self._lock:
            if self.done.is_set():
                return False
            self.abandoned = True
            self.result = result
            self.done.set()
            return True


class DecodePool:
    """``workers`` daemon threads running submitted jobs in order; see the module docstring."""

    def __init__(self, workers: int, timeout: float, name: str = "decode"):
        self.timeout = timeout
        self.name = name
        self.abandoned = 0
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._live: set[threading.Thread] = set()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        for _ in range(max(1, workers)):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._work, name=f"{self.name}-{next(self._ids)}",
                                  daemon=True)
        with self._lock:
            self._live.add(thread)
        thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                if not job._start():
                    continue
                _running.job = job
                try:
                    result = job.fn(*job.args)
                except BaseException as exc:  # handed to the caller, never lost in a thread
                    result = exc
                finally:
                    _running.job = None
                if not job._finish(result):
                    return  # abandoned: a replacement thread already took this one's place
        finally:
            with self._lock:
                self._live.discard(me)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        job = Job(fn, args)
        self._queue.put(job)
        return job

    def wait(self, job: Job, on_timeout: Callable[[Job], Any]) -> Any:
        """The job's result; ``on_timeout(job)`` when it ran past the time limit (abandoned)."""
        while not job.done.wait(_POLL_S):
            started = job.started
            if started is not None and time.monotonic() - started > self.timeout:
                if job._abandon(on_timeout(job)):
                    self.abandoned += 1
                    with self._lock:
                        self._live.discard(job.thread)
                    self._spawn()
        if isinstance(job.result, BaseException):
            raise job.result
        return job.result

    def shutdown(self, pending: list[Job] = ()) -> None:
        """Cancel ``pending`` jobs not yet started and stop the workers after their current job.

        Stuck (abandoned) threads are not waited for.
        """
        for job in pending:
            with job._lock:
                if job.started is None:
                    job.cancelled = True
        with self._lock:
            live = list(self._live)
        for _ in live:
            self._queue.put(None)
        deadline = time.monotonic() + self.timeout
        for thread in live:
            thread.join(max(0.0, deadline - time.monotonic()))
