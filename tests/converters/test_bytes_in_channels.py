"""The bytes-in graph feeds a 3-channel model the runtime's own tensor: the gray X-ray repeated,
each channel with its own mean/std, on real JPEGs (onnxruntime-extensions decode, CPU provider).

Two small ONNX models stand in for a network, so no bundle is built: one returns its input (the
graph's preprocessed tensor, compared value by value with the runtime's), one turns it into two
probabilities with different weights per channel (compared within the 1-channel tolerance of
tests/converters/test_triton.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime_extensions")

from converters.bytes_in import (  # noqa: E402
    build_bytes_in,
    check_against_reference,
    probabilities,
    reference_pngs,
    session,
)
from runtime.contract.manifest import Preprocessing  # noqa: E402
from runtime.imaging.decode import decode_file  # noqa: E402
from runtime.preprocess.cpu import normalize, to_model_pixels  # noqa: E402
from tests.converters.test_triton import FULL_DECODE_TOLERANCE  # noqa: E402

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
#: per-channel weights of the probability model (a channel swap changes its answer)
WEIGHTS = np.array([[4.0, -2.0], [-6.0, 3.0], [2.0, 5.0]], np.float32)


def _model(path: Path, size: int, probabilities_out: bool) -> Path:
    """(N, 3, size, size) -> itself, or -> softmax(mean per channel @ WEIGHTS) (N, 2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if probabilities_out:
        nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["means"], keepdims=0),
                 helper.make_node("MatMul", ["means", "weights"], ["logits"]),
                 helper.make_node("Softmax", ["logits"], ["out"], axis=1)]
        inits = [numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
                 numpy_helper.from_array(WEIGHTS, "weights")]
        out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2])
    else:
        nodes, inits = [helper.make_node("Identity", ["image"], ["out"])], []
        out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, size, size])
    graph = helper.make_graph(
        nodes, "three_channels",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])], [out],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _runtime_inputs(path: Path, spec: Preprocessing) -> np.ndarray:
    """The runtime's (1, 3, S, S) input for one file: whole decode, crop, resize, normalise."""
    return normalize(to_model_pixels(decode_file(path).pixels, spec)[None], spec)


def _files(data_dir: Path) -> list[Path]:
    full = sorted((data_dir / "cxr_samples").rglob("*.jpeg"))[::70]  # grayscale and RGB JPEGs
    small = sorted((data_dir / "kermany_test_224").rglob("*.jpeg"))[::200]
    return full + small


@pytest.mark.parametrize("crop", ["center-square", "none"])
def test_bytes_in_gives_the_runtime_tensor_per_channel(tmp_path, data_dir, crop):
    spec = Preprocessing(size=64, crop=crop, channels=3, **IMAGENET)
    sess = session(build_bytes_in(_model(tmp_path / "identity.onnx", 64, False), spec)
                   .SerializeToString())
    gain = (spec.scale / np.array(spec.std, np.float32))[None, :, None, None]
    worst = []
    for path in _files(data_dir):
        got = sess.run(None, {"image_bytes": np.frombuffer(path.read_bytes(), np.uint8)})[0]
        expected = _runtime_inputs(path, spec)
        assert got.shape == expected.shape == (1, 3, 64, 64)
        worst.append(float((np.abs(got - expected) / gain).max()))
    # the graph's own area resize rounds x.5 ties its way: at most one grey level apart
    assert max(worst) <= 1 + 1e-3, worst


def test_bytes_in_probabilities_match_the_runtime(tmp_path, data_dir):
    spec = Preprocessing(size=64, crop="center-square", channels=3, **IMAGENET)
    model = _model(tmp_path / "probabilities.onnx", 64, True)
    sess = session(build_bytes_in(model, spec).SerializeToString())
    reference = session(model.read_bytes())
    diffs = []
    for path in _files(data_dir):
        got = probabilities(sess, path.read_bytes())
        expected = reference.run(None, {"image": _runtime_inputs(path, spec)})[0][0]
        diffs.append(float(np.abs(got - expected).max()))
    assert max(diffs) <= FULL_DECODE_TOLERANCE, diffs
    # the reference images (already at model size) go back to PNG and through the graph
    inputs = np.concatenate([_runtime_inputs(p, spec) for p in _files(data_dir)])
    expected = reference.run(None, {"image": inputs})[0]
    assert len(reference_pngs(inputs, spec)) == len(inputs)
    assert check_against_reference(sess, inputs, expected, spec, FULL_DECODE_TOLERANCE).passed
