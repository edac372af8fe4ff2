"""ort-int8: the bundle's onnx-int8 artifact converted to the ORT format."""

from __future__ import annotations

from converters.formats import ConvertJob
from converters.ort_format import convert_ort_format


def convert(job: ConvertJob) -> dict:
    if job.source is None:
        raise ValueError("the ORT format is made from the bundle's onnx-int8 artifact; list "
                         "onnx-int8 before ort-int8 in the target profile")
    return convert_ort_format(job.source, job.dest)
