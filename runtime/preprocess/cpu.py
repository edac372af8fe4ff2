"""Preprocessing on the CPU: the same pixels for training, calibration, evaluation and triage.

MedMNIST made PneumoniaMNIST by cropping the centre square of each X-ray and resizing it, so a
full-size image goes through :func:`to_model_pixels` (crop + resize to the model's height x width)
and every batch through :func:`normalize` ((x * scale - mean) / std, per channel) before it
reaches a model. The crop is :meth:`Preprocessing.crop_box` (none, the centre square, or timm's
``center`` crop with ``crop_fraction``), the one definition every pixel path takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from runtime.contract.manifest import Preprocessing

_OPENCV = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}
#: PIL's filters: antialiased (their support widens with the shrink), as torchvision's Resize
_PIL = {"linear-antialias": Image.Resampling.BILINEAR,
        "cubic-antialias": Image.Resampling.BICUBIC}


def crop(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """The part of a (H, W) image that ``spec`` resizes to the model input (a view, no copy)."""
    top, left, crop_h, crop_w = spec.crop_box(*image.shape[:2])
    return image[top:top + crop_h, left:left + crop_w]


def to_model_pixels(gray: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """A (H, W) grayscale image -> (height, width) of the model, same dtype: crop, then resize."""
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    image = crop(gray, spec)
    if image.shape == spec.shape:
        return np.ascontiguousarray(image)
    if spec.interpolation in _PIL:
        return _pil_resize(image, spec)
    return cv2.resize(image, (spec.width, spec.height),
                      interpolation=_OPENCV[spec.interpolation])


def _pil_resize(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """PIL's antialiased resize, as torchvision's ``Resize`` runs it on a PIL image: 8-bit
    pixels as PIL's "L" image, others through its 32-bit float "F" image, rounded back."""
    size, resample = (spec.width, spec.height), _PIL[spec.interpolation]
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, resample))
    resized = np.asarray(Image.fromarray(image.astype(np.float32)).resize(size, resample))
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        resized = np.clip(np.rint(resized), info.min, info.max)
    return resized.astype(image.dtype)


def affine(spec: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """(gain, offset), float32 arrays of one value per channel, with
    ``x * gain - offset == (x * scale - mean) / std``: what every backend applies."""
    scale = np.float32(spec.scale)
    mean = np.asarray(spec.per_channel("mean"), np.float32)
    std = np.asarray(spec.per_channel("std"), np.float32)
    return scale / std, mean / std


def normalize(batch: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """(N, H, W) gray pixels -> (N, channels, H, W) float32 model input, each channel with its
    own mean and std (the gray image repeated when the model takes three channels)."""
    if batch.ndim != 3:
        raise ValueError(f"expected a (N, H, W) batch, got shape {batch.shape}")
    gain, offset = affine(spec)
    count, height, width = batch.shape
    out = np.empty((count, spec.channels, height, width), np.float32)
    out[:] = batch[:, None]
    out *= gain[:, None, None]
    out -= offset[:, None, None]
    return out


# --- reduced-decode support (added for the triage runner; the functions above are unchanged) ---

def area_weights(n_src: int, start: float, length: float, n_out: int) -> np.ndarray:
    """(n_out, n_src) box-filter weights: output i averages source [start + i*step, + step).

    ``start`` and ``length`` may be fractional, so a crop defined on the full-size image can be
    resampled exactly from a reduced (1/2, 1/4, 1/8) decode of it. With integer ``start`` and
    ``length`` these are the weights of OpenCV's ``INTER_AREA`` downscale.
    """
    edges = start + np.arange(n_out + 1, dtype=np.float64) * (length / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n_src, dtype=np.float64)[None, :]
    weights = np.clip(np.minimum(hi, pixel + 1.0) - np.maximum(lo, pixel), 0.0, None)
    total = weights.sum(axis=1, keepdims=True)
    total[total == 0] = 1.0
    return (weights / total).astype(np.float32)


@dataclass(frozen=True)
class Window:
    """A reduced image cut to the integer box around the model's (fractional) crop window.

    ``pixels`` is (h, w) uint8; the crop starts at ``y0``/``x0`` and spans ``ylen``/``xlen`` in
    the coordinates of ``pixels`` (fractional when the image was decoded at a reduced size).
    """

    pixels: np.ndarray
    y0: float
    x0: float
    ylen: float
    xlen: float

    def weights(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(ry (height, h), rx (w, width)) so that ``ry @ pixels @ rx`` is the area resize to
        the model's ``height`` x ``width``."""
        h, w = self.pixels.shape
        return (area_weights(h, self.y0, self.ylen, height),
                area_weights(w, self.x0, self.xlen, width).T)


def reduced_window(pixels: np.ndarray, width: int, height: int, reduction: int,
                   spec: Preprocessing) -> Window:
    """The crop of a full-size ``width`` x ``height`` image, located in its 1/``reduction`` decode."""
    top, left, crop_h, crop_w = spec.crop_box(height, width)
    r = float(reduction)
    y0, x0, ylen, xlen = top / r, left / r, crop_h / r, crop_w / r
    h, w = pixels.shape
    ys, xs = int(np.floor(y0)), int(np.floor(x0))
    ye, xe = min(h, int(np.ceil(y0 + ylen))), min(w, int(np.ceil(x0 + xlen)))
    return Window(pixels[ys:ye, xs:xe], y0 - ys, x0 - xs, ylen, xlen)


def resize_window(window: Window, spec: Preprocessing) -> np.ndarray:
    """Area-resample a :class:`Window` to the model's (height, width) uint8 (round half to even,
    like OpenCV)."""
    ry, rx = window.weights(*spec.shape)
    out = ry @ window.pixels.astype(np.float32) @ rx
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def model_pixels_from_decode(pixels: np.ndarray, width: int, height: int, reduction: int,
                             spec: Preprocessing) -> np.ndarray:
    """(height, width) uint8 model pixels from a possibly reduced decode of a full-size image.

    ``reduction == 1`` is exactly :func:`to_model_pixels`. A reduced decode is resampled with
    fractional area weights over the same crop window, so the geometry matches the full decode
    and only libjpeg's DCT-domain downscale differs (measured in tests/runtime/imaging/test_decode.py).
    """
    if reduction == 1 or spec.interpolation != "area":
        return to_model_pixels(pixels, spec)
    return resize_window(reduced_window(pixels, width, height, reduction, spec), spec)


def is_model_pixels(shape: tuple[int, ...], spec: Preprocessing) -> bool:
    """Whether source images of (N, H, W) ``shape`` are already ``spec``'s model pixels: the
    model's size, and a crop that keeps the whole image (a ``center`` crop of a model-size image
    still crops and resizes, as torchvision's ``Resize`` + ``CenterCrop`` would)."""
    height, width = shape[-2:]
    return (height, width) == spec.shape and spec.crop_box(height, width) == (0, 0, height, width)


def prepare_batch(images: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """(N, H, W) images -> (N, channels, height, width) float32 model input: each image is
    cropped and resized by :func:`to_model_pixels` unless it is already the model's pixels
    (:func:`is_model_pixels`), then normalised."""
    if not is_model_pixels(images.shape, spec):
        images = np.stack([to_model_pixels(image, spec) for image in images])
    return normalize(images, spec)
