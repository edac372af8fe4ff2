"""The engine registry: engines by the name that format rows give them.

The built-in engines are named here and imported on first use, so ``import runtime`` loads neither
ONNX Runtime nor OpenVINO; another engine joins with :func:`register_engine`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from runtime.contract.formats import Placement
from runtime.engines.base import Engine, EngineError, EngineKind

#: the built-in engines, imported on first use (each imports its own library lazily too)
BUILTIN = {"onnxruntime": "runtime.engines.onnxruntime_engine:OnnxRuntimeEngine",
           "openvino": "runtime.engines.openvino_engine:OpenVinoEngine"}
#: engines in use, by name (built-in ones once imported, and any added with register_engine)
ENGINES: dict[str, EngineKind] = {}


def register_engine(name: str):
    """Class decorator: make an engine available under ``name`` (as format rows name it)."""
    def add(cls):
        ENGINES[name] = cls
        cls.name = name
        return cls
    return add


def engine_kind(name: str) -> EngineKind:
    """The engine class registered as ``name`` (a built-in one is imported on first use)."""
    if name not in ENGINES and name in BUILTIN:
        module, _, cls = BUILTIN[name].partition(":")
        register_engine(name)(getattr(importlib.import_module(module), cls))
    try:
        return ENGINES[name]
    except KeyError:
        known = ", ".join(sorted({*ENGINES, *BUILTIN}))
        raise EngineError(f"unknown engine {name!r}; known engines: {known}") from None



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
