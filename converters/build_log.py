"""A build's console and its log file: library chatter goes to the log, the kit's lines stay.

While a bundle is built, libraries report on their own: PyTorch's exporter (``[torch.onnx] ...``
prints, ``torchvision is not installed`` records), NNCF's progress bars, ONNX Runtime's quantizer
and its provider-loading dumps (C++ writing to fd 2 when CUDA libraries are missing), OpenVINO.
While :func:`library_output` is active their standard output, warnings, log records and C-level
stderr go to the build's log file, through the runner's capture
(:func:`runtime.imaging.capture.library_output_to`); the kit's progress lines, its own log
records and its errors stay on the console.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path
from typing import Iterator

from runtime.imaging.capture import library_output_to

#: the build's log file, in the output folder beside the bundles
BUILD_LOG = "build.log"

#: the kit's own loggers: their records stay on the console
KIT_LOGGERS = ("converters", "runtime", "targets", "evaluation")


@contextlib.contextmanager
def library_output(log: Path | None, progress: bool) -> Iterator[None]:
    """Libraries' output -> ``log`` (started afresh) meanwhile, the kit's records to the console.

    Without a log, what libraries print to stdout goes to stderr (nowhere unless ``progress``),
    so stdout keeps only results.
    """
    if log is None:
        with contextlib.redirect_stdout(sys.stderr if progress else io.StringIO()):
            yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("", encoding="utf-8")  # one log per build
    # library loggers need no list: their handlers write to the redirected stdout/stderr
    with library_output_to(log, loggers=(), stdout=True), _kit_records_on_console():
        yield


@contextlib.contextmanager
def _kit_records_on_console() -> Iterator[None]:
    """Give the kit's loggers a console handler of their own: the root logger's handler writes
    to file descriptor 2, which now goes to the log."""
    console = logging.StreamHandler(sys.stderr)  # the console while library_output_to is active
    console.setFormatter(next((h.formatter for h in logging.getLogger().handlers if h.formatter),
                              None))
    kit = [logging.getLogger(name) for name in KIT_LOGGERS]
    saved = [lg.propagate for lg in kit]
    for lg in kit:
        lg.addHandler(console)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, propagate in zip(kit, saved):
            lg.removeHandler(console)
            lg.propagate = propagate
