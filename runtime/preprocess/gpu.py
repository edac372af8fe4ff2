"""GPU preprocessing backend: batched area resize + normalisation as a tiny ONNX graph.

Why a graph and not CuPy: ONNX Runtime with the CUDA provider is already what the GPU bundle runs
on, so this adds no dependency, and the very same graph runs (and is tested) on the CPU provider
on machines without a GPU. The area resize is written as two matrix products per image,
``ry @ crop @ rx``, with box-filter weights computed on the CPU from each image's (fractional)
crop window (:func:`runtime.preprocess.cpu.area_weights`): that is exactly OpenCV's ``INTER_AREA``
downscale, it handles any input size, and images of different sizes share one batch by zero
padding (padded rows/columns get zero weight). Rounding to whole grey levels (half to even, as
OpenCV does) keeps the model's pixels those of the CPU backend: the test bounds the difference at
one grey level per pixel.

On the GPU only decode stays on the CPU; the uint8 crops are uploaded (4x smaller than float).
"""

from __future__ import annotations

import functools
import logging
from typing import Sequence

import numpy as np

from runtime.contract.manifest import Preprocessing
from runtime.preprocess.cpu import Window, affine

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"


def cannot_run(spec: Preprocessing) -> str | None:
    """Why this graph cannot make ``spec``'s pixels (None: it can): it resizes by area only."""
    if spec.interpolation != "area":
        return (f"the GPU preprocessing graph resizes by area only and this bundle asks for "
                f"{spec.interpolation} interpolation: preprocessing on the CPU")
    return None


def build_graph(spec: Preprocessing) -> bytes:
    """Serialized ONNX model: (pixels u8 (N,H,W), ry (N,OH,H), rx (N,W,OW)) -> (N,C,OH,OW)
    float32, OH x OW the model's height x width, C = ``spec.channels``, each channel
    ``x * gain[c] - offset[c]`` as :func:`cpu.affine`. The crop is in the weights."""
    import onnx
    from onnx import TensorProto, helper

    (oh, ow), c = spec.shape, spec.channels
    gain, offset = affine(spec)
    nodes = [
        helper.make_node("Cast", ["pixels"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["ry", "xf"], ["rows"]),
        helper.make_node("MatMul", ["rows", "rx"], ["resized"]),
        helper.make_node("Round", ["resized"], ["rounded"]),
        helper.make_node("Clip", ["rounded", "lo", "hi"], ["clipped"]),
        helper.make_node("Unsqueeze", ["clipped", "axis"], ["gray"]),
        helper.make_node("Mul", ["gray", "gain"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "offset"], ["image"]),
    ]
    inits = [helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("hi", TensorProto.FLOAT, [], [255.0]),
             helper.make_tensor("gain", TensorProto.FLOAT, [1, c, 1, 1], gain.tolist()),
             helper.make_tensor("offset", TensorProto.FLOAT, [1, c, 1, 1], offset.tolist()),
             helper.make_tensor("axis", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(
        nodes, "cxr_preprocess",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", "H", "W"]),
         helper.make_tensor_value_info("ry", TensorProto.FLOAT, ["N", oh, "H"]),
         helper.make_tensor_value_info("rx", TensorProto.FLOAT, ["N", "W", ow])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", c, oh, ow])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="cxr-runtime")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _session(spec: Preprocessing, providers: Sequence[str], quiet: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4 if quiet else 3
    return ort.InferenceSession(build_graph(spec), sess_options=options, providers=list(providers))


@functools.lru_cache(maxsize=1)
def cuda_usable() -> tuple[bool, str]:
    """(usable, why): whether a CUDA session really runs on the GPU here (not just 'available').

    onnxruntime-gpu lists CUDA as available even without a GPU or CUDA libraries, then silently
    falls back to the CPU; so a small session is created and its active providers are checked.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return False, "onnxruntime is not installed"
    if CUDA not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDA provider"
    # loading the CUDA provider library logs through ONNX Runtime's default logger, not the
    # session's: silence it for the probe, the caller says what happened in plain words
    ort.set_default_logger_severity(4)
    try:
        session = _session(Preprocessing(), [CUDA, "CPUExecutionProvider"], quiet=True)
    except Exception as exc:  # missing CUDA/cuDNN libraries raise at session creation
        return False, f"CUDA session failed: {exc}"
    finally:
        ort.set_default_logger_severity(2)  # ONNX Runtime's default (warnings)
    active = session.get_providers()
    if active[:1] != [CUDA]:
        return False, "CUDA provider did not load (no GPU or missing CUDA/cuDNN libraries)"
    return True, "CUDA provider active"


class GpuPreprocessor:
    """Batches of :class:`Window` crops -> (N, C, height, width) float32 model input, on CUDA
    if usable."""

    def __init__(self, spec: Preprocessing, providers: Sequence[str] = (CUDA, "CPUExecutionProvider")):
        self.spec = spec
        self.session = _session(spec, providers, quiet=True)
        self.requested = list(providers)
        self.active = list(self.session.get_providers())
        if self.active[:1] != self.requested[:1]:
            log.warning("GPU preprocessing FELL BACK: asked for %s, running on %s",
                        self.requested, self.active)

    def __call__(self, windows: Sequence[Window]) -> np.ndarray:
        out_h, out_w = self.spec.shape
        if not windows:
            return np.zeros((0, self.spec.channels, out_h, out_w), np.float32)
        height = max(w.pixels.shape[0] for w in windows)
        width = max(w.pixels.shape[1] for w in windows)
        count = len(windows)
        pixels = np.zeros((count, height, width), np.uint8)
        ry = np.zeros((count, out_h, height), np.float32)
        rx = np.zeros((count, width, out_w), np.float32)
        for index, window in enumerate(windows):
            h, w = window.pixels.shape
            pixels[index, :h, :w] = window.pixels
            ry[index, :, :h], rx[index, :w, :] = window.weights(out_h, out_w)
        return self.session.run(None, {"pixels": pixels, "ry": ry, "rx": rx})[0]
