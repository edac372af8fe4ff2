"""Converters that fail on purpose, named by dotted path in a replaced format-table row."""

from __future__ import annotations

from converters.export_onnx import ExportError
from converters.formats import ConvertJob


def unsupported_op(job: ConvertJob) -> dict:
    raise ExportError("unsupported operator 'FancyOp' (opset 18)")


def no_ort_format(job: ConvertJob) -> dict:
    raise ExportError("this ONNX Runtime cannot save the ORT format")
