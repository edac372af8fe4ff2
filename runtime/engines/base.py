"""The engine interface and registry: ``run(batch) -> probabilities`` for any artifact format.

An engine takes a float32 (N, 1, H, W) batch and returns float32 (N, C) class probabilities;
``run_with_features`` also returns the graph's second output, the model's scope features
(N, D) (None for an artifact built without it), which the scope guard measures.
It records what it really runs with (providers or device, inference precision) and says so
loudly when that differs from what was asked. Engines register by name; the format table
(:mod:`runtime.formats`) names the engine of each format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from runtime.formats import Placement

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


ENGINES: dict[str, EngineKind] = {}


def register_engine(name: str):
    """Class decorator: make an engine available under ``name`` (as format rows name it)."""
    def add(cls):
        ENGINES[name] = cls
        cls.name = name
        return cls
    return add


def engine_kind(name: str) -> EngineKind:
    _load_builtin()
    try:
        return ENGINES[name]
    except KeyError:
        raise EngineError(f"unknown engine {name!r}; known engines: {', '.join(ENGINES)}") from None


def _load_builtin() -> None:
    # the built-in engines register on import; they import their libraries lazily
    from runtime.engines import onnxruntime_engine, openvino_engine  # noqa: F401


def create_engine(path: str | Path, engine: str, placement: Placement | None = None, *,
                  providers: tuple[str, ...] | list[str] = (), device: str = "CPU",
                  precision_hint: str | None = "f32",
                  provider_options: dict[str, dict] | None = None,
                  threads: int | None = None) -> Engine:
    """Open ``path`` with the named engine and ``placement`` (or the keyword parts of one)."""
    if placement is None:
        placement = Placement(providers=tuple(providers), provider_options=provider_options or {},
                              device=device, precision_hint=precision_hint)
    kind = engine_kind(engine)
    if not Path(path).is_file():
        raise EngineError(f"artifact not found: {path}")
    return kind(Path(path), placement, threads)


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
