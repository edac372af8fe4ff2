"""Per-channel normalisation: a 3-channel model gets the gray X-ray repeated, each channel with
its own mean and std, from the CPU path and the GPU graph (run on ONNX Runtime's CPU provider);
a one-channel model gets exactly the pixels it got before channels existed. Real X-rays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.contract.manifest import ContractError, Preprocessing, manifest_from_dict
from runtime.imaging.decode import decode_file
from runtime.preprocess.cpu import (
    model_pixels_from_decode,
    normalize,
    prepare_batch,
    reduced_window,
)
from runtime.preprocess.gpu import GpuPreprocessor
from tests.runtime.helpers import minimal_manifest_data

REPO = Path(__file__).resolve().parents[3]
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
#: float32 rounding of (x / 255 - mean) / std against x * (scale / std) - mean / std
FLOAT_TOLERANCE = 1e-5


def _kermany_224(data_dir: Path, step: int = 50) -> list[Path]:
    return sorted((data_dir / "kermany_test_224").rglob("*.jpeg"))[::step]


def _full_size(data_dir: Path, step: int = 25) -> list[Path]:
    return sorted((data_dir / "cxr_samples").rglob("*.jpeg"))[::step]


def _old_normalize(batch: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """normalize as it was before channels: the first mean/std only, one channel."""
    scale, mean, std = np.float32(spec.scale), np.float32(spec.mean[0]), np.float32(spec.std[0])
    out = batch.astype(np.float32)[:, None]
    out *= scale / std
    out -= mean / std
    return out


@pytest.mark.parametrize("card", ["reference/pneumonia_cnn.json", "clinical/clinical_cnn.json"])
def test_one_channel_is_bit_identical_to_before(data_dir, card):
    """Both reference models' preprocessing gives the very same floats as before."""
    card_data = json.loads((REPO / "models" / card).read_text())
    spec = Preprocessing.from_dict(card_data["preprocessing"])
    assert spec.channels == 1
    images = [decode_file(p).pixels for p in _full_size(data_dir) + _kermany_224(data_dir)]
    pixels = np.stack([model_pixels_from_decode(im, im.shape[1], im.shape[0], 1, spec)
                       for im in images])
    got = normalize(pixels, spec)
    assert got.shape == (len(images), 1, spec.size, spec.size) and got.dtype == np.float32
    assert np.array_equal(got, _old_normalize(pixels, spec))


def _torchvision_reference(gray: np.ndarray, mean, std) -> np.ndarray:
    """(3, H, W) by torchvision's own transforms on the decoded gray image when torchvision is
    installed; otherwise the same steps in numpy (ToTensor: x / 255 in float32; Normalize:
    (t - mean) / std per channel)."""
    from PIL import Image

    from converters.config.vision_libraries import import_vision

    try:
        transforms = import_vision("torchvision.transforms")
    except ImportError:
        unit = np.repeat((gray.astype(np.float32) / np.float32(255))[None], 3, axis=0)
        return (unit - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    size = gray.shape[0]
    pipeline = transforms.Compose([transforms.Grayscale(3), transforms.Resize(size),
                                   transforms.ToTensor(), transforms.Normalize(mean, std)])
    return pipeline(Image.fromarray(gray)).numpy()


def test_three_channels_match_torchvision_on_kermany(data_dir):
    """ImageNet mean/std on the 224 px Kermany X-rays (resize is the identity at 224)."""
    spec = Preprocessing(size=224, crop="none", channels=3, **IMAGENET)
    grays = [decode_file(p).pixels for p in _kermany_224(data_dir)]
    assert all(g.shape == (224, 224) for g in grays)
    got = prepare_batch(np.stack(grays), spec)
    assert got.shape == (len(grays), 3, 224, 224) and got.dtype == np.float32
    expected = np.stack([_torchvision_reference(g, IMAGENET["mean"], IMAGENET["std"])
                         for g in grays])
    assert np.abs(got - expected).max() <= FLOAT_TOLERANCE
    # each channel has its own statistics: the channels really differ
    assert np.abs(got[:, 0] - got[:, 2]).min() > 0.1


def test_three_channels_follow_the_formula_on_full_size_xrays(data_dir):
    """(x * scale - mean[c]) / std[c] on the model pixels of full-size X-rays, in float64."""
    spec = Preprocessing(size=64, channels=3, scale=1 / 255, **IMAGENET)
    pixels = np.stack([model_pixels_from_decode(d.pixels, d.width, d.height, 1, spec)
                       for d in (decode_file(p) for p in _full_size(data_dir))])
    got = normalize(pixels, spec)
    x = pixels.astype(np.float64)[:, None] * spec.scale
    expected = (x - np.array(spec.mean)[:, None, None]) / np.array(spec.std)[:, None, None]
    assert got.shape == (len(pixels), 3, 64, 64)
    assert np.abs(got - expected).max() <= FLOAT_TOLERANCE


def test_one_value_serves_every_channel(data_dir):
    gray = decode_file(_kermany_224(data_dir)[0]).pixels[None]
    out = normalize(gray, Preprocessing(size=224, crop="none", channels=3, mean=(0.5,), std=(0.5,)))
    one = normalize(gray, Preprocessing(size=224, crop="none"))
    assert out.shape == (1, 3, 224, 224)
    for channel in range(3):
        assert np.array_equal(out[:, channel], one[:, 0])


@pytest.mark.parametrize("reduce_to", [None, 112])
def test_gpu_graph_gives_the_cpu_channels(data_dir, reduce_to):
    """The GPU graph (CPU provider) on real X-rays of mixed sizes in one padded batch: the CPU
    path's tensor within one grey level per pixel (the bound of the one-channel test)."""
    spec = Preprocessing(size=64, crop="center-square", channels=3, **IMAGENET)
    windows, pixels = [], []
    for path in _full_size(data_dir) + _kermany_224(data_dir, 100):
        d = decode_file(path, min_side=spec.size, reduce_to=reduce_to)
        windows.append(reduced_window(d.pixels, d.width, d.height, d.reduction, spec))
        pixels.append(model_pixels_from_decode(d.pixels, d.width, d.height, d.reduction, spec))
    cpu = normalize(np.stack(pixels), spec)
    gpu = GpuPreprocessor(spec, ["CPUExecutionProvider"])(windows)
    assert gpu.shape == cpu.shape == (len(windows), 3, 64, 64) and gpu.dtype == np.float32
    gain = (spec.scale / np.array(spec.std, np.float32))[None, :, None, None]
    grey = np.abs(gpu - cpu) / gain
    assert grey.max() <= 1 + 1e-3
    assert (grey > 0.5).mean() < 0.01  # ties are rare: nearly every value is the CPU's exactly
    assert GpuPreprocessor(spec, ["CPUExecutionProvider"])([]).shape == (0, 3, 64, 64)


@pytest.mark.parametrize("values, key", [
    (dict(channels=3, mean=(0.485, 0.456), std=IMAGENET["std"]), "mean has 2 values for 3"),
    (dict(channels=1, **IMAGENET), "mean has 3 values for 1"),
    (dict(channels=3, mean=(0.5,), std=(0.2, 0.3)), "std has 2 values for 3"),
    (dict(channels=2), "channels is 2; expected 1 .gray. or 3"),
])
def test_bad_channel_statistics_are_refused(values, key):
    with pytest.raises(ValueError, match=key):
        Preprocessing(**values)


def test_manifest_reads_channels_and_refuses_what_disagrees():
    """The manifest contract reads channels (absent: 1), refuses a bad mean/std length naming
    the key and the fix, and refuses an input shape whose channels disagree."""
    assert manifest_from_dict(minimal_manifest_data({"size": 28})).preprocessing.channels == 1
    three = manifest_from_dict(minimal_manifest_data({"size": 28, "channels": 3, **IMAGENET}, 3))
    assert three.preprocessing.channels == 3 and three.preprocessing.mean == IMAGENET["mean"]
    with pytest.raises(ContractError, match=r"preprocessing is invalid: mean has 3 values for 1 "
                                            r"channel\(s\); give one value, or one per channel"):
        manifest_from_dict(minimal_manifest_data({"size": 28, **IMAGENET}))
    with pytest.raises(ContractError, match=r"model.input.shape \[-1, 1, 28, 28\] has 1 "
                                            r"channel\(s\), preprocessing.channels is 3"):
        manifest_from_dict(minimal_manifest_data({"size": 28, "channels": 3}, 1))
