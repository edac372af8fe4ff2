"""The built-in profiles: gpu (CUDA server), cpu (Intel x86 workstation), arm (edge box)."""

from __future__ import annotations

from targets.registry import ArtifactSpec, TargetProfile, register

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CPU_PROVIDERS = ("CPUExecutionProvider",)
# TensorRT builds an engine per input shape on first use; caching it in the bundle makes later
# starts fast. Paths are relative to the bundle folder.
TRT_OPTIONS = {"TensorrtExecutionProvider": {"trt_engine_cache_enable": True,
                                             "trt_engine_cache_path": "trt_cache",
                                             "trt_timing_cache_enable": True}}
TRT_FP16_OPTIONS = {"TensorrtExecutionProvider": {**TRT_OPTIONS["TensorrtExecutionProvider"],
                                                  "trt_fp16_enable": True}}

register(TargetProfile(
    name="gpu",
    description="CUDA GPU server: ONNX FP32 and FP16 on ONNX Runtime (TensorRT, CUDA; CPU fallback)",
    artifacts=(
        ArtifactSpec("model.fp32.onnx", "onnx", "fp32", "onnxruntime", GPU_PROVIDERS,
                     provider_options=TRT_OPTIONS),
        ArtifactSpec("model.fp16.onnx", "onnx", "fp16", "onnxruntime", GPU_PROVIDERS,
                     options={"keep_io_types": True}, provider_options=TRT_FP16_OPTIONS),
    ),
    preprocessing_backend="gpu",
    default_artifact="model.fp16.onnx",
    notes="TensorRT engines are cached in the bundle's trt_cache/ folder after the first run.",
))

register(TargetProfile(
    name="cpu",
    description="Intel x86 workstation: OpenVINO IR FP32/INT8 and ONNX Runtime INT8 (QDQ)",
    artifacts=(
        ArtifactSpec("model.fp32.xml", "openvino", "fp32", "openvino", device="CPU"),
        ArtifactSpec("model.int8.xml", "openvino", "int8", "openvino", device="CPU",
                     options={"quantizer": "nncf"}),
        # U8S8 and S8S8 are both built and measured (S8S8 can give almost no speed-up on x86)
        ArtifactSpec("model.int8.onnx", "onnx", "int8", "onnxruntime", CPU_PROVIDERS,
                     options={"activation_type": ("uint8", "int8"), "weight_type": "int8",
                              "per_channel": True}),
    ),
    preprocessing_backend="cpu",
    default_artifact="fastest",
))

register(TargetProfile(
    name="arm",
    description="ARM edge box: ONNX INT8 (QDQ, U8S8) and its ORT-format twin on ONNX Runtime",
    artifacts=(
        ArtifactSpec("model.int8.onnx", "onnx", "int8", "onnxruntime", CPU_PROVIDERS,
                     options={"activation_type": "uint8", "weight_type": "int8",
                              "per_channel": True}),
        # ORT format for minimal/mobile builds "where that works": when it cannot be made, the
        # bundle is still written and its manifest/report say why (options["optional"])
        ArtifactSpec("model.int8.ort", "ort", "int8", "onnxruntime", CPU_PROVIDERS,
                     options={"optional": True}),
    ),
    preprocessing_backend="cpu",
    default_artifact="model.int8.onnx",
))
