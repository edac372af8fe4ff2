"""The format table: one row per artifact format, read by the build, the runtime, the benchmarks,
the CLI and the tests.

A row says how the file is named (``model`` + ``suffix``), which converter makes it (a dotted
path, ``"package.module:function"``, resolved by the build only: the runtime never imports the
converters), which engine runs it (:mod:`runtime.engines`), the ONNX Runtime providers / OpenVINO
device per target, and its tolerances. Adding a format = one converter module + one
:func:`register_format` call (see docs/adding-a-format.md).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

ANY_TARGET = "*"
CPU = ("CPUExecutionProvider",)
GPU = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# TensorRT builds an engine per input shape on first use; caching it in the bundle makes later
# starts fast. Paths are relative to the bundle folder.
_TRT = {"trt_engine_cache_enable": True, "trt_engine_cache_path": "trt_cache",
        "trt_timing_cache_enable": True}


@dataclass(frozen=True)
class Placement:
    """Where an engine runs an artifact: ONNX Runtime providers (+ options) or an OpenVINO device."""

    providers: tuple[str, ...] = ()
    provider_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    device: str | None = None
    precision_hint: str | None = None

    @property
    def asked_for(self) -> list[str]:
        """What the target asks for, in the words the engines report (providers or device)."""
        return list(self.providers) if self.providers else [self.device or "CPU"]


@dataclass(frozen=True)
class FormatRow:
    """One artifact format."""

    key: str  # e.g. "onnx-int8": what profiles, manifests and --artifact name
    precision: str  # "fp32" | "fp16" | "int8"
    suffix: str  # the file is "model" + suffix
    converter: str  # "package.module:function", resolved lazily by the build
    engine: str  # a name registered in runtime.engines
    placements: Mapping[str, Placement]  # by target name; ANY_TARGET for the rest
    # max |p - p_pytorch| on validation at build; None: judged by the clinical gate only (INT8)
    parity_tolerance: float | None
    # max |p - p_build| on the bundle's reference set when the device re-runs it
    device_tolerance: float
    source: str | None = None  # another format's key this one is converted from (ort-int8)
    description: str = ""

    @property
    def filename(self) -> str:
        return "model" + self.suffix

    def placement(self, target: str) -> Placement:
        try:
            return self.placements.get(target) or self.placements[ANY_TARGET]
        except KeyError:
            raise KeyError(f"format {self.key!r} has no placement for target {target!r}") from None


FORMATS: dict[str, FormatRow] = {}


def register_format(row: FormatRow, replace: bool = False) -> FormatRow:
    """Add a row to the table (keys are unique unless ``replace``)."""
    if row.key in FORMATS and not replace:
        raise ValueError(f"format {row.key!r} is already registered")
    if ":" not in row.converter:
        raise ValueError(f"format {row.key!r}: converter {row.converter!r} must be "
                         "'package.module:function'")
    FORMATS[row.key] = row
    return row


def unregister_format(key: str) -> None:
    FORMATS.pop(key, None)


def format_keys() -> list[str]:
    return list(FORMATS)


def get_format(key: str) -> FormatRow:
    """The row called ``key``, or an error naming the closest key and every known one."""
    try:
        return FORMATS[key]
    except KeyError:
        close = difflib.get_close_matches(key, list(FORMATS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown artifact format {key!r}.{hint} Known formats: "
                       f"{', '.join(FORMATS)}") from None


_ORT_CPU = {ANY_TARGET: Placement(providers=CPU)}
_OV_CPU = {ANY_TARGET: Placement(device="CPU", precision_hint="f32")}

register_format(FormatRow(
    "onnx-fp32", "fp32", ".fp32.onnx", "converters.formats.onnx_fp32:convert", "onnxruntime",
    {"gpu": Placement(providers=GPU, provider_options={"TensorrtExecutionProvider": _TRT}),
     ANY_TARGET: Placement(providers=CPU)},
    parity_tolerance=1e-3, device_tolerance=1e-3,
    description="ONNX FP32 as exported from PyTorch"))
register_format(FormatRow(
    "onnx-fp16", "fp16", ".fp16.onnx", "converters.formats.onnx_fp16:convert", "onnxruntime",
    {"gpu": Placement(providers=GPU, provider_options={
        "TensorrtExecutionProvider": {**_TRT, "trt_fp16_enable": True}}),
     ANY_TARGET: Placement(providers=CPU)},
    parity_tolerance=2e-2, device_tolerance=2e-2,
    description="ONNX FP16 weights and compute, FP32 inputs and outputs"))
register_format(FormatRow(
    "onnx-int8", "int8", ".int8.onnx", "converters.formats.onnx_int8:convert", "onnxruntime",
    _ORT_CPU, parity_tolerance=None, device_tolerance=3e-2,
    description="ONNX Runtime static QDQ INT8, U8S8, per-channel weights"))
register_format(FormatRow(
    "ort-int8", "int8", ".int8.ort", "converters.formats.ort_int8:convert", "onnxruntime",
    _ORT_CPU, parity_tolerance=None, device_tolerance=3e-2, source="onnx-int8",
    description="the ONNX INT8 artifact in ORT format (minimal/mobile builds)"))
register_format(FormatRow(
    "openvino-fp32", "fp32", ".fp32.xml", "converters.formats.openvino_fp32:convert", "openvino",
    _OV_CPU, parity_tolerance=1e-3, device_tolerance=1e-3,
    description="OpenVINO IR FP32 (weights kept FP32), f32 inference hint"))
register_format(FormatRow(
    "openvino-int8", "int8", ".int8.xml", "converters.formats.openvino_int8:convert", "openvino",
    _OV_CPU, parity_tolerance=None, device_tolerance=3e-2,
    description="OpenVINO IR INT8 quantized by NNCF"))
