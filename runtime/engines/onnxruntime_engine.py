"""ONNX Runtime: an ONNX (or ORT-format) model in a session with explicit providers."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from runtime.contract.formats import Placement
from runtime.engines.base import FEATURES_OUTPUT, CudaProbe, EngineError, missing_package

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _cpu_only(providers: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p for p in providers if p not in GPU_PROVIDERS) or ("CPUExecutionProvider",)


class OnnxRuntimeEngine:
    """An ONNX Runtime session; records the providers it really got."""

    name = "onnxruntime"

    def __init__(self, path: Path, placement: Placement, threads: int | None = None):
        self.path = Path(path)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_package(
                self.path.name, "ONNX Runtime",
                "pip install 'cxr-deploy-kit[cpu]' (or [gpu] for CUDA machines)") from exc
        providers = placement.providers or ("CPUExecutionProvider",)
        available = ort.get_available_providers()
        self.requested = list(providers)
        usable = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        options = [dict(placement.provider_options.get(p, {})) for p in usable]
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
        names = [o.name for o in self.session.get_outputs()]
        self.features_index = names.index(FEATURES_OUTPUT) if FEATURES_OUTPUT in names else None
        self.precision = _onnx_precision_label(self.session)
        if self.fell_back:
            log.warning("ONNX Runtime FELL BACK for %s: asked for %s, running on %s",
                        self.path.name, self.requested, self.active)

    @staticmethod
    def adapt(placement: Placement, device: str, cuda: CudaProbe) -> tuple[Placement, list[str]]:
        """The placement for ``device`` (auto|cpu|cuda) on this machine, and what to tell."""
        providers = placement.providers or ("CPUExecutionProvider",)
        wants_gpu = any(p in GPU_PROVIDERS for p in providers)
        notes: list[str] = []
        if device == "cpu":
            providers = _cpu_only(providers)
        elif device == "cuda" or (device == "auto" and wants_gpu):
            usable, why = cuda()
            if device == "cuda" and not usable:
                raise EngineError(f"--device cuda asked for, but CUDA is not usable here: {why}")
            if device == "cuda" and not wants_gpu:
                providers = ("CUDAExecutionProvider", *providers)
            if not usable:
                providers = _cpu_only(providers)
                notes.append(f"CUDA not usable here ({why}): running on the CPU instead of the "
                             "bundle's GPU providers")
        return dataclasses.replace(placement, providers=tuple(providers)), notes

    @property
    def fell_back(self) -> bool:
        """True when the first provider asked for is not the one running the model."""
        return bool(self.requested) and self.active[:1] != self.requested[:1]

    @property
    def on_cuda(self) -> bool:
        return bool(self.active) and self.active[0] in GPU_PROVIDERS

    @property
    def threads(self) -> int | str:
        n = self.session.get_session_options().intra_op_num_threads
        return int(n) if n else "default"

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_with_features(batch)[0]

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return outputs[0], (None if self.features_index is None else outputs[self.features_index])


def _onnx_precision_label(session) -> str:
    """The precision an ONNX (or ORT-format) model computes in, from the ``precision`` entry the
    build writes into its metadata (read through ONNX Runtime: the runtime needs no ``onnx``)."""
    try:
        return session.get_modelmeta().custom_metadata_map.get("precision", "as-stored")
    except Exception:  # metadata is informative only
        return "as-stored"
