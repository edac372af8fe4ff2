"""Non-square inputs and timm's ``center`` crop on real X-rays: the CPU backend against
torchvision's own ``Resize`` + ``CenterCrop``, the GPU graph (ONNX Runtime's CPU provider)
and reduced decodes against the CPU backend, and the one crop box every path takes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.contract.manifest import Preprocessing
from runtime.imaging.decode import decode_file
from runtime.preprocess.cpu import (
    is_model_pixels,
    model_pixels_from_decode,
    normalize,
    prepare_batch,
    reduced_window,
    to_model_pixels,
)
from runtime.preprocess.gpu import GpuPreprocessor

CENTER_224 = Preprocessing(size=224, crop="center", crop_fraction=0.875, interpolation="area")
WIDE = Preprocessing(size=(192, 256), crop="center", crop_fraction=0.875, interpolation="area")
#: stated tolerances against torchvision's two-step transform, per image, in grey levels: the
#: box is torchvision's up to half a source pixel, and PIL's filters are not OpenCV's (BOX is an
#: area average like INTER_AREA but rounds its sums otherwise; BILINEAR, torchvision's default,
#: is an antialiased triangle filter): under one level on average, a few at the 99th
#: percentile (burned-in letters, the sharpest edges, differ by more: no bound on the maximum)
TORCHVISION_MEAN_GREY = 1.0
TORCHVISION_P99_GREY = 5.0


def _xrays(data_dir, count: int = 6) -> list:
    return sorted((data_dir / "cxr_samples" / "NORMAL").glob("*.jpeg"))[:count]


def _import_vision():
    from converters.config.vision_libraries import import_vision

    return import_vision


def _transforms():
    return _import_vision()("torchvision.transforms")


def _torchvision(gray: np.ndarray, size: int, fraction: float, mode) -> np.ndarray:
    from PIL import Image

    T = _transforms()
    pipeline = T.Compose([T.Resize(int(size / fraction), interpolation=mode),
                          T.CenterCrop(size)])
    return np.asarray(pipeline(Image.fromarray(gray)))


def test_center_crop_matches_torchvision_resize_and_center_crop(data_dir):
    modes = _transforms().InterpolationMode
    box_means, bilinear_means = [], []
    for path in _xrays(data_dir):
        gray = decode_file(path).pixels
        ours = to_model_pixels(gray, CENTER_224).astype(np.float64)
        assert ours.shape == (224, 224)
        theirs = _torchvision(gray, 224, 0.875, modes.BOX).astype(np.float64)
        diff = np.abs(ours - theirs)
        box_means.append(diff.mean())
        bilinear = np.abs(ours - _torchvision(gray, 224, 0.875, modes.BILINEAR))
        bilinear_means.append(bilinear.mean())
        for d in (diff, bilinear):
            assert d.mean() <= TORCHVISION_MEAN_GREY, path.name
            assert np.percentile(d, 99) <= TORCHVISION_P99_GREY, path.name
        # not the whole image squashed, nor the largest square: those are far off
        square = to_model_pixels(gray, Preprocessing(size=224, crop="center-square"))
        assert np.abs(square - theirs).mean() > 2 * diff.mean()
    print(f"center 0.875 vs torchvision BOX: mean |d| per image {np.round(box_means, 3)}; "
          f"vs BILINEAR {np.round(bilinear_means, 3)} grey levels")


def test_non_square_center_crop_matches_timms_eval_transform(data_dir):
    """[192, 256] at 0.875: timm's ResizeKeepRatio to floor(192/f) x floor(256/f) = 219 x 292
    + CenterCrop(192, 256) (box filter), within the same tolerances as torchvision's above."""
    from PIL import Image

    import_vision = _import_vision()
    transforms = import_vision("torchvision.transforms")
    resize_keep_ratio = import_vision("timm.data.transforms").ResizeKeepRatio
    pipeline = transforms.Compose([resize_keep_ratio((219, 292), interpolation="box"),
                                   transforms.CenterCrop((192, 256))])
    for path in _xrays(data_dir):
        gray = decode_file(path).pixels
        ours = to_model_pixels(gray, WIDE).astype(np.float64)
        diff = np.abs(ours - np.asarray(pipeline(Image.fromarray(gray))))
        assert ours.shape == (192, 256)
        assert diff.mean() <= TORCHVISION_MEAN_GREY, path.name
        assert np.percentile(diff, 99) <= TORCHVISION_P99_GREY, path.name


def test_crop_box_definition():
    """The box is torchvision's Resize(int(size / f)) + CenterCrop(size) (timm's
    ResizeKeepRatio for a non-square input) mapped back to source pixels."""
    # a square input: the shorter side becomes int(224 / 0.875) = 256 (2000 x 1600 -> 320 x
    # 256), CenterCrop(224) starts at (48, 16) resized pixels of 6.25 source pixels each
    assert CENTER_224.crop_box(2000, 1600) == (300, 100, 1400, 1400)
    # timm's floor: 64 / 0.875 = 73.1 -> 73 (730 x 1000 -> 73 x 100, offset round(4.5) = 4, 18)
    assert Preprocessing(size=64, crop="center", crop_fraction=0.875).crop_box(730, 1000) == \
        (40, 180, 640, 640)
    # a non-square input: the image covers floor(192/f) x floor(256/f) = 219 x 292 keeping its
    # ratio (1000 x 1000 -> 292 x 292), then the central 192 x 256 (offset 50, 18)
    assert (math.floor(192 / 0.875), math.floor(256 / 0.875)) == (219, 292)
    step = 1000 / 292
    assert WIDE.crop_box(1000, 1000) == (round(50 * step), round(18 * step),
                                        round(192 * step), round(256 * step)) == (171, 62, 658, 877)
    # fraction 1: the largest central region of the input's shape
    full = Preprocessing(size=(192, 256), crop="center", crop_fraction=1.0)
    assert full.crop_box(600, 2000) == (0, 600, 600, 800)
    assert full.crop_box(1200, 1600) == (0, 0, 1200, 1600)


def test_model_size_images_are_still_cropped_by_center():
    image = (np.arange(224 * 224) % 251).astype(np.uint8).reshape(224, 224)
    assert not is_model_pixels(image[None].shape, CENTER_224)
    assert is_model_pixels(image[None].shape, Preprocessing(size=224, crop="none"))
    out = prepare_batch(image[None], CENTER_224)
    assert out.shape == (1, 1, 224, 224)
    assert not np.allclose(out, normalize(image[None], CENTER_224))


@pytest.mark.parametrize("spec", [WIDE, Preprocessing(size=(192, 256), crop="none"),
                                  Preprocessing(size=(256, 192), crop="center",
                                                crop_fraction=0.9)])
@pytest.mark.parametrize("reduce_to", [300, None])
def test_non_square_gpu_graph_and_reduced_decode_match_cpu(data_dir, spec, reduce_to):
    """[192, 256] (and its transpose): CPU pixels of the full decode, the CPU backend on a
    reduced decode, and the GPU graph on ONNX Runtime's CPU provider."""
    paths = _xrays(data_dir, 3) + sorted((data_dir / "cxr_samples" / "PNEUMONIA").glob("*.jpeg"))[:3]
    gpu = GpuPreprocessor(spec, ["CPUExecutionProvider"])
    windows, cpu_pixels, exact = [], [], []
    for path in paths:
        d = decode_file(path, min_side=min(spec.shape), reduce_to=reduce_to)
        windows.append(reduced_window(d.pixels, d.width, d.height, d.reduction, spec))
        cpu_pixels.append(model_pixels_from_decode(d.pixels, d.width, d.height, d.reduction, spec))
        exact.append(to_model_pixels(decode_file(path).pixels, spec))
    cpu = np.stack(cpu_pixels)
    assert cpu.shape == (len(paths), *spec.shape)
    cpu_inputs = normalize(cpu, spec)
    gpu_inputs = gpu(windows)
    assert gpu_inputs.shape == (len(paths), 1, *spec.shape)
    grey = np.abs(gpu_inputs - cpu_inputs) / (spec.scale / spec.std[0])
    assert grey.max() <= 1 + 1e-3  # the GPU graph's stated tolerance (test_gpu_preprocess.py)
    assert (grey > 0.5).mean() < 0.01
    reduced = np.abs(cpu.astype(np.int16) - np.stack(exact))
    assert reduced.mean() < (0.01 if reduce_to is None else 1.0)  # libjpeg's DCT downscale
