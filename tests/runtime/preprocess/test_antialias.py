"""``interpolation = "linear-antialias"`` / ``"cubic-antialias"``: PIL's antialiased filters, the
pixels torchvision's ``Resize`` makes (on a PIL image, or a tensor with ``antialias=True``), on
real full-size X-rays; OpenCV's ``linear`` does not antialias when it shrinks and is far off."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.contract.manifest import Preprocessing
from runtime.imaging.decode import decode_file
from runtime.preprocess.cpu import to_model_pixels
from runtime.preprocess.gpu import cannot_run


def _torchvision():
    from converters.config.vision_libraries import import_vision

    return import_vision("torchvision.transforms")


def _xrays(data_dir, count: int = 4) -> list:
    return sorted((data_dir / "cxr_samples" / "PNEUMONIA").glob("*.jpeg"))[:count]


@pytest.mark.parametrize("ours,theirs", [("linear-antialias", "BILINEAR"),
                                         ("cubic-antialias", "BICUBIC")])
def test_antialiased_modes_are_torchvisions_resize(data_dir, ours, theirs):
    from PIL import Image

    transforms = _torchvision()
    mode = getattr(transforms.InterpolationMode, theirs)
    spec = Preprocessing(size=(224, 192), crop="none", interpolation=ours)
    opencv = Preprocessing(size=(224, 192), crop="none", interpolation=ours.split("-")[0])
    for path in _xrays(data_dir):
        gray = decode_file(path).pixels
        pil = np.asarray(transforms.Resize((224, 192), interpolation=mode)(Image.fromarray(gray)))
        tensor = transforms.Resize((224, 192), interpolation=mode, antialias=True)(
            _as_tensor(gray)).numpy()[0]
        kit = to_model_pixels(gray, spec)
        assert kit.shape == (224, 192) and kit.dtype == np.uint8
        assert np.array_equal(kit, pil), path.name  # the same filter on the same pixels
        # the tensor path computes in float (PIL rounds and clips between its two passes, where
        # a cubic overshoots): clipped to 8 bits, within a grey level but at a few edges
        tensor_diff = np.abs(kit - np.clip(tensor, 0, 255))
        assert tensor_diff.mean() <= 0.5 and np.percentile(tensor_diff, 99) <= 1.0, path.name
        aliased = np.abs(to_model_pixels(gray, opencv).astype(np.float64) - pil)
        assert aliased.mean() > 1.0, (path.name, aliased.mean())  # OpenCV's: not these pixels


def _as_tensor(gray: np.ndarray):
    import torch

    return torch.from_numpy(gray.astype(np.float32))[None]


def test_sixteen_bit_pixels_keep_their_type(data_dir):
    gray = decode_file(_xrays(data_dir, 1)[0]).pixels.astype(np.uint16) * 257
    spec = Preprocessing(size=64, crop="center-square", interpolation="linear-antialias")
    wide = to_model_pixels(gray, spec)
    narrow = to_model_pixels((gray // 257).astype(np.uint8), spec)
    assert wide.dtype == np.uint16 and wide.shape == (64, 64)
    assert np.abs(wide / 257.0 - narrow).max() <= 1.0


def test_the_gpu_graph_hands_antialiased_bundles_to_the_cpu():
    assert cannot_run(Preprocessing(size=224, interpolation="linear-antialias"))
    assert not cannot_run(Preprocessing(size=224, interpolation="area"))
