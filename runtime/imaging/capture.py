"""Keep library chatter off the console during a triage run.

Decoders report through three channels: Python warnings (pydicom), the logging module (pydicom,
tifffile) and C code printing to file descriptor 2 (libpng, libtiff, libjpeg). While
:func:`library_output_to` is active all three go to a log file in the results folder, each line
tagged with the file being decoded by that thread; the console (``sys.stderr``) keeps working for
the progress bar and the runner's own messages. The build (:mod:`converters.build_log`) uses the
same capture for its libraries' loggers and their standard output as well.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Iterator, Sequence

_current = threading.local()
LIBRARY_LOGGERS = ("pydicom", "tifffile", "PIL", "imagecodecs")


def current_file() -> str:
    return getattr(_current, "file", "")


@contextlib.contextmanager
def decoding_file(name: str) -> Iterator[list[str]]:
    """Tag this thread's library messages with ``name``; yields the messages collected."""
    _current.file, _current.messages = name, []
    try:
        yield _current.messages
    finally:
        _current.file, _current.messages = "", None


class _LogHandler(logging.Handler):
    def __init__(self, stream: io.TextIOBase, lock: threading.Lock):
        super().__init__(logging.DEBUG)
        self.stream, self.write_lock = stream, lock  # not .lock: logging.Handler's own lock

    def emit(self, record: logging.LogRecord) -> None:
        _note(self.stream, self.write_lock, f"{record.name} {record.levelname.lower()}: "
                                      f"{record.getMessage()}")


def _note(stream: io.TextIOBase, lock: threading.Lock, message: str) -> None:
    name = current_file()
    messages = getattr(_current, "messages", None)
    if messages is not None:
        messages.append(" ".join(message.split()))
    with lock:
        stream.write(f"{name or '-'}: {message}\n")
        stream.flush()


@contextlib.contextmanager
def _stdout_to(log: io.TextIOBase) -> Iterator[None]:
    """Python's and C's standard output -> ``log`` meanwhile (for callers that print after)."""
    saved, saved_fd = sys.stdout, None
    try:
        sys.stdout.flush()
        stdout_fd = sys.__stdout__.fileno() if sys.__stdout__ else 1
        saved_fd = os.dup(stdout_fd)
        os.dup2(log.fileno(), stdout_fd)
    except (OSError, ValueError, AttributeError):  # no real fd 1 (e.g. captured in tests)
        pass
    sys.stdout = log
    try:
        yield
    finally:
        sys.stdout = saved
        if saved_fd is not None:
            os.dup2(saved_fd, sys.__stdout__.fileno() if sys.__stdout__ else 1)
            os.close(saved_fd)


@contextlib.contextmanager
def library_output_to(log_path: Path, loggers: Sequence[str] = LIBRARY_LOGGERS,
                      stdout: bool = False) -> Iterator[None]:
    """Send warnings, the records of ``loggers`` and C-level stderr to ``log_path`` meanwhile;
    with ``stdout``, also everything printed to standard output."""
    lock = threading.Lock()
    log = open(log_path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
    handler = _LogHandler(log, lock)
    libraries = [logging.getLogger(name) for name in loggers]
    saved_loggers = [(lg, lg.propagate, lg.level) for lg in libraries]
    for lg in libraries:
        lg.addHandler(handler)
        lg.propagate = False
        if lg.level == logging.NOTSET or lg.level > logging.WARNING:
            lg.setLevel(logging.WARNING)
    saved_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        _note(log, lock, f"{category.__name__}: {message}")

    filters = warnings.catch_warnings()
    filters.__enter__()
    warnings.simplefilter("always")
    warnings.showwarning = show
    saved_stderr, console_fd, native, wrapped = sys.stderr, None, False, False
    try:
        sys.stderr.flush()
        stderr_fd = sys.__stderr__.fileno() if sys.__stderr__ else 2
        console_fd = os.dup(stderr_fd)
        os.dup2(log.fileno(), stderr_fd)
        native = True
        if saved_stderr is sys.__stderr__:
            sys.stderr = io.TextIOWrapper(os.fdopen(console_fd, "wb", closefd=False),
                                          encoding=saved_stderr.encoding or "utf-8",
                                          errors="backslashreplace", line_buffering=True)
            wrapped = True
    except (OSError, ValueError, AttributeError):  # no real fd 2 (e.g. captured in tests)
        pass
    try:
        with _stdout_to(log) if stdout else contextlib.nullcontext():
            yield
    finally:
        warnings.showwarning = saved_show
        filters.__exit__(None, None, None)
        for lg, propagate, level in saved_loggers:
            lg.removeHandler(handler)
            lg.propagate, lg.level = propagate, level
        if native and console_fd is not None:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(console_fd, sys.__stderr__.fileno() if sys.__stderr__ else 2)
            sys.stderr = saved_stderr
            if not wrapped:  # else console_fd stays open: a progress bar may still hold it
                os.close(console_fd)
        log.close()
