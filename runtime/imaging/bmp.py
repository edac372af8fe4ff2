"""16- and 32-bit BMPs whose pixels are laid out by bit-field masks that Pillow does not read.

Pillow decodes the common mask layouts only (e.g. 8-8-8 bits in the low three bytes); a valid
BMP with another layout (8-8-8 in the high three bytes, 11-11-10 bits, or the
``BI_ALPHABITFIELDS`` compression) is refused there. Here each channel is cut out of the pixel
words by its mask and scaled to the full range of 8 bits (16 bits for a channel deeper than 8),
which is what the BMP specification says the masks mean. Alpha is ignored, as for every format.
"""

from __future__ import annotations

import struct

import numpy as np

#: BI_BITFIELDS, BI_ALPHABITFIELDS
BITFIELDS = (3, 6)


def _channel(words: np.ndarray, mask: int, deep: bool) -> np.ndarray:
    shift = (mask & -mask).bit_length() - 1
    top = (mask >> shift)
    values = (words & mask) >> shift
    full = 65535 if deep else 255
    scaled = (values.astype(np.uint64) * full + top // 2) // top
    return scaled.astype(np.uint16 if deep else np.uint8)


def bitfield_pixels(data: bytes) -> np.ndarray:
    """(H, W, 3) RGB of a 16/32-bit bit-field BMP; ValueError naming what is wrong otherwise."""
    if len(data) < 54 or data[:2] != b"BM":
        raise ValueError("not a BMP file")
    (offset,) = struct.unpack_from("<I", data, 10)
    header, width, height, _, bits, compression = struct.unpack_from("<IiiHHI", data, 14)
    if compression not in BITFIELDS or bits not in (16, 32):
        raise ValueError(f"not a bit-field BMP ({bits}-bit, compression {compression})")
    count = 4 if compression == 6 or header >= 56 else 3
    if header == 40 and compression == 3:
        count = 3
    red, green, blue = struct.unpack_from(f"<{count}I", data, 54)[:3]
    if not red or not green or not blue:
        raise ValueError("a colour mask of the BMP is empty")
    rows, stride = abs(height), ((width * bits + 31) // 32) * 4
    if width <= 0 or rows == 0 or offset + stride * rows > len(data):
        raise ValueError("truncated: the BMP ends before its pixel rows do")
    kind = np.dtype("<u2" if bits == 16 else "<u4")
    words = np.frombuffer(data, kind, count=stride * rows // kind.itemsize, offset=offset)
    words = words.reshape(rows, stride // kind.itemsize)[:, :width]
    if height > 0:  # bottom-up rows
        words = words[::-1]
    deep = max(bin(m).count("1") for m in (red, green, blue)) > 8
    return np.dstack([_channel(words, mask, deep) for mask in (red, green, blue)])
