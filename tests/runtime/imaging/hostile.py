"""Odd, damaged and hostile files built from the real X-rays (shared by the decode tests)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

CHEST_DICOM = "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"


def xray_jpegs(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "cxr_samples").rglob("*.jpeg"))


def xray_gray(data_dir: Path, index: int = 2, step: int = 3) -> np.ndarray:
    """A real chest X-ray as 8-bit gray, subsampled by ``step`` (small, fast files)."""
    image = cv2.imread(str(xray_jpegs(data_dir)[index]), cv2.IMREAD_GRAYSCALE)
    return np.ascontiguousarray(image[::step, ::step])


def png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, length) of each PNG chunk."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((pos, data[pos + 4:pos + 8], length))
        pos += 12 + length
    return out


def png_with_bad_idat_crc(png: bytes) -> bytes:
    pos, _, length = next(c for c in png_chunks(png) if c[1] == b"IDAT")
    data = bytearray(png)
    data[pos + 8 + length] ^= 0xFF
    return bytes(data)


def png_with_bad_ancillary_crc(png: bytes) -> bytes:
    """A tEXt chunk with a wrong CRC after IHDR (harmless: the image data is intact)."""
    text = b"Comment\x00x-ray"
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", 0)
    return png[:33] + chunk + png[33:]


def png_header(width: int, height: int) -> bytes:
    """A PNG signature + IHDR declaring ``width`` x ``height`` 8-bit gray (no data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr +
            struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))


def jpeg_scan_start(jpeg: bytes) -> int:
    return jpeg.find(b"\xff\xda")


def jpeg_corrupt_mid(jpeg: bytes, seed: int = 0, count: int = 64) -> bytes:
    """``count`` random bytes written over the middle of the entropy-coded data."""
    rng = np.random.default_rng(seed)
    start = jpeg_scan_start(jpeg)
    mid = start + (len(jpeg) - start) // 2
    data = bytearray(jpeg)
    noise = rng.integers(0, 255, count, dtype=np.uint8)  # no 0xFF: no accidental marker
    data[mid:mid + count] = noise.tobytes()
    return bytes(data)


def jpeg_with_header_junk(jpeg: bytes) -> bytes:
    """Three junk bytes before the quantisation table marker (libjpeg warns; harmless)."""
    index = jpeg.find(b"\xff\xdb")
    return jpeg[:index] + b"\x00\x00\x00" + jpeg[index:]


def bmp_variants(gray: np.ndarray) -> dict[str, bytes]:
    """Valid BMPs of ``gray`` in several layouts: palette depths, 16/24/32-bit, top-down, OS/2,
    RLE8 and a V5 header with bit fields."""
    from PIL import Image

    image = Image.fromarray(gray)
    out: dict[str, bytes] = {}
    for mode in ("1", "L", "RGB", "RGBA"):
        buffer = io.BytesIO()
        image.convert(mode).save(buffer, "BMP")
        out[f"pil_{mode}"] = buffer.getvalue()
    h, w = gray.shape
    out["top_down_8bit"] = _bmp(w, -h, 8, 0, _palette(), _rows(gray, 1))
    out["os2_v1_8bit"] = _bmp_os2(gray)
    out["rle8"] = _bmp(w, h, 8, 1, _palette(), _rle8(gray))
    rgb565 = ((gray.astype(np.uint16) >> 3) << 11) | ((gray.astype(np.uint16) >> 2) << 5) | \
        (gray.astype(np.uint16) >> 3)
    masks = struct.pack("<III", 0xF800, 0x07E0, 0x001F)
    out["bitfields_565"] = _bmp(w, h, 16, 3, masks, _rows(rgb565[::-1].astype("<u2").view(np.uint8), 1))
    return out


def _palette() -> bytes:
    return b"".join(bytes((i, i, i, 0)) for i in range(256))


def _rows(pixels: np.ndarray, item: int) -> bytes:
    """Bottom-up-ordered rows as given, each padded to 4 bytes."""
    rows = []
    for row in pixels:
        raw = row.tobytes()
        rows.append(raw + b"\x00" * (-len(raw) % 4))
    return b"".join(rows)


def _bmp(width: int, height: int, bpp: int, compression: int, extra: bytes, data: bytes) -> bytes:
    """A BITMAPINFOHEADER BMP; ``height`` < 0 means top-down (rows then given top first)."""
    offset = 14 + 40 + len(extra)
    colours = 256 if bpp == 8 else 0
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, compression, len(data), 2835,
                       2835, colours, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + extra + data


def _bmp_os2(gray: np.ndarray) -> bytes:
    h, w = gray.shape
    palette = b"".join(bytes((i, i, i)) for i in range(256))
    data = _rows(gray[::-1], 1)
    offset = 14 + 12 + len(palette)
    info = struct.pack("<IHHHH", 12, w, h, 1, 8)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + palette + data


def _rle8(gray: np.ndarray) -> bytes:
    """RLE8 coding of ``gray`` (bottom-up), runs only (valid, if not the smallest)."""
    out = bytearray()
    for row in gray[::-1]:
        values = row.tobytes()
        i = 0
        while i < len(values):
            j = i
            while j < len(values) and j - i < 255 and values[j] == values[i]:
                j += 1
            out += bytes((j - i, values[i]))
            i = j
        out += b"\x00\x00"  # end of line
    out += b"\x00\x01"  # end of bitmap
    return bytes(out)


def tiff_variants(gray: np.ndarray) -> dict[str, tuple[bytes, np.ndarray]]:
    """TIFFs of ``gray`` (name -> (bytes, expected uint8 pixels)): deep, float, planar, LZMA,
    Zstd, WebP, Deflate, white-is-zero."""
    import tifffile

    g16 = gray.astype(np.uint16) * 257
    stretched = cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX)
    cases = {
        "gray16_lzma": (g16, {"compression": "lzma"}, stretched),
        "float32_deflate": (gray.astype(np.float32) / 255, {"compression": "zlib"}, stretched),
        "rgb16_planar": (np.stack([g16] * 3), {"planarconfig": "separate", "photometric": "rgb"},
                         stretched),
        "gray8_zstd": (gray, {"compression": "zstd"}, gray),
        "rgb8_webp": (np.stack([gray] * 3, -1), {"compression": "webp", "photometric": "rgb",
                                                 "compressionargs": {"level": 100,
                                                                     "lossless": True}}, gray),
        "gray8_lzw_miniswhite": (255 - gray, {"compression": "lzw",
                                              "photometric": "miniswhite"}, gray),
    }
    out = {}
    for name, (array, options, expected) in cases.items():
        buffer = io.BytesIO()
        options.setdefault("photometric", "minisblack")
        tifffile.imwrite(buffer, array, **options)
        out[name] = (buffer.getvalue(), expected)
    return out


def dicom_with_tiff_preamble(dicom: bytes) -> bytes:
    """A dual-personality file: a TIFF header in the DICOM's 128-byte preamble."""
    preamble = (b"II*\x00" + struct.pack("<I", 8) + b"\x00" * 120)[:128]
    return preamble + dicom[128:]


def build_corpus(folder: Path, data_dir: Path) -> dict[str, str]:
    """A folder of hostile files; returns relative path (as displayed) -> expected outcome:
    "ok" or words the error must contain."""
    import os
    import socket

    from PIL import Image

    folder.mkdir(parents=True)
    jpeg = xray_jpegs(data_dir)[0].read_bytes()
    gray = xray_gray(data_dir)
    dicom = (data_dir / "dicom" / CHEST_DICOM).read_bytes()
    png16 = cv2.imencode(".png", np.stack([gray.astype(np.uint16) * 257] * 3, -1))[1].tobytes()
    expect: dict[str, str] = {}

    def put(name: str | bytes, data: bytes, outcome: str) -> None:
        raw = os.path.join(os.fsencode(folder), os.fsencode(name))
        os.makedirs(os.path.dirname(raw), exist_ok=True)
        with open(raw, "wb") as handle:
            handle.write(data)
        from runtime.running.results import display_path

        expect[display_path(os.fsencode(name))] = outcome

    put("whole.jpg", jpeg, "ok")
    put("bitrot.jpg", jpeg_corrupt_mid(jpeg), "image data is damaged")
    put("truncated.jpeg", jpeg[: len(jpeg) // 2], "image data is damaged: the JPEG ends")
    put("trailer.jpg", jpeg + b"\x00" * 64 + b"junk after the end marker", "ok")
    put("header_junk.jpg", jpeg_with_header_junk(jpeg), "ok")
    put("zero.jpg", b"", "file is empty")
    put("bomb.png", png_header(40000, 40000) + b"\x00" * 64, "decompression bomb")
    put("png16_rgb.png", png16, "ok")
    put("bad_crc.png", png_with_bad_idat_crc(png16), "image data is damaged")
    put("ancillary_crc.png", png_with_bad_ancillary_crc(png16), "ok")
    put("dual_personality.tif", dicom_with_tiff_preamble(dicom), "ok")
    put("scan_no_suffix", dicom, "ok")
    put("notes.txt", b"patient list\nnot an image\n", "not an image: the file is text")
    put(".DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(2000), "not an image")
    # two names displayed alike: a literal backslash (sorts first) and an undecodable byte
    put("caf\\xe9.jpeg", b"GIF89a" + bytes(40), "format not supported: the file is a GIF")
    put("caf\xe9.jpeg".encode("latin-1"), jpeg, "ok")
    expect["caf\\xe9.jpeg [2]"] = "ok"
    expect["caf\\xe9.jpeg"] = "format not supported: the file is a GIF"
    put("new\nline.jpg", jpeg, "ok")
    put("dir.jpg/inner.png", png16, "ok")  # a folder named like an image
    for fmt, name in (("GIF", "gif"), ("WEBP", "webp")):
        buffer = io.BytesIO()
        Image.fromarray(gray).save(buffer, fmt)
        put(f"xray.{name}", buffer.getvalue(), "format not supported")
        put(f"disguised_{name}.png", buffer.getvalue(), "format not supported")
    for name, (data, _) in tiff_variants(gray).items():
        put(f"tiff/{name}.tif", data, "ok")
    for name, data in bmp_variants(gray).items():
        put(f"bmp/{name}.bmp", data, "ok")
    os.mkfifo(folder / "fifo_no_suffix")
    expect["fifo_no_suffix"] = "not a regular file (it is a named pipe)"
    os.mkfifo(folder / "pipe.jpg")
    expect["pipe.jpg"] = "not a regular file (it is a named pipe)"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "socket.png"))
    server.close()
    expect["socket.png"] = "not a regular file (it is a socket)"
    os.symlink("/dev/zero", folder / "device.dcm")
    expect["device.dcm"] = "not a regular file (it is a device)"
    os.symlink("loop.jpg", folder / "loop.jpg")
    expect["loop.jpg"] = "symbolic link loop"
    os.symlink("nowhere.jpg", folder / "broken.jpg")
    expect["broken.jpg"] = "broken symbolic link"
    os.symlink("..", folder / "tiff" / "up")  # a folder loop: walked once
    return expect


def pngsuite_like_corruptions(png: bytes) -> dict[str, bytes]:
    """PngSuite's corrupt "x" files (not shipped by any package here), rebuilt on a real X-ray
    PNG: the same defects, named after the PngSuite file they imitate."""
    def with_ihdr(depth: int, colour: int) -> bytes:
        ihdr = png[16:24] + bytes((depth, colour)) + png[26:29]
        chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
        return png[:8] + chunk + png[33:]

    idat = [c for c in png_chunks(png) if c[1] == b"IDAT"]
    bad_ihdr_crc = bytearray(png)
    bad_ihdr_crc[29] ^= 0xFF
    no_idat = png[:idat[0][0]] + png[idat[-1][0] + 12 + idat[-1][2]:]
    return {
        "xs1n0g01_bad_signature": b"\x89PNG\r\n\x1a\x0b" + png[8:],
        "xcrn0g04_lf_to_crlf": png[:6] + b"\r\n" + png[7:],
        "xlfn0g04_crlf_to_lf": png[:4] + b"\n" + png[6:],
        "xc1n0g08_bad_colour_type": with_ihdr(8, 1),
        "xd0n2c08_bad_bit_depth": with_ihdr(0, 2),
        "xhdn0g08_bad_ihdr_crc": bytes(bad_ihdr_crc),
        "xcsn0g01_bad_idat_crc": png_with_bad_idat_crc(png),
        "xdtn0g01_no_idat": no_idat,
        "truncated_in_idat": png[: idat[0][0] + 12 + idat[0][2] // 2],
    }
