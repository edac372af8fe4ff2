"""openvino-int8: OpenVINO IR quantized by NNCF on the calibration set (escalation: keep the
edge layers in float, then accuracy-controlled quantization on the validation split)."""

from __future__ import annotations

from converters import openvino_ir
from converters.formats import ConvertJob
from converters.validate import MAX_AUC_DROP

LEVELS = openvino_ir.ESCALATION


def convert(job: ConvertJob) -> dict:
    ws = job.workspace
    return openvino_ir.quantize_openvino(
        ws.fp32_onnx(), job.dest, ws.metadata(), ws.calibration, job.level,
        validation=(ws.val.inputs, ws.val.labels),
        validation_metric=ws.findings.lowest_auc,  # every finding's AUC, one against the rest
        max_drop=MAX_AUC_DROP)
