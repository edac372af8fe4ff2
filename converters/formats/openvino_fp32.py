"""openvino-fp32: OpenVINO IR from the ONNX FP32 export, weights kept FP32."""

from __future__ import annotations

from converters import openvino_ir
from converters.formats import ConvertJob


def convert(job: ConvertJob) -> dict:
    ws = job.workspace
    return openvino_ir.convert_openvino(ws.fp32_onnx(), job.dest, ws.metadata(), "fp32")
