"""The bytes-in graph: raw JPEG/PNG bytes -> the bundle's preprocessing -> the model -> probabilities.

One ONNX graph, built with ``onnxruntime_extensions.tools.pre_post_processing``, that a server
(Triton's ONNX Runtime backend) can feed with the file a client uploads::

    image_bytes uint8[num_bytes] -> DecodeImage (onnxruntime-extensions, JPEG/PNG)
      -> gray (a 1-channel decode as is; RGB: 0.299 R + 0.587 G + 0.114 B, rounded)
      -> the manifest's crop (``none``, ``center-square``, or ``center`` with its fraction: the
         box of :meth:`Preprocessing.crop_box`, computed in the graph from the decoded size)
      -> area resize to height x width (box weights, as cv2.INTER_AREA; rounded to whole grey
         levels like the runtime's uint8)
      -> (x * scale - mean[c]) / std[c] for each of the model's channels (the gray repeated)
      -> (1, channels, height, width) -> the model -> probabilities (1, classes)

Every number comes from the bundle's manifest (:class:`runtime.contract.manifest.Preprocessing`) and the
artifact's own graph. Running it needs ONNX Runtime with the extensions' custom-op library
registered (:func:`session`).

Measured against the runtime (``tests/converters/test_triton.py`` holds the tolerance):

- ``DecodeImage`` decodes a grayscale JPEG to one channel, bit-identical to the runtime's
  libjpeg-turbo decode. Its default ``color_space`` ("bgr") swaps channels in place as if every
  image had three and crashes the process (segfault) on a grayscale JPEG in onnxruntime-extensions
  0.15.2, so the graph asks for ``color_space = "rgb"`` (no swap).
- Positive-class probability, graph vs ``python -m runtime triage`` with ``model.fp32.onnx``: on
  the 350 full-size JPEGs of cxr_samples max |dp| 0.016 (28 px model, centre-square crop) and
  7.8e-4 (128 px clinical model, no crop) against triage's default reduced decode, 4.1e-4 and
  5.1e-4 against ``--exact-decode``; on the 624 JPEGs of kermany_test_224 5e-7 (the CSV's
  rounding); no decision changed at the bundle threshold.
- What differs from ``python -m runtime triage``: triage decodes a large JPEG at 1/2-1/8 size in
  the DCT domain (``runtime.running.triage.DEFAULT_OVERSAMPLE``), the graph decodes it whole; triage applies
  EXIF orientation, the graph does not; triage refuses images smaller than the model input, the
  graph stretches them; a 16-bit PNG is stretched min..max to 8 bits by triage, cut to its high
  byte by the decoder here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.contract.manifest import CROPS, Preprocessing
from runtime.preprocess.cpu import affine

#: the graph's input: the encoded file, as bytes
INPUT_NAME = "image_bytes"
#: the ONNX opset the pre-processing steps are written for (the models are exported at 18)
OPSET = 18
#: ITU-R BT.601 luma weights, as libjpeg and OpenCV use them for RGB -> gray; after a 1.0 for a
#: one-channel decode (the graph slices [1.0] or [R, G, B] by the decoded channel count)
_GRAY_WEIGHTS = "1.0, 0.299, 0.587, 0.114"


class BytesInError(ValueError):
    """A bundle or artifact the bytes-in graph cannot be built for (the message says why)."""


def _step_classes():
    """The custom pre-processing steps (defined lazily: onnxruntime_extensions is optional)."""
    from onnx import GraphProto, parser
    from onnxruntime_extensions.tools.pre_post_processing import Step

    def parse(text: str) -> GraphProto:
        return parser.parse_graph(text)

    class DecodeToGray(Step):
        """Encoded JPEG/PNG bytes -> (H, W) float gray levels 0..255."""

        def __init__(self) -> None:
            super().__init__(["image"], ["gray"], "DecodeToGray")

        def _create_graph_for_step(self, graph, onnx_opset):
            _, shape = self._get_input_type_and_shape_strs(graph, 0)
            i, o = self.input_names[0], self.output_names[0]
            return parse(f"""
            decode_gray (uint8[{shape}] {i}) => (float[gray_h, gray_w] {o}) {{
                decoded = com.microsoft.extensions.DecodeImage <color_space = "rgb"> ({i})
                dims = Shape (decoded)
                i1 = Constant <value = int64[1] {{1}}> ()
                i2 = Constant <value = int64[1] {{2}}> ()
                i3 = Constant <value = int64[1] {{3}}> ()
                channels = Slice (dims, i2, i3)
                extra = Sub (channels, i1)
                first = Div (extra, i2)
                last = Add (first, channels)
                table = Constant <value = float[4] {{{_GRAY_WEIGHTS}}}> ()
                weights = Slice (table, first, last)
                levels = Cast <to = 1> (decoded)
                weighted = Mul (levels, weights)
                luma = ReduceSum <keepdims = 0> (weighted, i2)
                rounded = Round (luma)
                lo = Constant <value_float = 0.0> ()
                hi = Constant <value_float = 255.0> ()
                {o} = Clip (rounded, lo, hi)
            }}""")

    class CenterSquare(Step):
        """The largest centred square: Preprocessing.crop_box's ``center-square``."""

        def __init__(self) -> None:
            super().__init__(["gray"], ["square"], "CenterSquare")

        def _create_graph_for_step(self, graph, onnx_opset):
            _, shape = self._get_input_type_and_shape_strs(graph, 0)
            i, o = self.input_names[0], self.output_names[0]
            return parse(f"""
            center_square (float[{shape}] {i}) => (float[side_h, side_w] {o}) {{
                hw = Shape ({i})
                side = ReduceMin <keepdims = 1> (hw)
                two = Constant <value = int64[1] {{2}}> ()
                margin = Sub (hw, side)
                start = Div (margin, two)
                end = Add (start, side)
                {o} = Slice ({i}, start, end)
            }}""")

    class CenterCrop(Step):
        """timm's ``center`` crop: the box of runtime.contract.manifest.Preprocessing.crop_box,
        computed from the decoded size with the same float64 operations in the same order (so
        the same whole pixels)."""

        def __init__(self, spec: Preprocessing) -> None:
            super().__init__(["gray"], ["cropped"], "CenterCrop")
            self.spec = spec

        def _create_graph_for_step(self, graph, onnx_opset):
            _, shape = self._get_input_type_and_shape_strs(graph, 0)
            i, o = self.input_names[0], self.output_names[0]
            height, width = self.spec.shape
            fraction = float(self.spec.crop_fraction or 1.0)
            cover_h, cover_w = math.floor(height / fraction), math.floor(width / fraction)
            if cover_h == cover_w:  # torchvision's Resize(int): the shorter side -> cover_h
                resize = f"""
                shorter = ReduceMin <keepdims = 1> (hwd)
                cover = Constant <value = double[1] {{{float(cover_h)!r}}}> ()
                stretched = Mul (cover, hwd)
                quotient = Div (stretched, shorter)
                resized = Floor (quotient)"""
            else:  # timm's ResizeKeepRatio: the image covers cover_h x cover_w
                resize = f"""
                cover = Constant <value = double[2] {{{float(cover_h)!r}, {float(cover_w)!r}}}> ()
                ratios = Div (hwd, cover)
                ratio = ReduceMin <keepdims = 1> (ratios)
                quotient = Div (hwd, ratio)
                resized = Round (quotient)"""
            return parse(f"""
            center_crop (float[{shape}] {i}) => (float[crop_h, crop_w] {o}) {{
                hw = Shape ({i})
                hwd = Cast <to = 11> (hw)
                {resize}
                kept = Constant <value = double[2] {{{float(height)!r}, {float(width)!r}}}> ()
                step = Div (hwd, resized)
                spanned = Mul (kept, step)
                span_r = Round (spanned)
                one = Constant <value = double[1] {{1.0}}> ()
                span_lo = Max (span_r, one)
                length = Min (span_lo, hwd)
                two = Constant <value = double[1] {{2.0}}> ()
                extra = Sub (resized, kept)
                half = Div (extra, two)
                offset = Round (half)
                moved = Mul (offset, step)
                moved_r = Round (moved)
                room = Sub (hwd, length)
                first = Min (room, moved_r)
                start = Cast <to = 7> (first)
                count = Cast <to = 7> (length)
                end = Add (start, count)
                {o} = Slice ({i}, start, end)
            }}""")

    class AreaResize(Step):
        """(h, w) -> (height, width) with box weights (cv2.INTER_AREA), rounded."""

        def __init__(self, shape: tuple[int, int]) -> None:
            super().__init__(["image"], ["resized"], "AreaResize")
            self.shape = shape

        def _create_graph_for_step(self, graph, onnx_opset):
            _, shape = self._get_input_type_and_shape_strs(graph, 0)
            i, o = self.input_names[0], self.output_names[0]
            out_h, out_w = self.shape

            def weights(axis: int, name: str) -> str:
                """(out, n) weights: output k averages source [k * n / out, (k + 1) * n / out)."""
                return f"""
                e{axis} = Slice (hw, a{axis}, b{axis})
                n{axis} = Cast <to = 1> (e{axis})
                step{axis} = Div (n{axis}, out_size{axis})
                klo{axis} = Mul (k{axis}, step{axis})
                khi{axis} = Mul (k1{axis}, step{axis})
                lo{axis} = Unsqueeze (klo{axis}, ax1)
                hi{axis} = Unsqueeze (khi{axis}, ax1)
                ns{axis} = Squeeze (n{axis}, ax0)
                pr{axis} = Range (zero, ns{axis}, one)
                p{axis} = Unsqueeze (pr{axis}, ax0)
                pe{axis} = Add (p{axis}, one)
                top{axis} = Min (hi{axis}, pe{axis})
                bottom{axis} = Max (lo{axis}, p{axis})
                span{axis} = Sub (top{axis}, bottom{axis})
                raw{axis} = Relu (span{axis})
                total{axis} = ReduceSum <keepdims = 1> (raw{axis}, ax1)
                {name} = Div (raw{axis}, total{axis})"""

            return parse(f"""
            area_resize (float[{shape}] {i}) => (float[{out_h}, {out_w}] {o}) {{
                hw = Shape ({i})
                a0 = Constant <value = int64[1] {{0}}> ()
                b0 = Constant <value = int64[1] {{1}}> ()
                a1 = Constant <value = int64[1] {{1}}> ()
                b1 = Constant <value = int64[1] {{2}}> ()
                ax0 = Constant <value = int64[1] {{0}}> ()
                ax1 = Constant <value = int64[1] {{1}}> ()
                zero = Constant <value_float = 0.0> ()
                one = Constant <value_float = 1.0> ()
                out_size0 = Constant <value = float[1] {{{float(out_h)}}}> ()
                out_size1 = Constant <value = float[1] {{{float(out_w)}}}> ()
                count0 = Constant <value_float = {float(out_h)}> ()
                count1 = Constant <value_float = {float(out_w)}> ()
                k0 = Range (zero, count0, one)
                k10 = Add (k0, one)
                k1 = Range (zero, count1, one)
                k11 = Add (k1, one)
                {weights(0, "rows")}
                {weights(1, "cols")}
                tall = MatMul (rows, {i})
                cols_t = Transpose <perm = [1, 0]> (cols)
                wide = MatMul (tall, cols_t)
                rounded = Round (wide)
                lo = Constant <value_float = 0.0> ()
                hi = Constant <value_float = 255.0> ()
                {o} = Clip (rounded, lo, hi)
            }}""")

    class Standardize(Step):
        """(height, width) grey levels -> (1, channels, height, width) float32, as
        runtime.preprocess.cpu.normalize (each channel its own gain and offset)."""

        def __init__(self, spec: Preprocessing) -> None:
            super().__init__(["pixels"], ["model_input"], "Standardize")
            self.spec = spec

        def _create_graph_for_step(self, graph, onnx_opset):
            _, shape = self._get_input_type_and_shape_strs(graph, 0)
            i, o = self.input_names[0], self.output_names[0]
            (h, w), c = self.spec.shape, self.spec.channels
            gain, offset = (", ".join(repr(float(v)) for v in values)
                            for values in affine(self.spec))
            return parse(f"""
            standardize (float[{shape}] {i}) => (float[1, {c}, {h}, {w}] {o}) {{
                gain = Constant <value = float[1, {c}, 1, 1] {{{gain}}}> ()
                offset = Constant <value = float[1, {c}, 1, 1] {{{offset}}}> ()
                target = Constant <value = int64[4] {{1, 1, {h}, {w}}}> ()
                gray = Reshape ({i}, target)
                scaled = Mul (gray, gain)
                {o} = Sub (scaled, offset)
            }}""")

    return DecodeToGray, CenterSquare, CenterCrop, AreaResize, Standardize


def check_preprocessing(spec: Preprocessing) -> None:
    """Refuse, in plain words, a preprocessing the graph does not implement."""
    if spec.interpolation != "area":
        raise BytesInError(f"the bytes-in graph implements the 'area' resize only; this bundle's "
                           f"preprocessing asks for {spec.interpolation!r}: serve the tensor model "
                           "and preprocess on the client")
    if spec.crop not in CROPS:
        raise BytesInError(f"the bytes-in graph knows the crops {', '.join(CROPS)}, not "
                           f"{spec.crop!r}")


def build_bytes_in(model_path: str | Path, spec: Preprocessing):
    """The bytes-in ``onnx.ModelProto`` around the ONNX model at ``model_path``."""
    import onnx
    from onnxruntime_extensions.tools.pre_post_processing import (
        PrePostProcessor,
        create_named_value,
    )

    check_preprocessing(spec)
    model = onnx.load(str(model_path))
    if len(model.graph.input) != 1:
        raise BytesInError(f"{Path(model_path).name} has {len(model.graph.input)} inputs; the "
                           "bytes-in graph feeds a model with one image input")
    opset = max([OPSET] + [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")])
    DecodeToGray, CenterSquare, CenterCrop, AreaResize, Standardize = _step_classes()
    steps = [DecodeToGray()]
    if spec.crop == "center-square":
        steps.append(CenterSquare())
    elif spec.crop == "center":
        steps.append(CenterCrop(spec))
    steps += [AreaResize(spec.shape), Standardize(spec)]
    pipeline = PrePostProcessor([create_named_value(INPUT_NAME, onnx.TensorProto.UINT8,
                                                    ["num_bytes"])], onnx_opset=opset)
    pipeline.add_pre_processing(steps)
    combined = pipeline.run(model)
    crop = spec.crop + (f" {spec.crop_fraction:g}" if spec.crop_fraction is not None else "")
    combined.doc_string = (f"raw JPEG/PNG bytes -> gray -> crop {crop} -> area resize "
                           f"{spec.height}x{spec.width} -> {spec.channels} channel(s) (x * {spec.scale:.6g} - "
                           f"mean {list(spec.mean)}) / std {list(spec.std)} -> "
                           f"{Path(model_path).name} -> probabilities")
    onnx.checker.check_model(combined)
    return combined


def session(model: str | Path | bytes, providers: list[str] | None = None):
    """An ONNX Runtime session for a bytes-in graph (file or serialized), custom ops registered."""
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    options.log_severity_level = 3  # the decoder's dynamic (H, W, C) shape is not a warning
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])


def probabilities(sess, data: bytes) -> np.ndarray:
    """(classes,) probabilities of one encoded image."""
    out = sess.run(None, {INPUT_NAME: np.frombuffer(data, dtype=np.uint8)})[0]
    return np.asarray(out, dtype=np.float32).reshape(-1)


@dataclass(frozen=True)
class ReferenceCheck:
    """The bytes-in graph on the bundle's reference images, encoded as lossless PNG."""

    n: int
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def reference_pngs(inputs: np.ndarray, spec: Preprocessing) -> list[bytes]:
    """The (N, C, S, S) normalised reference inputs back to their grey levels (every channel
    holds the same gray image: the first is read), as PNG files."""
    import cv2

    gain, offset = (float(v[0]) for v in affine(spec))
    pixels = np.clip(np.rint((inputs[:, 0].astype(np.float64) + offset) / gain), 0, 255)
    return [cv2.imencode(".png", image)[1].tobytes() for image in pixels.astype(np.uint8)]


def check_against_reference(sess, inputs: np.ndarray, expected: np.ndarray, spec: Preprocessing,
                            tolerance: float) -> ReferenceCheck:
    """Run the graph on the reference images (already at model size: crop and resize are the
    identity) and compare with the artifact's build-time probabilities."""
    got = np.stack([probabilities(sess, png) for png in reference_pngs(inputs, spec)])
    diff = float(np.abs(got.astype(np.float64) - expected).max()) if len(got) else 0.0
    return ReferenceCheck(len(got), diff, tolerance)
