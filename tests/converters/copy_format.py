"""A throw-away artifact format for tests/converters/test_adding_a_format.py: the ONNX FP32
export copied under a new key, by its own converter function (one module + one table row)."""

from __future__ import annotations

import shutil

from converters.formats import ConvertJob


def convert(job: ConvertJob) -> dict:
    shutil.copyfile(job.workspace.fp32_onnx(), job.dest)
    return {"converter": "tests.converters.copy_format", "copied_from": "onnx-fp32 export"}
