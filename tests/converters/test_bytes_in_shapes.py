"""The bytes-in graph takes the runtime's crop box for a non-square input and timm's ``center``
crop: its model input equals the CPU backend's pixels of the same real JPEG (full decode).

The model here is the identity (the graph's output is the model input it was given), so the
comparison is of pixels, not of a network's probabilities."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime_extensions")

from converters.bytes_in import build_bytes_in, probabilities, session
from runtime.contract.manifest import Preprocessing
from runtime.imaging.decode import decode_file
from runtime.preprocess.cpu import to_model_pixels

#: grey levels: the graph's box sums are float32 as the GPU graph's (tests/runtime/preprocess/
#: test_gpu_preprocess.py: one level at x.5 ties), on the same box; a box smaller than the
#: input (224 px files) is enlarged, which OpenCV does in 11-bit fixed point: one level, often
MAX_GREY_LEVELS = 1
#: the share of pixels off by one level when the box is shrunk (full-size X-rays)
MAX_TIES = 0.01
SAMPLES = ("NORMAL/IM-0172-0001.jpeg", "NORMAL/IM-0225-0001.jpeg",
           "PNEUMONIA/person1551_bacteria_4053.jpeg", "PNEUMONIA/person1253_bacteria_3211.jpeg")


def _identity_model(path, spec: Preprocessing) -> None:
    import onnx
    from onnx import TensorProto, helper

    shape = [1, spec.channels, *spec.shape]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["probabilities"])], "identity",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.parametrize("spec", [
    Preprocessing(size=(192, 256), crop="center", crop_fraction=0.875, scale=1.0, mean=(0.0,),
                  std=(1.0,)),
    Preprocessing(size=(256, 192), crop="none", scale=1.0, mean=(0.0,), std=(1.0,)),
    Preprocessing(size=224, crop="center", crop_fraction=0.875, scale=1.0, mean=(0.0,),
                  std=(1.0,)),
    Preprocessing(size=64, crop="center-square", scale=1.0, mean=(0.0,), std=(1.0,)),
], ids=["192x256-center", "256x192-none", "224-center", "64-center-square"])
def test_bytes_in_takes_the_runtimes_crop_box(spec, data_dir, tmp_path):
    model = tmp_path / "identity.onnx"
    _identity_model(model, spec)
    sess = session(build_bytes_in(model, spec).SerializeToString())
    full = [data_dir / "cxr_samples" / name for name in SAMPLES]
    small = sorted((data_dir / "kermany_test_224").rglob("*.jpeg"))[:2]
    for path in full + small:
        got = probabilities(sess, path.read_bytes()).reshape(spec.shape)
        want = to_model_pixels(decode_file(path).pixels, spec).astype(np.float32)
        diff = np.abs(got - want)
        assert diff.max() <= MAX_GREY_LEVELS + 1e-3, path.name
        if path in full:
            assert (diff > 0.5).mean() < MAX_TIES, path.name
