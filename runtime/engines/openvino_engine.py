"""OpenVINO: an IR (or ONNX) model compiled for a device with an explicit precision hint."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from runtime.contract.formats import Placement
from runtime.engines.base import FEATURES_OUTPUT, CudaProbe, EngineError, missing_package

log = logging.getLogger(__name__)


class OpenVinoEngine:
    """A compiled OpenVINO model; records the inference precision it really got."""

    name = "openvino"

    def __init__(self, path: Path, placement: Placement, threads: int | None = None):
        self.path = Path(path)
        try:
            ov = import_openvino()
        except ImportError as exc:
            raise missing_package(self.path.name, "OpenVINO",
                                  "pip install 'cxr-deploy-kit[openvino]'") from exc
        device = placement.device or "CPU"
        hint = placement.precision_hint
        self.requested = [device]
        core = ov.Core()
        config: dict[str, object] = {}
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
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
        self.features_output = next((o for o in self.compiled.outputs
                                     if FEATURES_OUTPUT in o.get_names()), None)
        if hint and self.precision != hint:
            log.warning("OpenVINO runs %s in %s, not the %s asked for",
                        self.path.name, self.precision, hint)

    @staticmethod
    def adapt(placement: Placement, device: str, cuda: CudaProbe) -> tuple[Placement, list[str]]:
        if device == "cuda":
            raise EngineError("an OpenVINO artifact cannot run on CUDA; choose an ONNX artifact "
                              "or --device auto")
        if device == "cpu":
            return dataclasses.replace(placement, device="CPU"), []
        return placement, []

    @property
    def fell_back(self) -> bool:
        return False

    @property
    def on_cuda(self) -> bool:
        return False

    @property
    def threads(self) -> int | str:
        try:
            return int(self.compiled.get_property("INFERENCE_NUM_THREADS")) or "default"
        except Exception:  # not every device reports it
            return "default"

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_with_features(batch)[0]

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        result = self.request.infer({0: np.ascontiguousarray(batch, np.float32)})
        features = None if self.features_output is None else \
            np.asarray(result[self.features_output])
        return np.asarray(result[self.compiled.output(0)]), features


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
    tests/runtime/running/test_triage.py's audit hook), so the telemetry class is replaced by a no-op
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
