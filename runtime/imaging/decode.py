"""Image decoding for triage: a file's bytes -> one 2-D uint8 grayscale image, or a plain error.

Every decoder returns a :class:`Decoded` or raises :class:`DecodeError`, whose message says in
plain words what is wrong with the file (and what to do); library detail goes to ``detail``, for
the log. The format is chosen from the file's content (:mod:`runtime.imaging.sniff`), never from its name;
only regular files are opened; the pixel count and the decode memory are checked from the header
before any pixel is decoded (:mod:`runtime.imaging.limits`).

Decoders, chosen so that the same bytes always give the same pixels (no decoder state shared
between files or threads) and so that damaged data is an error, not a quiet guess:

- JPEG (8-bit, Huffman or arithmetic coded): libjpeg-turbo through ``simplejpeg`` in strict mode
  (every libjpeg warning, e.g. "Corrupt JPEG data", "Premature end of JPEG file", is an error),
  with DCT scaling: a large JPEG is decoded at 1/2, 1/4 or 1/8 size keeping its shorter side >=
  ``reduce_to`` pixels. Junk bytes between header segments are dropped before decoding, and so are
  the "extraneous bytes before marker" libjpeg skips after a scan (then decoded strictly again);
  data after the end marker is ignored. 12-bit and lossless JPEG: libjpeg-turbo through
  ``imagecodecs``; JPEG-LS: CharLS through ``imagecodecs``. Hierarchical JPEG (no decoder in
  libjpeg-turbo) is refused naming it. EXIF orientation is applied.
- PNG: libpng through ``imagecodecs`` (CRC of the image data checked; 16-bit colour kept).
- TIFF: ``tifffile`` + ``imagecodecs`` (any compression incl. LZMA, Zstd, WebP, JPEG; planar,
  16-bit, float); the first page is the image.
- BMP: Pillow (1/4/8-bit palette, RLE, 16/24/32-bit, bit fields, OS/2 and V4/V5 headers); the
  bit-field layouts Pillow refuses by :mod:`runtime.imaging.bmp`.
- DICOM: pydicom + pylibjpeg plugins, see :mod:`runtime.imaging.dicom`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import os
import re
import stat
import struct
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from runtime.errors import DecodeError
from runtime.imaging.limits import MAX_FILE_BYTES, MAX_PIXELS, BudgetExceeded, MemoryBudget
from runtime.imaging.pixels import (
    CHUNK_PIXELS,
    Decoded,
    Probe,
    colour_chroma,
    damaged,
    gray_and_chroma,
    to_uint8,
)
from runtime.imaging.pool import clock_paused
from runtime.imaging.sniff import HEAD_BYTES, describe_unknown, sniff_format

#: suffixes of DICOM files, which may lack the 128-byte preamble + "DICM" (read with force)
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
_JPEG_SOF = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive", 0xC3: "lossless",
             0xC5: "hierarchical", 0xC6: "hierarchical", 0xC7: "hierarchical",
             0xC9: "arithmetic", 0xCA: "arithmetic", 0xCB: "lossless", 0xCD: "hierarchical",
             0xCE: "hierarchical", 0xCF: "hierarchical", 0xF7: "JPEG-LS"}


# ---------------------------------------------------------------------------------------------
# opening files: regular files only, never blocking


def open_regular(path: str | os.PathLike) -> tuple[io.BufferedReader, int]:
    """A binary reader on ``path`` and its size; only regular files are ever opened.

    The file type is checked with stat before opening (a FIFO, socket or device is refused
    whatever its name) and again on the open descriptor; the open uses O_NONBLOCK so that even a
    FIFO swapped in between cannot block.
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError(f"not a regular file (it is {_file_kind(info.st_mode)}): only image "
                              "files can be triaged")
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | \
            getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except DecodeError:
        raise
    except PermissionError as exc:
        raise DecodeError("file cannot be read: permission denied; ask for read access") from exc
    except IsADirectoryError as exc:
        raise DecodeError("path is a directory, not a file") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DecodeError("symbolic link loop: the link never reaches a file") from exc
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise DecodeError("broken symbolic link: its target does not exist") from exc
        if exc.errno == errno.ENOENT:
            raise DecodeError("file disappeared while the folder was being triaged") from exc
        raise DecodeError(f"file cannot be read: {exc.strerror or 'input/output error'}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise DecodeError(f"not a regular file (it is {_file_kind(info.st_mode)}): only image "
                          "files can be triaged")
    if info.st_size > MAX_FILE_BYTES:
        os.close(fd)
        raise DecodeError(f"file is {info.st_size / 2**20:.0f} MiB, over the "
                          f"{MAX_FILE_BYTES / 2**20:.0f} MiB limit for one image")
    return os.fdopen(fd, "rb"), info.st_size


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a plain file"


def _read_rest(handle: io.BufferedReader, size: int) -> bytes:
    handle.seek(0)
    try:
        data = handle.read(min(size, MAX_FILE_BYTES) + 1)
    except OSError as exc:
        raise DecodeError(f"file cannot be read: {exc.strerror or 'input/output error'}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise DecodeError(f"file is over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit for one image")
    return data


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file (a regular file only), with I/O failures as plain-words DecodeErrors."""
    handle, size = open_regular(path)
    with handle:
        return _read_rest(handle, size)


# ---------------------------------------------------------------------------------------------
# headers


def _jpeg_segments(handle: io.BufferedReader) -> Iterator[tuple[int, int, int, int]]:
    """(marker, segment start, payload start, payload length) of each header segment up to SOS.

    Fill bytes and junk between segments are skipped (the caller sees the gaps).
    """
    handle.seek(2)
    pos = 2
    while True:
        byte = handle.read(1)
        if not byte:
            return
        if byte != b"\xff":
            pos += 1
            continue
        marker_byte = handle.read(1)
        if not marker_byte:
            return
        marker = marker_byte[0]
        if marker == 0xFF:  # fill byte: the marker follows
            handle.seek(pos + 1)
            pos += 1
            continue
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
            continue
        raw = handle.read(2)
        if len(raw) < 2:
            return
        (length,) = struct.unpack(">H", raw)
        yield marker, pos, pos + 4, length - 2
        if marker in (0xDA, 0xD9):
            return
        pos += 2 + length
        handle.seek(pos)


def jpeg_header(handle: io.BufferedReader) -> dict:
    """SOF fields, EXIF orientation and header junk of a JPEG, read without decoding."""
    found: dict = {"junk": False}
    expected = 2
    for marker, start, payload, length in _jpeg_segments(handle):
        if start != expected:
            found["junk"] = True
        expected = payload + length
        if marker in _JPEG_SOF and "width" not in found:
            handle.seek(payload)
            sof = handle.read(6)
            if len(sof) < 6:
                break
            precision, height, width, components = struct.unpack(">BHHB", sof)
            found.update(process=_JPEG_SOF[marker], precision=precision, height=height,
                         width=width, components=components)
        elif marker == 0xE1 and "orientation" not in found:
            handle.seek(payload)
            found["orientation"] = _exif_orientation(handle.read(min(length, 65533)))
        elif marker == 0xDA:
            found["sos"] = start
            return found
    if "width" not in found:
        raise damaged("the JPEG has no frame header (SOF) before its image data")
    raise damaged("the JPEG ends before its image data starts")


def jpeg_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, components) from a JPEG's SOF marker, without decoding."""
    header = jpeg_header(io.BufferedReader(io.BytesIO(data)))
    return header["width"], header["height"], header["components"]


def _exif_orientation(app1: bytes) -> int:
    """The EXIF orientation (1-8) in an APP1 payload; 1 when absent or unreadable."""
    if not app1.startswith(b"Exif\x00\x00") or len(app1) < 14:
        return 1
    tiff = app1[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 1
    try:
        (offset,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[offset:offset + 2])
        for i in range(count):
            entry = tiff[offset + 2 + 12 * i: offset + 14 + 12 * i]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112 and kind == 3:
                value = struct.unpack(order + "H", entry[8:10])[0]
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def reduction_for(width: int, height: int, min_side: int) -> int:
    """The largest JPEG reduction (8, 4, 2, 1) that keeps the shorter side >= ``min_side``."""
    short = min(width, height)
    for factor in (8, 4, 2):
        if -(-short // factor) >= min_side:  # libjpeg rounds scaled sizes up
            return factor
    return 1


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def raster_estimate(width: int, height: int, channels: int, item: int) -> int:
    """Peak decode memory of a decoded image: the larger of (its pixels + their gray conversion,
    for a colour or gray+alpha image) and (the gray + the uint8 result of a deeper image), plus
    the decoder's own buffers (1/32 of the pixels' size) and the row blocks of :func:`to_uint8`.
    Measured with ``python -m benchmarks.memory --kind png16rgba --megapixels 79.9``: 821 MiB
    over the baseline for 816 MiB reserved (files + estimates), before the 1/32 was added."""
    pixels = width * height
    decoded = pixels * channels * item
    gray = pixels * item if channels >= 2 else 0
    out = pixels if item > 1 else 0
    return max(decoded + gray, (gray or decoded) + out) + decoded // 32 + 16 * CHUNK_PIXELS


def _probe(fmt: str, handle: io.BufferedReader, head: bytes, size: int,
           reduce_to: int | None, force_dicom: bool) -> Probe:
    """The header of a file in format ``fmt`` and its decode memory estimate."""
    if fmt == "jpeg":
        header = jpeg_header(handle)
        width, height = header["width"], header["height"]
        deep = header["precision"] > 8 or header["process"] in ("lossless", "JPEG-LS")
        factor = reduction_for(width, height, reduce_to) if reduce_to and not deep else 1
        pixels = -(-width // factor) * -(-height // factor)
        per_pixel = 2 * header["components"] * (2 if deep else 1) + 2
        if header.get("orientation", 1) >= 5:
            width, height = height, width
        return Probe(fmt, width, height, pixels * per_pixel, factor, header)
    if fmt == "png":
        if len(head) < 29 or head[12:16] != b"IHDR":
            raise damaged("the PNG header (IHDR) is missing or cut short")
        width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
        channels = _PNG_CHANNELS.get(colour, 4)
        item = 2 if depth == 16 else 1
        return Probe(fmt, width, height, raster_estimate(width, height, channels, item))
    if fmt == "bmp":
        (header_len,) = struct.unpack("<I", head[14:18])
        if header_len == 12:  # OS/2 BITMAPCOREHEADER
            width, height = struct.unpack("<HH", head[18:22])
        else:
            width, height = struct.unpack("<ii", head[18:26])
        width, height = abs(width), abs(height)
        return Probe(fmt, width, height, width * height * 10)
    if fmt == "tiff":
        return _probe_tiff(handle)
    from runtime.imaging.dicom import probe_dicom

    return probe_dicom(handle, force_dicom)


def _probe_tiff(handle: io.BufferedReader) -> Probe:
    import tifffile

    try:
        with tifffile.TiffFile(handle, name="image.tif") as tif:
            page = tif.pages.first
            width, height = int(page.imagewidth), int(page.imagelength)
            samples = int(page.samplesperpixel)
            item = int(np.dtype(page.dtype).itemsize) if page.dtype is not None else 8
            info = {"compression": getattr(page.compression, "name", str(page.compression))}
    except DecodeError:
        raise
    except Exception as exc:
        raise damaged("the TIFF header (its first image directory) cannot be read",
                      f"{type(exc).__name__}: {exc}") from exc
    decoded = width * height * samples * item
    return Probe("tiff", width, height, 2 * decoded + 6 * width * height, info=info)


def check_size(width: int, height: int, min_side: int) -> None:
    """Refuse empty, bomb-sized and too-small images from their header size."""
    if width <= 0 or height <= 0:
        raise DecodeError(f"image header declares an empty image ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise DecodeError(f"image header declares {width}x{height} pixels "
                          f"({width * height / 1e6:.0f} megapixels, limit {MAX_PIXELS / 1e6:.0f}): "
                          "refused as a possible decompression bomb")
    if min(width, height) < min_side:
        raise DecodeError(f"image is only {width}x{height} pixels, smaller than the model's "
                          f"{min_side}x{min_side} input: not a usable X-ray")


# ---------------------------------------------------------------------------------------------
# pixels -> grayscale uint8


# ---------------------------------------------------------------------------------------------
# decoders


def _decode_jpeg(data: bytes, probe: Probe) -> tuple[np.ndarray, float]:
    """Gray pixels and colour chroma (a colour JPEG's chroma measured on a 1/8 size decode)."""
    header = probe.info
    if header["process"] == "hierarchical":
        raise DecodeError("format not supported: hierarchical JPEG (SOF5-7), which libjpeg-turbo, "
                          "the runner's JPEG decoder, does not decode; save the image as PNG or "
                          "as a baseline JPEG")
    if header["process"] == "JPEG-LS":
        import imagecodecs

        try:
            image, chroma = gray_and_chroma(imagecodecs.jpegls_decode(data))
        except Exception as exc:
            raise damaged(f"the JPEG-LS data is corrupt ({' '.join(str(exc).split())})",
                          f"CharLS: {exc}") from exc
        return image, chroma
    if header["junk"]:  # extra bytes between header segments: harmless, dropped
        data = _jpeg_without_header_junk(data)
    if header["precision"] == 8 and header["process"] != "lossless":
        import simplejpeg

        factor = probe.reduction
        raw_w, raw_h = header["width"], header["height"]

        def gray(jpeg: bytes) -> np.ndarray:
            return simplejpeg.decode_jpeg(jpeg, colorspace="GRAY", strict=True,
                                          min_factor=factor, min_width=-(-raw_w // factor),
                                          min_height=-(-raw_h // factor))[:, :, 0]

        try:
            image, data = _without_extraneous_bytes(gray, data)
            chroma = colour_chroma(simplejpeg.decode_jpeg(data, colorspace="RGB", min_factor=8)) \
                if header.get("components", 1) >= 3 else 0.0
        except ValueError as exc:
            raise _jpeg_error(str(exc)) from exc
    else:
        import imagecodecs

        try:
            image, chroma = gray_and_chroma(imagecodecs.jpeg8_decode(data))
        except Exception as exc:
            raise _jpeg_error(str(exc)) from exc
    orientation = header.get("orientation", 1)
    if orientation != 1:
        image = np.ascontiguousarray(_orient(image, orientation))
    return image, chroma


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2-8) to a decoded image."""
    return {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
            5: lambda a: a.T, 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].T,
            8: lambda a: np.rot90(a, 1)}.get(orientation, lambda a: a)(image)


def _jpeg_without_header_junk(data: bytes) -> bytes:
    """The JPEG with bytes between its header segments (before the scan) removed."""
    parts = [data[:2]]
    handle = io.BufferedReader(io.BytesIO(data))
    for marker, start, payload, length in _jpeg_segments(handle):
        if marker == 0xDA:
            parts.append(data[start:])
            break
        parts.append(data[start:payload + length])
    return b"".join(parts)


#: libjpeg's warning for bytes it skips between the end of a segment or scan and the next marker
_EXTRANEOUS = re.compile(r"(\d+) extraneous bytes before marker 0x([0-9a-fA-F]{2})")
#: at most this many runs of extraneous bytes are removed from one file
_MAX_EXTRANEOUS_RUNS = 8


def _without_extraneous_bytes(decode: Callable[[bytes], np.ndarray],
                              data: bytes) -> tuple[np.ndarray, bytes]:
    """``decode(data)`` (a strict decode) and the bytes it decoded; when libjpeg reports "N
    extraneous bytes before marker 0xMM" (bytes some writers leave between compressed data and
    the next marker, which every viewer skips, as libjpeg does), those N bytes are removed and the
    strict decode repeated, so the pixels are those of a lenient decode while any other damage
    still fails. ValueError when the bytes cannot be found or other damage remains."""
    for _ in range(_MAX_EXTRANEOUS_RUNS):
        try:
            return decode(data), data
        except ValueError as exc:
            found = _EXTRANEOUS.search(str(exc))
            if found is None:
                raise
            data = _drop_extraneous(decode, data, int(found[1]), int(found[2], 16), str(exc))
    return decode(data), data


def _drop_extraneous(decode: Callable[[bytes], np.ndarray], data: bytes, count: int, marker: int,
                     message: str) -> bytes:
    """``data`` without the ``count`` bytes libjpeg skipped before ``marker``: the first place
    after the first scan starts where removing them changes what the strict decode says."""
    scan = data.find(b"\xff\xda")
    code = bytes([0xFF, marker])
    position = data.find(code, max(scan, 0))
    while position >= 0:
        start = position - count
        if start > scan >= 0 and b"\xff" not in data[start:position]:
            candidate = data[:start] + data[position:]
            try:
                decode(candidate)
                return candidate
            except ValueError as exc:
                if str(exc) != message:
                    return candidate
        position = data.find(code, position + 2)
    raise ValueError(message)


def _jpeg_error(message: str) -> DecodeError:
    text = " ".join(message.split())
    lower = text.lower()
    if "premature end" in lower and "segment" not in lower:
        return damaged("the JPEG ends before its image data does (incomplete download or copy?)",
                       text)
    if "corrupt" in lower or "premature" in lower or "huffman" in lower or "marker" in lower:
        return damaged(f"the JPEG's compressed data is corrupt ({text.rstrip('.')})", text)
    if "unsupported" in lower or "not supported" in lower:
        return DecodeError(f"format not supported: this JPEG variant cannot be decoded ({text}); "
                           "save the image as PNG or as a baseline JPEG", text)
    return damaged(f"the JPEG cannot be decoded ({text.rstrip('.')})", text)


def _png_chunk_damage(data: bytes) -> DecodeError | None:
    """A cut or checksum-failing critical chunk, found before libpng sees the file.

    imagecodecs' ``png_decode`` leaks its row buffers (~1.8 MB for a full-size X-ray, measured)
    each time libpng fails on the data; a long-running service fed damaged PNGs would grow without
    bound. The common damage (a cut file, a corrupt critical chunk) is caught here from the chunk
    lengths and CRCs; a file whose CRCs are valid but whose compressed data is not still reaches
    libpng.
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None  # libpng names a bad signature itself (before allocating anything)
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return damaged("the PNG ends before its image data does (incomplete download or "
                           "copy?)", f"{kind!r} chunk at byte {pos} needs {length} bytes")
        if kind[:1].isupper():  # critical chunk (IHDR, PLTE, IDAT, IEND): CRC must match
            stored = struct.unpack(">I", data[end - 4:end])[0]
            if zlib.crc32(data[pos + 4:end - 4]) != stored:
                what = "image data" if kind == b"IDAT" else f"{kind.decode('latin-1')} chunk"
                return damaged(f"the PNG's {what} fails its checksum (CRC)",
                               f"{kind!r} chunk at byte {pos}")
        if kind == b"IEND":
            return None
        pos = end
    return None


def _decode_png(data: bytes) -> tuple[np.ndarray, float]:
    import imagecodecs

    problem = _png_chunk_damage(data)
    if problem is not None:
        raise problem
    try:
        image = imagecodecs.png_decode(data)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if "too small" in text or "incomplete" in text:
            raise damaged("the PNG ends before its image data does (incomplete download or "
                          "copy?)", text) from exc
        if "crc" in text.lower():
            raise damaged("the PNG's image data fails its checksum (CRC)", text) from exc
        raise damaged(f"the PNG's compressed data is corrupt ({text})", text) from exc
    return gray_and_chroma(image)


def _decode_tiff(data: bytes) -> tuple[np.ndarray, bool, float]:
    """Gray pixels, whether they are stored white-is-zero (inverted after scaling), chroma."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            image = page.asarray(maxworkers=1)
            axes = page.axes
            photometric = int(page.photometric)
            colormap = page.colormap
    except Exception as exc:
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        if "not supported" in text.lower() or "NotImplemented" in text or "unknown" in \
                text.lower():
            raise DecodeError("format not supported: this TIFF's compression or pixel layout "
                              "cannot be decoded; save it as an uncompressed or LZW TIFF or PNG",
                              text) from exc
        raise damaged("the TIFF's image data is corrupt or cut short", text) from exc
    if image.ndim == 3 and axes.startswith("S"):  # planar: one plane per sample
        image = np.moveaxis(image, 0, -1)
    if photometric == 3 and colormap is not None:  # palette
        image = tifffile.apply_colormap(image, colormap)
    if image.ndim > 3 or (image.ndim == 3 and image.shape[2] > 4):
        raise DecodeError(f"format not supported: the TIFF's first page has {image.ndim} "
                          "dimensions (a stack or volume), not a single radiograph")
    gray, chroma = gray_and_chroma(image)
    return gray, photometric == 0, chroma


def _decode_bmp(data: bytes) -> tuple[np.ndarray, float]:
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated BMPs would "
                           "pass as whole")
    try:
        with Image.open(io.BytesIO(data), formats=["BMP", "DIB"]) as image:
            image.load()
            if image.mode in ("I;16", "I", "F", "L"):
                return np.asarray(image), 0.0
            return np.asarray(image.convert("L")), colour_chroma(np.asarray(image.convert("RGB")))
    except Image.DecompressionBombError as exc:
        raise DecodeError("image header declares too many pixels: refused as a possible "
                          "decompression bomb") from exc
    except Exception as exc:
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        if "truncated" in text:
            raise damaged("the BMP ends before its image data does (incomplete download or "
                          "copy?)", text) from exc
        if "bitfields" in text or "compression (6)" in text:  # masks Pillow does not read
            from runtime.imaging.bmp import bitfield_pixels

            try:
                return gray_and_chroma(bitfield_pixels(data))
            except ValueError as problem:
                raise damaged(f"the BMP's bit-field pixels cannot be read ({problem})",
                              text) from exc
        if "Unsupported" in text or "unsupported" in text:
            raise DecodeError("format not supported: this BMP variant cannot be decoded by Pillow "
                              "(the runner's BMP decoder); save it as PNG", text) from exc
        raise damaged("the BMP's header or image data is corrupt", text) from exc


def _decode_pixels(data: bytes, probe: Probe) -> Decoded:
    fmt = probe.format
    if fmt == "dicom":
        from runtime.imaging.dicom import decode_dicom

        pixels, chroma = decode_dicom(data, probe)
        return Decoded(pixels, probe.width, probe.height, fmt, chroma=chroma,
                       tags=dict(probe.info.get("tags", {})))
    if fmt == "jpeg":
        pixels, chroma = _decode_jpeg(data, probe)
        return Decoded(pixels, probe.width, probe.height, fmt, probe.reduction, chroma)
    if fmt == "png":
        gray, chroma = _decode_png(data)
        return Decoded(to_uint8(gray), probe.width, probe.height, fmt, chroma=chroma)
    if fmt == "tiff":
        gray, white_is_zero, chroma = _decode_tiff(data)
        pixels = to_uint8(gray)
        if white_is_zero:
            pixels = 255 - pixels
        return Decoded(pixels, probe.width, probe.height, fmt, chroma=chroma)
    gray, chroma = _decode_bmp(data)
    return Decoded(to_uint8(gray), probe.width, probe.height, fmt, chroma=chroma)


def decode_probed(data: bytes, probe: Probe) -> Decoded:
    """Decode a probed file; a decoder failing on the data means the file is damaged."""
    try:
        return _decode_pixels(data, probe)
    except DecodeError:
        raise
    except MemoryError as exc:
        raise DecodeError("image too large to decode in the memory available") from exc
    except ImportError as exc:  # an incomplete installation, not a damaged file
        raise DecodeError(f"{probe.format.upper()} cannot be decoded here: the runner's decoder "
                          f"({exc.name or 'a decoder package'}) is not installed; reinstall the "
                          "triage kit", str(exc)) from exc
    except Exception as exc:
        import traceback

        raise damaged(f"the {probe.format.upper()} file is corrupt: its decoder failed on it",
                      "".join(traceback.format_exception(exc)).strip()) from exc


def _probe_file(handle: io.BufferedReader | io.BytesIO, size: int, path: Path, min_side: int,
                reduce_to: int | None) -> Probe:
    if size == 0:
        raise DecodeError("file is empty (0 bytes)")
    head = handle.read(HEAD_BYTES)
    if not head:
        raise DecodeError("file is empty (0 bytes)")
    fmt = sniff_format(head)
    suffix = path.suffix.lower()
    force_dicom = fmt is None and suffix in DICOM_SUFFIXES and len(head) > 8
    if force_dicom:
        fmt = "dicom"  # DICOM without the 128-byte preamble: parsed with force
    if fmt is None:
        raise DecodeError(describe_unknown(head, suffix))
    handle.seek(0)
    try:
        probe = _probe(fmt, handle, head, size, reduce_to, force_dicom)
    except DecodeError:
        raise
    except Exception as exc:
        raise damaged(f"the {fmt.upper()} header is cut short or corrupt",
                      f"{type(exc).__name__}: {exc}") from exc
    check_size(probe.width, probe.height, min_side)
    return probe


@contextlib.contextmanager
def decoding(path: str | os.PathLike, min_side: int = 1, reduce_to: int | None = None,
             budget: MemoryBudget | None = None) -> Iterator[Decoded]:
    """Decode one file while holding its decode memory in ``budget``.

    The budget (file bytes + the header's decode estimate) is held until the ``with`` block
    ends, so the caller's crop and resize of the pixels are covered too. Every failure is a
    :class:`DecodeError`.
    """
    path = Path(os.fsdecode(path))
    handle, size = open_regular(path)
    with handle:
        probe = _probe_file(handle, size, path, min_side, reduce_to)
        try:
            with clock_paused():  # waiting for memory is not decoding: no time-out meanwhile
                held = budget.reserve(size + probe.decode_bytes) if budget else \
                    contextlib.nullcontext()
        except BudgetExceeded as exc:
            raise DecodeError(f"image too large to decode: {probe.width}x{probe.height} "
                              f"{probe.format.upper()}, {exc}") from exc
        with held:
            data = _read_rest(handle, size)
            handle.close()
            decoded = dataclasses.replace(decode_probed(data, probe),
                                          sha256=hashlib.sha256(data).hexdigest())
            del data
            yield decoded


def decode_file(path: str | os.PathLike, min_side: int = 1,
                reduce_to: int | None = None) -> Decoded:
    """Read and decode one file; every failure is a :class:`DecodeError`.

    ``min_side``: images whose shorter side is smaller are refused. ``reduce_to``: decode a JPEG
    at the largest 1/2, 1/4, 1/8 reduction that keeps its shorter side >= this (None: full size).
    """
    with decoding(path, min_side, reduce_to) as decoded:
        return decoded


def decode_bytes(data: bytes, path: str | os.PathLike = "", min_side: int = 1,
                 reduce_to: int | None = None) -> Decoded:
    """Decode an in-memory file (``path`` only names it, e.g. for the DICOM suffix)."""
    handle = io.BytesIO(data)
    probe = _probe_file(handle, len(data), Path(os.fsdecode(path)), min_side, reduce_to)
    return decode_probed(data, probe)
