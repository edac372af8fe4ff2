"""crop="none" (squash the whole image to a square, as the Kermany 224 files were made) is honoured
by every preprocessing path: to_model_pixels, prepare_batch, the reduced-decode window used by
triage, and the GPU preprocessing graph (run on ONNX Runtime's CPU provider), on real X-rays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.contract.manifest import Preprocessing
from runtime.imaging.decode import decode_file
from runtime.preprocess.cpu import (
    model_pixels_from_decode,
    normalize,
    prepare_batch,
    reduced_window,
    to_model_pixels,
)
from runtime.preprocess.gpu import GpuPreprocessor

SQUASH = Preprocessing(size=128, crop="none", interpolation="area")


def _full_size(data_dir, step: int = 25):
    """Real full-size X-rays, most of them far from square."""
    return sorted((data_dir / "cxr_samples").rglob("*.jpeg"))[::step]


def test_whole_image_is_squashed_not_cropped(data_dir):
    for path in _full_size(data_dir):
        gray = decode_file(path).pixels
        out = to_model_pixels(gray, SQUASH)
        assert out.shape == (128, 128) and out.dtype == np.uint8
        expected = cv2.resize(gray, (128, 128), interpolation=cv2.INTER_AREA)
        assert np.array_equal(out, expected)
        h, w = gray.shape
        if abs(h - w) > 0.1 * min(h, w):  # a centre crop would give other pixels
            cropped = to_model_pixels(gray, Preprocessing(size=128))
            assert np.abs(cropped.astype(int) - out.astype(int)).mean() > 2


def test_prepare_batch_squashes(data_dir):
    gray = decode_file(_full_size(data_dir)[0]).pixels
    batch = np.stack([cv2.resize(gray, (300, 200)), cv2.resize(gray[::-1], (300, 200))])
    expected = np.stack([cv2.resize(im, (128, 128), interpolation=cv2.INTER_AREA) for im in batch])
    assert np.array_equal(prepare_batch(batch, SQUASH), normalize(expected, SQUASH))


def test_reduced_decode_window_covers_the_whole_image(data_dir):
    for path in _full_size(data_dir):
        full = decode_file(path, min_side=128)
        reduced = decode_file(path, min_side=128, reduce_to=256)
        window = reduced_window(reduced.pixels, reduced.width, reduced.height, reduced.reduction,
                                SQUASH)
        assert window.pixels.shape == reduced.pixels.shape  # nothing cut away
        a = model_pixels_from_decode(full.pixels, full.width, full.height, 1, SQUASH).astype(int)
        b = model_pixels_from_decode(reduced.pixels, reduced.width, reduced.height,
                                     reduced.reduction, SQUASH).astype(int)
        # same geometry (a shifted or cropped window would differ everywhere): only libjpeg's
        # DCT-domain downscale differs, a few grey levels at sharp edges (burnt-in text)
        diff = np.abs(a - b)
        assert diff.mean() < 1.0 and (diff > 8).mean() < 0.01


@pytest.mark.parametrize("reduce_to", [256, None])
def test_gpu_graph_squashes_like_the_cpu_path(data_dir, reduce_to):
    gpu = GpuPreprocessor(SQUASH, ["CPUExecutionProvider"])
    paths = _full_size(data_dir) + sorted((data_dir / "kermany_test_224").rglob("*.jpeg"))[::150]
    windows, cpu = [], []
    for path in paths:
        d = decode_file(path, min_side=SQUASH.size, reduce_to=reduce_to)
        windows.append(reduced_window(d.pixels, d.width, d.height, d.reduction, SQUASH))
        cpu.append(model_pixels_from_decode(d.pixels, d.width, d.height, d.reduction, SQUASH))
    grey = np.abs(gpu(windows) - normalize(np.stack(cpu), SQUASH)) / (SQUASH.scale / SQUASH.std[0])
    assert grey.max() <= 1 + 1e-3
