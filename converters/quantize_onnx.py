"""ONNX FP32 -> INT8 with ONNX Runtime static quantization (QDQ, per-channel, calibrated).

Calibration uses real training images (at least 300). The softmax output always stays in float
(quantizing probabilities to 8 bits would create ties and wreck the AUC). When the clinical gate
fails, :data:`ESCALATION` leaves more of the most sensitive layers in float (first conv, classifier).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from converters.export_onnx import INPUT_NAME, ExportError, check_model, set_metadata

log = logging.getLogger(__name__)

# What stays in float at each escalation step (the build tries them in order until the gate passes).
ESCALATION: tuple[str, ...] = ("softmax", "softmax+classifier", "softmax+classifier+stem")
_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
#: 7-bit weights: on x86 CPUs without VNNI (AVX2, AVX-512F) ONNX Runtime's U8S8 kernels add
#: pairs of uint8 x int8 products in int16 (vpmaddubsw), which saturates with full 8-bit weights.
#: Measured on a 2-core AVX2 EPYC (tiny model, cpu bundle): full range gave parity 0.62 and lost
#: 0.77 pp of sensitivity at every escalation level; reduce_range gave parity 0.037 and the FP32
#: metrics. A bundle runs on CPUs the build never sees, so the range is reduced everywhere.
REDUCE_RANGE = True


class _Reader:
    """CalibrationDataReader over an in-memory (N, C, S, S) float32 array."""

    def __init__(self, inputs: np.ndarray, batch_size: int = 32):
        self.inputs, self.batch_size = inputs, batch_size
        self._iter: Iterator[dict[str, np.ndarray]] | None = None
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        assert self._iter is not None
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter({INPUT_NAME: self.inputs[i:i + self.batch_size]}
                          for i in range(0, len(self.inputs), self.batch_size))


def float_nodes(model: onnx.ModelProto, level: str) -> list[str]:
    """Names of the nodes to keep in float for an :data:`ESCALATION` level."""
    nodes = list(model.graph.node)
    keep = [n.name for n in nodes if n.op_type == "Softmax"]
    if "classifier" in level:
        keep += [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
    if "stem" in level:
        keep += [n.name for n in nodes if n.op_type == "Conv"][:1]
    return keep


def drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Keep only the operator domains the graph uses.

    ONNX Runtime's optimiser (run by ``quant_pre_process``) imports every domain registered in the
    process, so a process that has loaded onnxruntime-extensions would write ``ai.onnx.contrib``
    and ``com.microsoft.extensions`` into the file: the same build would give other bytes.
    """
    used = {node.domain for node in model.graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def quantize_onnx(source: Path, dest: Path, calibration: np.ndarray, *,
                  activation_type: str = "uint8", weight_type: str = "int8",
                  per_channel: bool = True, level: str = ESCALATION[0]) -> dict:
    """Static QDQ quantization of ``source`` into ``dest``; returns what was done."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) < 300:
        raise ExportError(f"INT8 calibration needs >= 300 images, got {len(calibration)}")
    with tempfile.TemporaryDirectory(prefix="cxr-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared))
        except Exception as exc:  # symbolic shape inference can fail on exotic graphs
            log.warning("quant_pre_process failed (%s); retrying without symbolic shapes", exc)
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        excluded = float_nodes(onnx.load(str(prepared)), level)
        try:
            quantize_static(
                str(prepared), str(dest), _Reader(calibration), quant_format=QuantFormat.QDQ,
                per_channel=per_channel, activation_type=getattr(QuantType, _TYPES[activation_type]),
                weight_type=getattr(QuantType, _TYPES[weight_type]), nodes_to_exclude=excluded,
                calibrate_method=CalibrationMethod.MinMax, reduce_range=REDUCE_RANGE,
                extra_options={"ActivationSymmetric": activation_type == "int8"})
        except Exception as exc:
            raise ExportError(f"ONNX Runtime quantization failed: {exc}") from exc
    model = onnx.load(str(dest))
    drop_unused_opsets(model)
    check_model(model, "INT8 quantization")
    scheme = f"{'U' if activation_type == 'uint8' else 'S'}8{'U' if weight_type == 'uint8' else 'S'}8"
    info = {"quantizer": "onnxruntime", "format": "QDQ", "scheme": scheme,
            "per_channel": per_channel, "calibration_images": int(len(calibration)),
            "calibration_split": "train", "kept_in_float": excluded, "level": level,
            "reduce_range": REDUCE_RANGE}
    set_metadata(model, {"precision": "int8", "quantization": scheme})
    onnx.save_model(model, str(dest))
    return info
