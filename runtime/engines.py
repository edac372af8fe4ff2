"""Inference engines behind one small interface: ``run(batch) -> probabilities``.

Both engines take a float32 (N, 1, H, W) batch and return float32 (N, C) class probabilities.
Each records what it actually runs with (providers, inference precision), and says so loudly
when that differs from what was asked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)


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

    def run(self, batch: np.ndarray) -> np.ndarray: ...


class OnnxRuntimeEngine:
    """An ONNX (or ORT-format) model in an ONNX Runtime session with explicit providers."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 provider_options: dict[str, dict] | None = None, threads: int | None = None):
        self.path = Path(path)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_package(
                self.path.name, "ONNX Runtime",
                "pip install 'cxr-deploy-kit[cpu]' (or [gpu] for CUDA machines)") from exc
        available = ort.get_available_providers()
        self.requested = list(providers)
        usable = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        options = [dict((provider_options or {}).get(p, {})) for p in usable]
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3  # our own fallback message is the loud one
        if threads:
            session_options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=session_options,
                                                providers=usable, provider_options=options)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"ONNX Runtime could not load {self.path.name}: {exc}") from exc
        self.active = list(self.session.get_providers())
        self.input_name = self.session.get_inputs()[0].name
        self.precision = _onnx_precision_label(self.session)
        if self.fell_back:
            log.warning("ONNX Runtime FELL BACK for %s: asked for %s, running on %s",
                        self.path.name, self.requested, self.active)

    @property
    def fell_back(self) -> bool:
        """True when the first provider asked for is not the one running the model."""
        return bool(self.requested) and self.active[:1] != self.requested[:1]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]


class OpenVinoEngine:
    """An OpenVINO IR (or ONNX) model compiled for a device with an explicit precision hint."""

    name = "openvino"

    def __init__(self, path: str | Path, device: str = "CPU", precision_hint: str | None = "f32",
                 threads: int | None = None):
        self.path = Path(path)
        try:
            ov = import_openvino()
        except ImportError as exc:
            raise missing_package(self.path.name, "OpenVINO",
                                  "pip install 'cxr-deploy-kit[openvino]'") from exc
        self.requested = [device]
        core = ov.Core()
        config: dict[str, object] = {}
        if precision_hint:
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = core.compile_model(core.read_model(str(self.path)), device, config)
        except Exception as exc:
            raise EngineError(f"OpenVINO could not compile {self.path.name} for {device}: {exc}") from exc
        self.active = [device]
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        # an ov.Type prints as "<Type: 'float32'>"; its short name ("f32") is what hints use
        self.precision = actual.get_type_name() if hasattr(actual, "get_type_name") else str(actual)
        self.request = self.compiled.create_infer_request()
        if precision_hint and self.precision != precision_hint:
            log.warning("OpenVINO runs %s in %s, not the %s asked for",
                        self.path.name, self.precision, precision_hint)

    @property
    def fell_back(self) -> bool:
        return False

    def run(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(batch, np.float32)})
        return np.asarray(result[self.compiled.output(0)])


class _TelemetryOff:
    """Stands in for ``openvino_telemetry.Telemetry``: accepts every call, sends nothing."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "backend":
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def import_openvino():
    """``import openvino`` without its telemetry.

    ``import openvino`` imports ``openvino.tools.ovc``, which sends a Google Analytics event
    ("ov import general_import", in a forked process) unless a consent file opts out, and writes
    ``~/intel/openvino_ga_cid``. The runtime must open no network connection (found by
    tests/runtime/test_triage.py's audit hook), so the telemetry class is replaced by a no-op
    before openvino is first imported. If openvino was imported earlier, nothing changes.
    """
    import sys

    if "openvino" not in sys.modules:
        try:
            import openvino_telemetry

            openvino_telemetry.Telemetry = _TelemetryOff
        except ImportError:  # telemetry package absent: nothing to silence
            pass
    import openvino

    return openvino


def _onnx_precision_label(session) -> str:
    """The precision an ONNX (or ORT-format) model computes in, from the ``precision`` entry the
    build writes into its metadata (read through ONNX Runtime: the runtime needs no ``onnx``)."""
    try:
        return session.get_modelmeta().custom_metadata_map.get("precision", "as-stored")
    except Exception:  # metadata is informative only
        return "as-stored"


def create_engine(path: str | Path, engine: str, *, providers: Sequence[str] = (),
                  device: str = "CPU", precision_hint: str | None = "f32",
                  provider_options: dict[str, dict] | None = None,
                  threads: int | None = None) -> Engine:
    """Open ``path`` with the named engine ("onnxruntime" or "openvino")."""
    if not Path(path).is_file():
        raise EngineError(f"artifact not found: {path}")
    if engine == "onnxruntime":
        return OnnxRuntimeEngine(path, providers or ("CPUExecutionProvider",),
                                 provider_options, threads)
    if engine == "openvino":
        return OpenVinoEngine(path, device, precision_hint, threads)
    raise EngineError(f"unknown engine {engine!r}; expected 'onnxruntime' or 'openvino'")


def predict_proba(engine: Engine, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run a whole (N, 1, H, W) array through ``engine`` in batches."""
    outputs = [engine.run(inputs[start:start + batch_size])
               for start in range(0, len(inputs), batch_size)]
    return np.concatenate(outputs, axis=0) if outputs else np.zeros((0, 0), np.float32)
