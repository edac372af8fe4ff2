"""How every number is measured, the same way for every artifact, the PyTorch baseline and the build.

These functions take a ``run(batch)`` callable (and, for throughput, a ``drain()`` that waits for
batches still in flight on an asynchronous engine), so the ONNX Runtime and OpenVINO engines and
the PyTorch model go through exactly the same loops. :mod:`benchmarks.runners` drives each engine
the way it is fastest; :mod:`benchmarks.worker` calls both in a fresh process per artifact, and
the build (``converters.validate``) with the short :meth:`Settings.build` budget. This module
imports neither torch nor the converters (tests/benchmarks/test_import_rules.py).

- latency: batch 1, ``warmup`` untimed runs, then ``repeats`` timed runs; p50/p95/p99 (linear
  interpolation), mean, min, max in milliseconds;
- throughput: per batch size, ``warmup // 4`` untimed batches, then whole batches until at least
  ``min_seconds`` have passed and at least ``min_runs`` batches ran, then ``drain()`` (the clock
  stops when the last batch has finished); images/s = images / seconds;
- quality: the test split through the runtime's preprocessing, the engine's probability of each
  finding, :func:`evaluation.metrics.binary_metrics` of that finding against the rest at the
  bundle's threshold for it (:func:`finding_quality`: the first finding's figures at the top, as
  for a model with one finding; with several, every finding's under ``findings``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.metrics import binary_metrics

BATCH_SIZES = (1, 8, 32, 64)
QUALITY_BATCH = 64  # the batch the converters and the tests use for metrics (same numbers)

Run = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class Settings:
    """How long to measure. ``quick`` is for CI: the harness runs, the numbers are rough."""

    repeats: int = 300  # timed batch-1 runs for the latency percentiles
    warmup: int = 10  # untimed runs before each measurement
    min_seconds: float = 1.0  # per throughput point
    min_runs: int = 3  # per throughput point
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    threads: int | None = None  # engine threads (None: each engine's default)
    probe_seconds: float = 0.25  # per candidate and batch when a runner picks thread settings

    @classmethod
    def quick(cls, repeats: int | None = None, threads: int | None = None) -> "Settings":
        return cls(repeats=repeats or 30, warmup=3, min_seconds=0.1, min_runs=2,
                   threads=threads, probe_seconds=0.05)

    @classmethod
    def build(cls, threads: int | None = None) -> "Settings":
        """The build's small budget per artifact: ~0.5 s at batch 64, 100 batch-1 runs."""
        return cls(repeats=100, warmup=8, min_seconds=0.5, min_runs=3, batch_sizes=(64,),
                   threads=threads, probe_seconds=0.08)

    @classmethod
    def full(cls, repeats: int | None = None, threads: int | None = None) -> "Settings":
        return cls(repeats=repeats or 300, threads=threads)

    def as_dict(self) -> dict:
        return {"repeats": self.repeats, "warmup": self.warmup, "min_seconds": self.min_seconds,
                "min_runs": self.min_runs, "batch_sizes": list(self.batch_sizes),
                "threads": self.threads, "probe_seconds": self.probe_seconds}

    @classmethod
    def from_dict(cls, data: dict) -> "Settings":
        return cls(repeats=int(data["repeats"]), warmup=int(data["warmup"]),
                   min_seconds=float(data["min_seconds"]), min_runs=int(data["min_runs"]),
                   batch_sizes=tuple(int(b) for b in data["batch_sizes"]),
                   threads=data.get("threads"),
                   probe_seconds=float(data.get("probe_seconds", cls.probe_seconds)))


def percentiles(samples_ms: list[float] | np.ndarray) -> dict:
    """p50/p95/p99/mean/min/max of timings in ms (p50 <= p95 <= p99 by construction)."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no timings to summarise")
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(values.mean()),
            "min": float(values.min()), "max": float(values.max()), "runs": int(values.size)}


def tile(inputs: np.ndarray, batch: int, offset: int = 0) -> np.ndarray:
    """``batch`` real inputs starting at ``offset`` (wrapping around), contiguous float32."""
    index = (np.arange(batch) + offset) % len(inputs)
    return np.ascontiguousarray(inputs[index], dtype=np.float32)


def latency(run: Run, inputs: np.ndarray, settings: Settings) -> dict:
    """Batch-1 latency percentiles over ``settings.repeats`` timed runs after the warm-up.

    Each timed run uses the next real image (a fixed set of images, cycled), so caches see the
    same kind of work as in triage.
    """
    singles = [tile(inputs, 1, i) for i in range(min(len(inputs), 64))]
    for i in range(settings.warmup):
        run(singles[i % len(singles)])
    times: list[float] = []
    clock = time.perf_counter
    for i in range(settings.repeats):
        one = singles[i % len(singles)]
        start = clock()
        run(one)
        times.append((clock() - start) * 1e3)
    return {"batch": 1, "warmup": settings.warmup, **percentiles(times)}


def _no_drain() -> None:
    return None


def throughput(run: Run, inputs: np.ndarray, batch: int, settings: Settings,
               drain: Callable[[], None] = _no_drain) -> dict:
    """Images per second at ``batch``: whole batches for >= min_seconds and >= min_runs.

    ``run`` may return before its batch is done (an async queue); ``drain()`` then waits for all
    of them, after the warm-up and before the clock stops.
    """
    data = tile(inputs, batch)
    for _ in range(max(1, settings.warmup // 4)):
        run(data)
    drain()
    runs = 0
    clock = time.perf_counter
    start = clock()
    while True:
        run(data)
        runs += 1
        if runs >= settings.min_runs and clock() - start >= settings.min_seconds:
            break
    drain()
    elapsed = clock() - start
    return {"batch": batch, "images_per_second": batch * runs / elapsed, "batches": runs,
            "seconds": elapsed}


def batched_probabilities(predict: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray,
                          batch: int = QUALITY_BATCH) -> np.ndarray:
    """(N, classes) probabilities, ``predict`` called on batches of ``batch``."""
    out = [np.asarray(predict(inputs[s:s + batch]), dtype=np.float64)
           for s in range(0, len(inputs), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0))


def quality(labels: np.ndarray, probabilities: np.ndarray, threshold: float, split: str = "test"
            ) -> dict:
    """:func:`evaluation.metrics.binary_metrics` as a dict, with the split named."""
    return {"split": split, **binary_metrics(labels, probabilities, threshold).as_dict()}


def finding_quality(positives: np.ndarray, probabilities: np.ndarray,
                    thresholds: dict[str, float], columns: Sequence[int], split: str = "test"
                    ) -> dict:
    """Each finding against the rest at its threshold: ``positives`` (N, findings) bool, which
    images carry each finding; ``probabilities`` (N, classes); ``thresholds`` ``{finding:
    threshold}`` in the model's finding order, ``columns`` each finding's output column.

    The first finding's :func:`quality`, as for a model with one finding; a model with several
    also gets ``findings``: ``{finding: its figures}`` (every finding's, the first's included)."""
    names = list(thresholds)
    per = {name: quality(positives[:, k], probabilities[:, columns[k]], thresholds[name], split)
           for k, name in enumerate(names)}
    out = dict(per[names[0]])
    if len(names) > 1:
        out["findings"] = {name: {k: v for k, v in q.items() if k != "split"}
                           for name, q in per.items()}
    return out


QUALITY_KEYS = ("auc", "sensitivity", "specificity", "accuracy")


def quality_delta(candidate: dict | None, reference: dict | None) -> dict | None:
    """candidate - reference for AUC, sensitivity, specificity, accuracy (None if either is);
    with ``findings`` in both, each finding's delta under ``findings``."""
    if not candidate or not reference:
        return None
    out: dict = {key: float(candidate[key]) - float(reference[key]) for key in QUALITY_KEYS
                 if candidate.get(key) is not None and reference.get(key) is not None}
    mine, theirs = candidate.get("findings"), reference.get("findings")
    if mine and theirs:
        out["findings"] = {name: quality_delta(q, theirs[name]) for name, q in mine.items()
                           if name in theirs}
    return out
