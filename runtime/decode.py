"""Image decoding for triage: JPEG/PNG/BMP/TIFF through OpenCV, DICOM through pydicom.

Every decoder returns a 2-D uint8 grayscale image (the model's pixel scale) or raises a
:class:`DecodeError` whose message says in plain words what is wrong with the file. The format
is chosen from the file's content (its signature), never from its name, and the pixel count is
checked from the header before any pixel is decoded (decompression-bomb guard).

JPEGs can be decoded at a reduced size (libjpeg DCT scaling, ``IMREAD_REDUCED_GRAYSCALE_2/4/8``)
chosen from the header so that the shorter side stays at least ``reduce_to`` pixels: for the
28x28 model this cuts decode time 2-3x; the difference it makes is measured in
``tests/runtime/test_decode.py`` on the real Kermany JPEGs (pixels and probabilities).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: file name suffixes the folder walk picks up (files without a suffix are sniffed for DICOM)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff",
                            ".dcm", ".dicom", ".dic"})
MAX_PIXELS = 80_000_000  # ~9000x9000: larger than any radiograph detector, far below a bomb
MAX_FILE_BYTES = 512 * 1024 * 1024
#: DICOM modalities that are projection radiographs (CR computed, DX digital, RG radiographic)
XRAY_MODALITIES = frozenset({"CR", "DX", "RG", "DR"})

_REDUCED = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
            4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


class DecodeError(ValueError):
    """A file that cannot be turned into an X-ray image; the message is meant for the user."""


@dataclass(frozen=True)
class Decoded:
    """A decoded grayscale image and how it was obtained."""

    pixels: np.ndarray  # (H, W) uint8, possibly reduced
    width: int  # original size, from the header
    height: int
    format: str  # "jpeg" | "png" | "bmp" | "tiff" | "dicom"
    reduction: int = 1  # 1, 2, 4 or 8 (JPEG reduced decode)


def sniff_format(head: bytes) -> str | None:
    """The image format a file's first bytes announce, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    return None


def jpeg_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, components) from a JPEG's SOF marker, without decoding."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            pos += 1  # tolerate fill bytes / junk between segments
            continue
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if pos + 10 > end:
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height, data[pos + 9]
        if marker in (0xDA, 0xD9):  # start of scan / end of image before any frame header
            break
        pos += 2 + length
    raise DecodeError("JPEG is corrupt: no frame header (SOF) before the image data")


def _header_size(fmt: str, data: bytes) -> tuple[int, int]:
    """(width, height) read from the header of a raster file."""
    if fmt == "jpeg":
        width, height, _ = jpeg_size(data)
        return width, height
    if fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise DecodeError("PNG is corrupt: its header (IHDR) is missing or truncated")
        return struct.unpack(">II", data[16:24])
    if fmt == "bmp":
        header_len = struct.unpack("<I", data[14:18])[0]
        if header_len == 12:  # OS/2 BITMAPCOREHEADER
            width, height = struct.unpack("<HH", data[18:22])
        else:
            width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    # TIFF: Pillow reads the first IFD lazily (no pixel decode)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"TIFF header declares a decompression bomb ({exc})") from exc
    except Exception as exc:
        raise DecodeError(f"TIFF is corrupt: its header cannot be read ({exc})") from exc


def reduction_for(width: int, height: int, min_side: int) -> int:
    """The largest JPEG reduction (8, 4, 2, 1) that keeps the shorter side >= ``min_side``."""
    short = min(width, height)
    for factor in (8, 4, 2):
        if -(-short // factor) >= min_side:  # libjpeg rounds scaled sizes up
            return factor
    return 1


def _check_size(width: int, height: int, min_side: int) -> None:
    if width <= 0 or height <= 0:
        raise DecodeError(f"image header declares an empty image ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise DecodeError(f"image header declares {width}x{height} pixels "
                          f"({width * height / 1e6:.0f} megapixels, limit {MAX_PIXELS / 1e6:.0f}): "
                          "refused as a possible decompression bomb")
    if min(width, height) < min_side:
        raise DecodeError(f"image is only {width}x{height} pixels, smaller than the model's "
                          f"{min_side}x{min_side} input: not a usable X-ray")


def _jpeg_complete(data: bytes) -> bool:
    """True when the JPEG ends with its end-of-image marker (padding after it tolerated)."""
    tail = data[-4096:].rstrip(b"\x00\r\n \t")
    return tail.endswith(b"\xff\xd9") or b"\xff\xd9" in tail[-64:]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Any grayscale array -> uint8: 8-bit kept, deeper data stretched min..max to 0..255."""
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float32)
    finite = np.isfinite(image)
    if not finite.all():
        image = np.where(finite, image, 0.0).astype(np.float32)
    low, high = float(image.min()), float(image.max())
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    out = (image - low) * np.float32(255.0 / (high - low))
    return np.rint(out).astype(np.uint8)


def to_gray(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR/BGRA/gray output -> 2-D grayscale of the same dtype (alpha dropped)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise DecodeError(f"unsupported pixel layout {image.shape}")


def _decode_raster(fmt: str, data: bytes, min_side: int, reduce_to: int | None) -> Decoded:
    width, height = _header_size(fmt, data)
    _check_size(width, height, min_side)
    buffer = np.frombuffer(data, np.uint8)
    if fmt == "jpeg":
        if not _jpeg_complete(data):
            raise DecodeError("JPEG is truncated: the file ends before the image does "
                              "(incomplete download or copy?)")
        factor = reduction_for(width, height, reduce_to) if reduce_to else 1
        image = cv2.imdecode(buffer, _REDUCED[factor])
        if image is None:
            raise DecodeError("JPEG is corrupt: OpenCV could not decode its image data")
        if width != height and image.shape[:2] == (-(-width // factor), -(-height // factor)):
            width, height = height, width  # OpenCV applied an EXIF rotation by 90 degrees
        return Decoded(image, width, height, fmt, factor)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DecodeError(f"{fmt.upper()} is corrupt or truncated: OpenCV could not decode it")
    return Decoded(to_uint8(to_gray(image)), width, height, fmt, 1)


def _dicom_label(ds) -> str:
    sop = ds.get("SOPClassUID")
    name = getattr(sop, "name", None) or str(sop or "unknown SOP class")
    return f"modality {ds.get('Modality', '?')}, {name}"


def _decode_dicom(data: bytes, min_side: int, force: bool) -> Decoded:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=force)
    except InvalidDicomError as exc:
        raise DecodeError(f"not a DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise DecodeError(f"DICOM is corrupt: pydicom could not parse it ({exc})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DecodeError(f"DICOM holds no image (no pixel data): {_dicom_label(ds)}")
    modality = str(ds.get("Modality", "")).upper()
    if modality not in XRAY_MODALITIES:
        raise DecodeError(f"DICOM is not a radiograph: {_dicom_label(ds)} "
                          f"(expected modality {'/'.join(sorted(XRAY_MODALITIES))})")
    body_part = str(ds.get("BodyPartExamined", "")).upper()
    if body_part and body_part not in ("CHEST", "THORAX", "LUNG", "PORTABLE CHEST"):
        raise DecodeError(f"DICOM is not a chest X-ray: body part examined is {body_part}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DecodeError(f"DICOM has {frames} frames (a cine or volume), not a single radiograph")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_size(cols, rows, min_side)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # missing handler for the transfer syntax, truncated pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        raise DecodeError(f"DICOM pixel data cannot be decoded ({what}): {exc}") from exc
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if samples == 3 or pixels.ndim == 3:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        pixels = cv2.cvtColor(np.ascontiguousarray(pixels).astype(np.uint8), cv2.COLOR_RGB2GRAY)
        return Decoded(pixels, cols, rows, "dicom")
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    transformed = "RescaleSlope" in ds or "ModalityLUTSequence" in ds or \
        "WindowCenter" in ds or "VOILUTSequence" in ds
    if transformed:
        pixels = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
    if pixels.dtype != np.uint8 or transformed:
        pixels = to_uint8(np.asarray(pixels))
    if photometric == "MONOCHROME1":  # high values are dark: invert to the usual display
        pixels = 255 - pixels
    return Decoded(np.ascontiguousarray(pixels), cols, rows, "dicom")


def _describe_unknown(data: bytes, path: Path) -> str:
    suffix = path.suffix.lower() or "(no suffix)"
    sample = data[:512]
    try:
        text = sample.decode("utf-8")
        printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
        if printable >= 0.95 * len(text):
            return f"file is text, not an image (named {suffix})"
    except UnicodeDecodeError:
        pass
    if sample.startswith((b"GIF87a", b"GIF89a")) or sample[8:12] == b"WEBP":
        return "image format not supported (GIF/WebP); use JPEG, PNG, BMP, TIFF or DICOM"
    return (f"not a recognised image: the content matches no JPEG, PNG, BMP, TIFF or DICOM "
            f"signature (named {suffix})")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file, with I/O failures turned into plain-words DecodeErrors."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError("not a regular file (a device, pipe or socket)")
        size = info.st_size
        if size > MAX_FILE_BYTES:
            raise DecodeError(f"file is {size / 2**20:.0f} MiB, over the "
                              f"{MAX_FILE_BYTES / 2**20:.0f} MiB limit for one image")
        with open(path, "rb") as handle:
            return handle.read()
    except PermissionError as exc:
        raise DecodeError("file cannot be read: permission denied") from exc
    except IsADirectoryError as exc:
        raise DecodeError("path is a directory, not a file") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DecodeError("symbolic link loop: the link never reaches a file") from exc
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise DecodeError("broken symbolic link: its target does not exist") from exc
        raise DecodeError(f"file cannot be read: {exc.strerror or exc}") from exc


def decode_bytes(data: bytes, path: str | os.PathLike = "", min_side: int = 1,
                 reduce_to: int | None = None) -> Decoded:
    """Decode an in-memory file into a uint8 grayscale image (see the module docstring).

    ``min_side``: images whose shorter side is smaller are refused. ``reduce_to``: decode a JPEG
    at the largest 1/2, 1/4, 1/8 reduction that keeps its shorter side >= this (None: full size).
    """
    path = Path(os.fsdecode(path))
    if not data:
        raise DecodeError("file is empty (0 bytes)")
    fmt = sniff_format(data[:132])
    if fmt is None and path.suffix.lower() in (".dcm", ".dicom", ".dic") and len(data) > 8:
        return _decode_dicom(data, min_side, force=True)  # DICOM without the 128-byte preamble
    if fmt is None:
        raise DecodeError(_describe_unknown(data, path))
    try:
        if fmt == "dicom":
            return _decode_dicom(data, min_side, force=False)
        return _decode_raster(fmt, data, min_side, reduce_to)
    except DecodeError:
        raise
    except (struct.error, IndexError) as exc:
        raise DecodeError(f"{fmt.upper()} header is truncated or corrupt") from exc
    except cv2.error as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise DecodeError(f"{fmt.upper()} cannot be decoded: {first}") from exc


def decode_file(path: str | os.PathLike, min_side: int = 1,
                reduce_to: int | None = None) -> Decoded:
    """Read and decode one file; every failure is a :class:`DecodeError`."""
    return decode_bytes(read_bytes(path), path, min_side, reduce_to)


def is_candidate(path: str | os.PathLike) -> bool:
    """Whether the folder walk should treat ``path`` as an input image.

    Known image suffixes are candidates whatever their content (a broken one becomes an error
    row); a file without a suffix is a candidate only when it carries the DICOM signature.
    """
    name = os.fsdecode(os.path.basename(path))
    suffix = os.path.splitext(name)[1].lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    if suffix or name.startswith("."):
        return False
    try:
        with open(path, "rb") as handle:
            return sniff_format(handle.read(132)) == "dicom"
    except OSError:
        return False
