"""Pixels as the decoders hand them on: the decoded image, a header probe, conversion to 8-bit
gray, and the colour measure the scope rules read."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from runtime.errors import DecodeError

#: rows converted at a time when stretching deep images to 8 bits (bounds temporary memory)
CHUNK_PIXELS = 1 << 20


_COPY_AGAIN = "copy the file again from its source"


def damaged(what: str, detail: str = "") -> DecodeError:
    """The error for a file whose image data the decoder found corrupt or incomplete."""
    return DecodeError(f"image data is damaged: {what}; {_COPY_AGAIN}", detail)


@dataclass(frozen=True)
class Decoded:
    """A decoded grayscale image and how it was obtained."""

    pixels: np.ndarray  # (H, W) uint8, possibly reduced
    width: int  # original size, from the header (after EXIF rotation)
    height: int
    format: str  # "jpeg" | "png" | "bmp" | "tiff" | "dicom"
    reduction: int = 1  # 1, 2, 4 or 8 (JPEG reduced decode)
    chroma: float = 0.0  # colour before the gray conversion (see colour_chroma); 0 for gray files
    tags: dict[str, str] = field(default_factory=dict)  # DICOM header facts (see runtime.imaging.dicom)
    sha256: str = ""  # of the file's bytes, where the decoder read a file (runtime.imaging.decode)


@dataclass
class Probe:
    """What a file's header says, read before any pixel is decoded."""

    format: str
    width: int
    height: int
    decode_bytes: int  # estimated peak memory of decoding it (besides the file's own bytes)
    reduction: int = 1
    info: dict = field(default_factory=dict)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Any grayscale array -> uint8: 8-bit kept, deeper data stretched min..max to 0..255.

    Works in blocks of rows so that a deep image needs only its own size plus the 8-bit output
    (non-finite float values count as 0).
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * np.uint8(255)
    rows = max(1, CHUNK_PIXELS // max(1, image.shape[1] if image.ndim > 1 else 1))
    floating = image.dtype.kind in "fc"
    if image.dtype.kind == "c":
        image = np.abs(image)
    low, high = np.inf, -np.inf
    for start in range(0, image.shape[0], rows):
        block = image[start:start + rows]
        if floating:
            block = np.where(np.isfinite(block), block, 0)
        if block.size:
            low, high = min(low, float(block.min())), max(high, float(block.max()))
    out = np.zeros(image.shape, np.uint8)
    if not high > low:
        return out
    scale = 255.0 / (high - low)
    for start in range(0, image.shape[0], rows):
        block = image[start:start + rows].astype(np.float64)
        if floating:
            block[~np.isfinite(block)] = 0.0
        block -= low
        block *= scale
        np.rint(block, out=block)
        out[start:start + rows] = block
    return out


#: longest side of the subsample on which colour_chroma measures colour
_CHROMA_SIDE = 256


def colour_chroma(image: np.ndarray) -> float:
    """Mean colourfulness of an RGB(A) image: max - min of R, G, B per pixel, in 8-bit units.

    0 for a gray image (2-D, 1-2 channels, or R = G = B); measured on a strided subsample.
    """
    if image.ndim != 3 or image.shape[2] < 3:
        return 0.0
    step = max(1, -(-max(image.shape[:2]) // _CHROMA_SIDE))
    sample = image[::step, ::step, :3].astype(np.float32)
    if image.dtype.kind in "ui" and image.dtype.itemsize > 1:
        sample *= 255.0 / float(np.iinfo(image.dtype).max)
    elif image.dtype.kind == "f":
        sample *= 255.0 / max(1e-12, float(np.nanmax(np.abs(sample))) or 1.0)
    spread = np.nan_to_num(sample.max(axis=2) - sample.min(axis=2))
    return float(spread.mean())


def gray_and_chroma(image: np.ndarray, order: str = "rgb") -> tuple[np.ndarray, float]:
    """:func:`to_gray` and :func:`colour_chroma` of the same image."""
    return to_gray(image, order), colour_chroma(image)


def to_gray(image: np.ndarray, order: str = "rgb") -> np.ndarray:
    """(H, W), (H, W, 1|2|3|4) in RGB(A) or BGR(A) order -> (H, W) gray of the same dtype.

    Alpha is dropped; a 2-channel image is gray + alpha.
    """
    import cv2

    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise DecodeError(f"unsupported pixel layout: {image.shape[2] if image.ndim == 3 else '?'}"
                          " samples per pixel; only grayscale and RGB images can be triaged")
    if image.shape[2] <= 2:
        return np.ascontiguousarray(image[:, :, 0])
    alpha = image.shape[2] == 4
    if image.dtype in (np.uint8, np.uint16, np.float32):  # converted in place: no colour copy
        colour = np.ascontiguousarray(image)
    else:
        colour, alpha = image[:, :, :3].astype(np.float32), False
    rgb = order == "rgb"
    code = (cv2.COLOR_RGBA2GRAY if rgb else cv2.COLOR_BGRA2GRAY) if alpha else \
        (cv2.COLOR_RGB2GRAY if rgb else cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(colour, code)
