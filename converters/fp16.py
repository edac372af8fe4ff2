"""ONNX FP32 -> FP16 weights and compute with FP32 inputs/outputs (for GPUs)."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx

from converters.export_onnx import ExportError, check_model, set_metadata


def convert_fp16(source: Path, dest: Path, keep_io_types: bool = True) -> dict:
    """onnxconverter-common's float16 conversion, then the checker (parity runs afterwards).

    ``keep_io_types`` keeps the ``image`` input and the probability output in float32 so the
    runtime feeds every artifact the same arrays. Weights too small for FP16 are clamped by
    the converter; how many is returned as ``clamped_values``.
    """
    from onnxconverter_common import float16

    model = onnx.load(str(source))
    try:
        with warnings.catch_warnings(record=True) as caught:  # one warning per clamped value
            warnings.simplefilter("always")
            converted = float16.convert_float_to_float16(model, keep_io_types=keep_io_types,
                                                          disable_shape_infer=False)
    except Exception as exc:  # the converter raises plain exceptions on ops it cannot handle
        raise ExportError(f"FP16 conversion failed: {exc}") from exc
    clamped = sum("truncated" in str(w.message) for w in caught)
    check_model(converted, "FP16 conversion")
    set_metadata(converted, {"precision": "fp16",
                             "io_types": "float32" if keep_io_types else "float16"})
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(converted, str(dest))
    return {"converter": "onnxconverter_common.float16", "keep_io_types": keep_io_types,
            "clamped_values": clamped}
