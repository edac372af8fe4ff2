"""The built-in profiles: gpu (CUDA server), cpu (Intel x86 workstation), arm (edge box).

Formats are named by their key in the format table (runtime/formats.py), which says how each is
made and run; a profile only says which to build and which becomes the default.
"""

from __future__ import annotations

from targets.registry import TargetProfile, register

register(TargetProfile(
    name="gpu",
    description="CUDA GPU server: ONNX FP32 and FP16 on ONNX Runtime (TensorRT, CUDA; CPU fallback)",
    formats=("onnx-fp32", "onnx-fp16"),
    default_preference=("onnx-fp16", "onnx-fp32"),
    preprocessing_backend="gpu",
    notes="TensorRT engines are cached in the bundle's trt_cache/ folder after the first run.",
))

register(TargetProfile(
    name="cpu",
    description="Intel x86 workstation: OpenVINO IR FP32/INT8 and ONNX Runtime INT8 (QDQ, U8S8)",
    formats=("openvino-fp32", "openvino-int8", "onnx-int8"),
    # INT8 on OpenVINO first (NNCF), then ORT INT8, then FP32: the first that passes the gate
    default_preference=("openvino-int8", "onnx-int8", "openvino-fp32"),
    preprocessing_backend="cpu",
    # a network whose INT8 cannot hold its validation figures within the clinical gate at any
    # retry level still gets a workstation bundle: OpenVINO FP32, with the INT8 formats' reasons
    # in the manifest's skipped list, report.md and the build's output
    optional=("openvino-int8", "onnx-int8"),
))

register(TargetProfile(
    name="arm",
    description="ARM edge box: ONNX INT8 (QDQ, U8S8) and its ORT-format twin on ONNX Runtime",
    formats=("onnx-int8", "ort-int8"),
    default_preference=("onnx-int8",),
    preprocessing_backend="cpu",
    # ORT format for minimal/mobile builds "where that works": when it cannot be made, the
    # bundle is still written and its manifest/report say why
    optional=("ort-int8",),
))
