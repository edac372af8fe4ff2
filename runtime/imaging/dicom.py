"""DICOM radiographs: header checks, then pixels through pydicom and the pylibjpeg decoders.

Transfer syntaxes decoded: implicit/explicit VR little endian, explicit VR big endian, deflated,
RLE lossless, JPEG baseline (8-bit) and extended (12-bit), JPEG lossless (process 14 and SV1),
JPEG-LS lossless and near-lossless, JPEG 2000 lossless and lossy. Compressed pixel data is always
decoded by the same plugin (pylibjpeg: libjpeg, openjpeg, rle), never by whichever happens to be
installed, so that the same file gives the same pixels everywhere; the one exception is a JPEG
baseline/extended frame whose scan header libjpeg refuses (a spectral selection other than 0..63,
written by some 12-bit encoders), read by libjpeg-turbo (``imagecodecs``, always installed).
The output follows the display pipeline: modality LUT (rescale), VOI LUT or window, MONOCHROME1
inverted, colour to gray.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from runtime.errors import DecodeError
from runtime.imaging.pixels import Probe, damaged, gray_and_chroma, to_uint8

#: DICOM modalities that are projection radiographs (CR computed, DX digital, RG radiographic)
XRAY_MODALITIES = frozenset({"CR", "DX", "RG", "DR"})
CHEST_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "PORTABLE CHEST"})
#: header fields handed on with the pixels (Decoded.tags) for the scope rules (runtime.judging.scope)
SCOPE_TAGS = ("Modality", "BodyPartExamined", "ViewPosition", "PatientAge")
#: rows per block when applying the modality and VOI LUTs (bounds temporary memory)
_LUT_ROWS = 256


def _syntax_name(ds) -> str:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return shown(getattr(syntax, "name", syntax) or "unknown transfer syntax", 80)


def shown(value, limit: int = 40) -> str:
    """A header value fit for a message: printable, one line, at most ``limit`` characters."""
    text = "".join(ch if ch.isprintable() else "?" for ch in " ".join(str(value).split()))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _label(ds) -> str:
    sop = ds.get("SOPClassUID")
    name = getattr(sop, "name", None) or str(sop or "unknown SOP class")
    return f"modality {shown(ds.get('Modality', '?'))}, {shown(name, 80)}"


def read_dataset(source, force: bool, stop_before_pixels: bool):
    """pydicom's dataset, with parse failures as plain-words errors."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(source, force=force, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise DecodeError("not a DICOM file: it has no DICOM header", str(exc)) from exc
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise damaged("the DICOM header cannot be parsed (cut short or corrupt)",
                      f"{type(exc).__name__}: {exc}") from exc
    if force and "Rows" not in ds and "PixelData" not in ds:
        raise DecodeError("not a DICOM file: named like one, but no DICOM header was found")
    return ds


def probe_dicom(handle, force: bool) -> Probe:
    """Check a DICOM header (a single-frame chest radiograph) and estimate its decode memory."""
    ds = read_dataset(handle, force, stop_before_pixels=True)
    if "Rows" not in ds or "Columns" not in ds:
        raise DecodeError(f"DICOM holds no image (no pixel data): {_label(ds)}")
    modality = str(ds.get("Modality", "")).upper()
    if modality not in XRAY_MODALITIES:
        raise DecodeError(f"DICOM is not a radiograph: {_label(ds)} "
                          f"(expected modality {'/'.join(sorted(XRAY_MODALITIES))})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DecodeError(f"DICOM has {frames} frames (a cine or volume), not a single radiograph")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    item = max(1, -(-int(ds.get("BitsAllocated", 16) or 16) // 8))
    decoded = rows * cols * samples * item
    # compressed frame buffer + array, the float32 LUT output, the uint8 result
    return Probe("dicom", cols, rows, 3 * decoded + 6 * rows * cols,
                 info={"syntax": _syntax_name(ds), "force": force, "tags": header_tags(ds)})


def header_tags(ds) -> dict[str, str]:
    """The SCOPE_TAGS present in the header, as shown text (a radiograph of another body part or
    view is scored and marked out of scope by runtime.judging.scope, not refused here)."""
    return {name: shown(ds.get(name)) for name in SCOPE_TAGS
            if ds.get(name) not in (None, "")}


#: libjpeg (pylibjpeg) refuses a sequential JPEG frame whose scan header gives a spectral selection
#: other than 0..63 (some encoders of 12-bit JPEG Extended write other values there, which the
#: sequential process ignores); libjpeg-turbo reads such a frame
_LIBJPEG_SCAN_RANGE = "scan start must be zero and scan stop must be 63"
JPEG_SEQUENTIAL = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")


def _pixels(ds) -> np.ndarray:
    """The stored pixel values, decoded by the pinned plugin for compressed syntaxes (a JPEG
    baseline/extended frame whose scan header libjpeg refuses: by libjpeg-turbo)."""
    syntax = ds.file_meta.TransferSyntaxUID
    options = {"decoding_plugin": "pylibjpeg"} if syntax.is_encapsulated else {}
    from pydicom.pixels import pixel_array

    try:
        return pixel_array(ds, **options)
    except Exception as exc:
        if syntax not in JPEG_SEQUENTIAL or _LIBJPEG_SCAN_RANGE not in str(exc):
            raise
        return _libjpeg_turbo_frame(ds, exc)


def _libjpeg_turbo_frame(ds, refused: Exception) -> np.ndarray:
    """The first frame of a JPEG baseline/extended DICOM decoded by libjpeg-turbo (imagecodecs)."""
    import imagecodecs
    from pydicom.encaps import generate_frames

    if int(ds.get("PixelRepresentation", 0)) != 0:
        raise DecodeError("format not supported: a signed JPEG frame whose scan header libjpeg "
                          "(pylibjpeg) refuses; ask for the image uncompressed",
                          str(refused)) from refused
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    try:
        return imagecodecs.jpeg8_decode(frame)
    except Exception as exc:
        raise damaged(f"the DICOM pixel data ({_syntax_name(ds)}) is corrupt: neither libjpeg nor "
                      "libjpeg-turbo decodes it", f"libjpeg: {refused}; libjpeg-turbo: {exc}"
                      ) from exc


def _check_frame(ds) -> None:
    """Refuse compressed pixel data that the decoders would decode from damaged data quietly.

    Measured on the chest radiograph re-encoded in each syntax and then cut or overwritten with
    64 random bytes mid-frame: pydicom's decoders (libjpeg, openjpeg, rle, gdcm) return an image
    for most of these. So: every JPEG / JPEG-LS / JPEG 2000 frame must end with its end marker
    (cut frames), 8-bit JPEG frames are checked by libjpeg-turbo in strict mode and JPEG-LS frames
    by CharLS, which both report corrupt entropy-coded data. Not detectable: corruption inside
    lossless/12-bit JPEG, JPEG 2000 and RLE data, which carry no redundancy the decoders check.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_encapsulated or syntax == "1.2.840.10008.1.2.5":  # RLE: no end marker
        return
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception as exc:
        raise damaged(f"the DICOM pixel data ({_syntax_name(ds)}) is not valid encapsulated data",
                      f"{type(exc).__name__}: {exc}") from exc
    if b"\xff\xd9" not in frame[-16:]:  # end marker, then at most a few padding bytes
        raise damaged(f"the DICOM pixel data ({_syntax_name(ds)}) is cut short: its compressed frame "
                      "has no end marker")
    if syntax in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"):  # JPEG-LS
        import imagecodecs

        try:
            imagecodecs.jpegls_decode(frame)
        except Exception as exc:
            raise damaged(f"the DICOM pixel data ({_syntax_name(ds)}) is corrupt",
                          f"CharLS: {exc}") from exc
    elif syntax in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51") and \
            int(ds.get("BitsAllocated", 8)) == 8:
        import simplejpeg

        try:
            simplejpeg.decode_jpeg(frame, colorspace="GRAY", strict=True, min_factor=8)
        except ValueError as exc:
            raise damaged(f"the DICOM pixel data ({_syntax_name(ds)}) is corrupt ({exc})",
                          f"libjpeg-turbo: {exc}") from exc


def decode_dicom(data: bytes, probe: Probe) -> tuple[np.ndarray, float]:
    """A DICOM radiograph's pixels as displayed, in uint8 gray, and their colour chroma."""
    ds = read_dataset(io.BytesIO(data), probe.info.get("force", False), stop_before_pixels=False)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DecodeError(f"DICOM holds no image (no pixel data): {_label(ds)}")
    _check_frame(ds)
    try:
        pixels = _pixels(ds)
    except Exception as exc:
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        lower = text.lower()
        if "no pixel data decoders" in lower or "not supported" in lower or \
                "unable to decode" in lower and "plugin" in lower and "missing" in lower:
            raise DecodeError(f"DICOM pixel data is in a compression this runner does not decode "
                              f"({probe.info.get('syntax')}); ask for the image uncompressed or "
                              "in another transfer syntax", text) from exc
        raise damaged(f"the DICOM pixel data ({probe.info.get('syntax')}) is corrupt or cut "
                      "short", text) from exc
    if pixels.shape[:2] != (probe.height, probe.width):
        raise damaged("the DICOM pixel data does not match its declared size")
    if not pixels.dtype.isnative:
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:
        if photometric.startswith("YBR") and not ds.file_meta.TransferSyntaxUID.is_encapsulated:
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        gray, chroma = gray_and_chroma(pixels)
        return to_uint8(gray), chroma
    transformed = _has_luts(ds)
    if transformed:
        pixels = _apply_luts(pixels, ds)
    gray = to_uint8(pixels) if (pixels.dtype != np.uint8 or transformed) else pixels
    if photometric == "MONOCHROME1":  # high values are dark: invert to the usual display
        gray = 255 - gray
    return np.ascontiguousarray(gray), 0.0


def _has_luts(ds) -> bool:
    """Whether the modality or VOI transform changes the stored values (identity rescale: no)."""
    rescale = (float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0))
    return rescale != (1.0, 0.0) or "ModalityLUTSequence" in ds or "WindowCenter" in ds or \
        "VOILUTSequence" in ds


def _apply_luts(pixels: np.ndarray, ds) -> np.ndarray:
    """Modality then VOI LUT, in blocks of rows, into a float32 image."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    out = np.empty(pixels.shape, np.float32)
    for start in range(0, pixels.shape[0], _LUT_ROWS):
        block = pixels[start:start + _LUT_ROWS]
        out[start:start + _LUT_ROWS] = apply_voi_lut(apply_modality_lut(block, ds), ds)
    return out


# ---------------------------------------------------------------------------------------------
# window/level on screen (the clinic app's viewer): values before the VOI step, and the window


@dataclass(frozen=True)
class WindowValues:
    """A DICOM radiograph's values after the modality LUT (before any window), for a viewer that
    lets the reader change the window: centre and width start at the header's first window, else
    at the values' min..max."""

    values: np.ndarray  # (H, W) float32, in modality units (e.g. rescaled stored values)
    center: float
    width: float
    invert: bool  # MONOCHROME1: high values are shown dark


def window_values(data: bytes) -> WindowValues:
    """The values of a single-frame grayscale DICOM file's bytes, for :func:`apply_window`."""
    from pydicom.pixels import apply_modality_lut

    force = data[128:132] != b"DICM"
    ds = read_dataset(io.BytesIO(data), force, stop_before_pixels=False)
    if "PixelData" not in ds:
        raise DecodeError(f"DICOM holds no image (no pixel data): {_label(ds)}")
    _check_frame(ds)
    try:
        stored = _pixels(ds)
    except Exception as exc:
        raise damaged("the DICOM pixel data is corrupt or cut short",
                      f"{type(exc).__name__}: {exc}") from exc
    if stored.ndim != 2:
        raise DecodeError("window/level applies to grayscale DICOM images only (this one is colour "
                          "or has several frames)")
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    center, width = _first_window(ds)
    if width is None:
        low, high = float(values.min()), float(values.max())
        center, width = (low + high) / 2, max(1.0, high - low)
    invert = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    return WindowValues(values, float(center), float(width), invert)


def _first_window(ds) -> tuple[float | None, float | None]:
    """The header's first (WindowCenter, WindowWidth), or (None, None)."""
    def first(value) -> float:
        try:
            return float(value)
        except TypeError:  # multi-valued: several windows, the first is the default
            return float(value[0])

    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None, None
    try:
        return first(center), max(1.0, first(width))
    except (TypeError, ValueError, IndexError):
        return None, None


def apply_window(values: np.ndarray, center: float, width: float, invert: bool) -> np.ndarray:
    """The DICOM linear window (PS3.3 C.11.2.1.2) of ``values`` as uint8 display gray."""
    width = max(1.0, float(width))
    scaled = ((values - (center - 0.5)) / max(1.0, width - 1.0) + 0.5) * 255.0
    gray = np.clip(scaled, 0, 255).astype(np.uint8)
    return 255 - gray if invert else gray
