"""onnx-int8: ONNX Runtime static QDQ quantization, a fixed U8S8 per-channel scheme.

U8S8 (uint8 activations, int8 weights) is the variant that gives the speed-up on x86 (S8S8 can
give almost none): it is fixed here, never chosen by a timing, so two builds give the same file.
"""

from __future__ import annotations

from converters import quantize_onnx
from converters.formats import ConvertJob

LEVELS = quantize_onnx.ESCALATION


def convert(job: ConvertJob) -> dict:
    opts = job.options
    return quantize_onnx.quantize_onnx(
        job.workspace.fp32_onnx(), job.dest, job.workspace.calibration,
        activation_type=opts.get("activation_type", "uint8"),
        weight_type=opts.get("weight_type", "int8"), per_channel=opts.get("per_channel", True),
        level=job.level)
