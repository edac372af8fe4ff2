"""One upload -> the verdict a triage row gives for the same file.

Nothing here decides anything new: the upload is spooled to a private temporary file (removed as
soon as it is decoded) and goes through the folder runner's own :func:`runtime.running.triage.load_one`
(sniff, budgeted decode, scope rules, crop + resize, the same reduced JPEG decode), in decode
worker threads that abandon a stuck decode (:class:`runtime.imaging.pool.DecodePool`); batches are
normalised with :func:`runtime.preprocess.cpu.normalize` and decided by
:func:`runtime.judging.verdict.score_batch`, the one flag rule. So a probability from the service equals
the ``results.csv`` row of ``python -m runtime triage`` for the same file and bundle.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.bundle.load import Bundle
from runtime.imaging.decode import DICOM_SUFFIXES
from runtime.imaging.limits import DECODE_TIMEOUT_S, DEFAULT_MEMORY_BUDGET, MemoryBudget
from runtime.imaging.pool import DecodePool
from runtime.judging.verdict import Verdict, score_batch
from runtime.preprocess.cpu import normalize
from runtime.running.triage import (
    DEFAULT_OVERSAMPLE,
    Entry,
    Loaded,
    conclude_scopes,
    load_one,
    reduce_to_for,
    timed_out,
)

#: how an upload is named in its (never logged) decode context
UPLOAD_NAME = "upload"
DICOM_MEDIA_TYPES = frozenset({"application/dicom", "application/dicom+octet-stream"})


def spool_suffix(filename: str | None, media_type: str | None) -> str:
    """The temp file's suffix: only a DICOM hint matters (DICOM without its preamble is read by
    suffix); every other format is recognised from its bytes."""
    suffix = Path(filename or "").suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return suffix
    if (media_type or "").split(";")[0].strip().lower() in DICOM_MEDIA_TYPES:
        return ".dcm"
    return ""


class Scorer:
    """Decodes uploads in worker threads and scores decoded batches with the bundle."""

    def __init__(self, bundle: Bundle, workers: int = 2, decode_timeout: float = DECODE_TIMEOUT_S,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 oversample: float | None = DEFAULT_OVERSAMPLE):
        self.bundle = bundle
        self.spec = bundle.preprocessing
        self.reduce_to = reduce_to_for(self.spec, oversample)
        self.decode_timeout = decode_timeout
        self.budget = MemoryBudget(memory_budget)
        self.pool = DecodePool(workers, decode_timeout, name="serve-decode")
        # threads that only wait for a decode job (cheap; the decoding happens in the pool)
        self._waiters = ThreadPoolExecutor(max_workers=64, thread_name_prefix="serve-wait")
        self.spool = Path(tempfile.mkdtemp(prefix="cxr-serve-"))  # mode 0700: this user only

    def decode(self, data: bytes, suffix: str = "") -> Loaded:
        """Decode + judge + crop + resize one upload (blocking); never raises for a bad file."""
        fd, name = tempfile.mkstemp(suffix=suffix, dir=self.spool)
        try:
            with os.fdopen(fd, "wb") as spooled:
                spooled.write(data)
            return load_one(Entry(Path(name), UPLOAD_NAME), self.spec, self.reduce_to, False,
                            self.budget, self.bundle.population,
                            self.bundle.population_check)
        finally:
            try:
                os.unlink(name)
            except OSError:
                pass

    async def decode_async(self, data: bytes, suffix: str = "") -> Loaded:
        """:meth:`decode` in a decode worker; a decode past the time limit is an error."""
        job = self.pool.submit(self.decode, data, suffix)
        entry = Entry(Path(UPLOAD_NAME), UPLOAD_NAME)
        return await asyncio.get_running_loop().run_in_executor(
            self._waiters, self.pool.wait, job, lambda _: timed_out(entry, self.decode_timeout))

    def score(self, items: Sequence[Loaded]) -> list[Verdict]:
        """One engine call for decoded uploads: the population check on their thumbnails (one
        call), normalise, run the model, apply the flag rule."""
        conclude_scopes(items, self.bundle.population_check)
        inputs = normalize(np.stack([item.pixels for item in items]), self.spec)
        return score_batch(self.bundle, inputs, [item.scope for item in items])

    def close(self) -> None:
        self.pool.shutdown()
        self._waiters.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.spool, ignore_errors=True)
