"""onnx-fp16: FP16 weights and compute, FP32 inputs and outputs (``keep_io_types``)."""

from __future__ import annotations

from converters.formats import ConvertJob
from converters.fp16 import convert_fp16


def convert(job: ConvertJob) -> dict:
    return convert_fp16(job.workspace.fp32_onnx(), job.dest,
                        keep_io_types=bool(job.options.get("keep_io_types", True)))
