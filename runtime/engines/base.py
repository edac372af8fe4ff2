"""The engine interface and registry: ``run(batch) -> probabilities`` for any artifact format.

An engine takes a float32 (N, 1, H, W) batch and returns float32 (N, C) class probabilities;
``run_with_features`` also returns the graph's second output, the model's scope features
(N, D) (None for an artifact built without it), which the scope guard measures.
It records what it really runs with (providers or device, inference precision) and says so
loudly when that differs from what was asked. Engines register by name; the format table
(:mod:`runtime.contract.formats`) names the engine of each format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from runtime.contract.formats import Placement

CudaProbe = Callable[[], "tuple[bool, str]"]
#: the graph output carrying the scope features, pooled conv blocks (converters.export_onnx)
FEATURES_OUTPUT = "features"


class EngineError(RuntimeError):
    """An artifact could not be loaded or run."""


def missing_package(artifact: str, engine: str, install: str) -> EngineError:
    """The plain error for an artifact whose engine package is not installed."""
    return EngineError(f"{artifact} needs {engine}, which is not installed here: {install}, "
                       "or run another artifact of the bundle (--artifact)")


class Engine(Protocol):
    """What every engine offers."""

    name: str
    path: Path
    requested: list[str]  # providers or device asked for
    active: list[str]  # providers or device actually used
    precision: str  # inference precision actually used, as the engine reports it

    @property
    def fell_back(self) -> bool: ...

    @property
    def on_cuda(self) -> bool: ...

    @property
    def threads(self) -> int | str: ...

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...


class EngineKind(Protocol):
    """A registered engine class: opens artifacts and adapts a placement to this device."""

    def __call__(self, path: Path, placement: Placement, threads: int | None) -> Engine: ...

    @staticmethod
    def adapt(placement: Placement, device: str, cuda: CudaProbe
              ) -> tuple[Placement, list[str]]: ...


def predict_proba(engine: Engine, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run a whole (N, 1, H, W) array through ``engine`` in batches."""
    outputs = [engine.run(inputs[start:start + batch_size])
               for start in range(0, len(inputs), batch_size)]
    return np.concatenate(outputs, axis=0) if outputs else np.zeros((0, 0), np.float32)


def predict_proba_and_features(engine: Engine, inputs: np.ndarray, batch_size: int = 64
                               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Like :func:`predict_proba`, with the features output too (None when there is none)."""
    probs, features = [], []
    for start in range(0, len(inputs), batch_size):
        p, f = engine.run_with_features(inputs[start:start + batch_size])
        probs.append(p)
        features.append(f)
    if not probs:
        return np.zeros((0, 0), np.float32), None
    has = all(f is not None for f in features)
    return np.concatenate(probs, axis=0), (np.concatenate(features, axis=0) if has else None)
