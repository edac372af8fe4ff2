"""What a file is, from its first bytes: the image format its content announces, or why not.

DICOM is checked first (``DICM`` at offset 128): the 128-byte preamble before it is free for any
use and sometimes holds a TIFF header (dual-personality files), which must not make the file a
TIFF. Formats the runner does not decode (GIF, WebP, JPEG 2000, ...) are named in the error.
"""

from __future__ import annotations

#: file name suffixes of the formats decoded (for tools that count images; the runner itself
#: identifies files by content and gives every file a row)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff",
                            ".dcm", ".dicom", ".dic"})
#: bytes read to identify a file
HEAD_BYTES = 4096
_UNSUPPORTED = (
    ((b"GIF87a", b"GIF89a"), 0, "GIF"),
    ((b"\x00\x00\x00\x0cjP  \r\n\x87\n",), 0, "JPEG 2000"),
    ((b"\xff\x4f\xff\x51",), 0, "JPEG 2000 codestream"),
    ((b"\xff\x0a",), 0, "JPEG XL"),
    ((b"\x00\x00\x00\x0cJXL \r\n\x87\n",), 0, "JPEG XL"),
    ((b"%PDF",), 0, "PDF document"),
    ((b"PK\x03\x04",), 0, "ZIP archive (unpack it first)"),
    ((b"\x1f\x8b",), 0, "gzip archive (unpack it first)"),
    ((b"8BPS",), 0, "Photoshop"),
    ((b"II\xbc",), 0, "JPEG XR"),
)


def sniff_format(head: bytes) -> str | None:
    """The decodable image format ``head`` (a file's first bytes) announces, or None."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def unsupported_format(head: bytes) -> str | None:
    """The name of a recognised but unsupported format, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"msf1"):
        return "HEIF/AVIF"
    for signatures, offset, name in _UNSUPPORTED:
        if any(head[offset:].startswith(s) for s in signatures):
            return name
    return None


def looks_like_text(head: bytes) -> bool:
    """True when the bytes are (almost all) printable UTF-8 text."""
    if not head:
        return False
    text = head.decode("utf-8", errors="ignore")
    if len(text.encode("utf-8")) < 0.95 * len(head):  # undecodable bytes: binary
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t\f" for ch in text)
    return printable >= 0.95 * len(text)


def describe_unknown(head: bytes, suffix: str) -> str:
    """A plain-words error for a file whose content is no decodable image."""
    named = f"named {suffix}" if suffix else "no file name suffix"
    other = unsupported_format(head)
    if other:
        return (f"format not supported: the file is a {other} ({named}); convert it to PNG, TIFF "
                "or DICOM (lossless) to triage it")
    if looks_like_text(head):
        return f"not an image: the file is text ({named})"
    return (f"not an image: its content matches no JPEG, PNG, BMP, TIFF or DICOM signature "
            f"({named}); the file may be damaged or of another kind")
