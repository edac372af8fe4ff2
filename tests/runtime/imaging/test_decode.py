"""Decoding real X-rays (JPEG, PNG variants, DICOM) and the reduced-decode error bound."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.bundle.load import load_bundle
from runtime.errors import DecodeError
from runtime.imaging.decode import decode_bytes, decode_file, jpeg_size, reduction_for
from runtime.preprocess.cpu import model_pixels_from_decode, to_model_pixels
from runtime.running.triage import DEFAULT_OVERSAMPLE


def _samples(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "cxr_samples").rglob("*.jpeg"))


def test_jpeg_header_size_matches_pixels(data_dir):
    for path in _samples(data_dir)[::25]:
        width, height, _ = jpeg_size(path.read_bytes())
        full = decode_file(path, min_side=28).pixels
        assert full.shape == (height, width)


def test_reduction_keeps_the_short_side():
    assert reduction_for(2000, 1800, 112) == 8
    assert reduction_for(800, 600, 112) == 4
    assert reduction_for(224, 224, 112) == 2
    assert reduction_for(200, 150, 112) == 1


def test_rgb_jpeg_becomes_grayscale(data_dir):
    rgb = [p for p in _samples(data_dir) if "person" in p.name]
    for path in rgb[:10]:
        decoded = decode_file(path, min_side=28, reduce_to=112)
        assert decoded.pixels.ndim == 2 and decoded.pixels.dtype == np.uint8


def test_png_variants_give_the_same_gray(data_dir, tmp_path):
    """8-bit gray, 16-bit, colour and colour+alpha PNGs of one real X-ray -> the same pixels."""
    gray = decode_file(_samples(data_dir)[0], min_side=28).pixels
    gray = cv2.resize(gray, (gray.shape[1] // 4, gray.shape[0] // 4), interpolation=cv2.INTER_AREA)
    stretched = cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX)  # 16-bit path stretches
    variants = {
        "gray8": (gray, gray),
        "gray16": ((stretched.astype(np.uint16) * 257), stretched),
        "bgr": (cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), gray),
        "bgra": (cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA), gray),
    }
    for name, (image, expected) in variants.items():
        ok, encoded = cv2.imencode(".png", image)
        assert ok
        decoded = decode_bytes(encoded.tobytes(), f"{name}.png", min_side=28)
        assert decoded.format == "png"
        assert np.abs(decoded.pixels.astype(int) - expected.astype(int)).max() <= 1, name


def test_twelve_bit_png_is_stretched_not_dark(data_dir):
    gray = decode_file(_samples(data_dir)[1], min_side=28).pixels[::4, ::4]
    twelve = (gray.astype(np.uint16) * 16)  # 12-bit data in a 16-bit container
    ok, encoded = cv2.imencode(".png", twelve)
    decoded = decode_bytes(encoded.tobytes(), "x.png", min_side=28).pixels
    assert decoded.max() == 255 and decoded.mean() > gray.mean() * 0.8


def test_dicoms(data_dir):
    folder = data_dir / "dicom"
    normal = decode_file(folder / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
                         min_side=28)
    inverted = decode_file(folder / "Fake_MONOHR1.dcm", min_side=28)
    assert normal.format == "dicom" and normal.pixels.shape == (1024, 1024)
    # Fake_MONOHR1 stores the same values but declares MONOCHROME1 (high = dark): the decoder
    # must invert it, so it comes out as the negative of the MONOCHROME2 file
    negative = 255 - normal.pixels.astype(int)
    assert np.abs(inverted.pixels.astype(int) - negative).max() == 0
    uncompressed = decode_file(
        folder / "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm", min_side=28)
    assert uncompressed.pixels.dtype == np.uint8 and uncompressed.pixels.std() > 10
    with pytest.raises(DecodeError, match="not a radiograph: modality OT"):
        decode_file(folder / "non_cxr" / "sample.dcm", min_side=28)


def test_dicom_16bit_with_rescale_and_window(data_dir, tmp_path):
    """A 12-bit DICOM with rescale + VOI window, MONOCHROME1: pixels follow the window."""
    import pydicom

    source = data_dir / "dicom" / "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
    ds = pydicom.dcmread(source)
    base = ds.pixel_array.astype(np.uint16) * 16  # 0..4080
    ds.PixelData = base.tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024  # stored 0..4080 -> -1024..3056
    ds.PhotometricInterpretation = "MONOCHROME1"
    reference = decode_file(source, min_side=28).pixels.astype(float).ravel()
    saturated = {}
    for name, (center, width) in {"wide": (1016, 4082), "narrow": (1000, 500)}.items():
        ds.WindowCenter, ds.WindowWidth = center, width
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        decoded = decode_file(path, min_side=28).pixels.astype(float).ravel()
        if name == "wide":  # linear window + MONOCHROME1 inversion: the exact negative
            assert np.corrcoef(decoded, reference)[0, 1] < -0.999
        saturated[name] = np.mean((decoded == 0) | (decoded == 255))
    assert saturated["narrow"] > 0.2 > saturated["wide"]  # the VOI window was applied


@pytest.mark.parametrize(("bundle_fixture", "sets"), [
    ("cpu_bundle", ("cxr_samples", "adult_cxr", "dicom")),
    # the adult X-rays (512-640 px) decode at full size for a 128 px model at 3x: not repeated
    ("clinical_cpu_bundle", ("cxr_samples",)),
])
def test_default_decode_scale_is_within_its_bound(request, data_dir, bundle_fixture, sets):
    """The default reduced decode against the exact (full-size) decode, through the bundle's
    default artifact, the scope rules and the feature guard, as triage runs them: within
    benchmarks.decode_scale.BOUND on real X-rays (measured for every candidate scale:
    benchmarks/reports/decode_scale.md)."""
    from benchmarks.decode_scale import BOUND, measure_bundle

    bundle = request.getfixturevalue(bundle_fixture)
    result = measure_bundle(bundle, data_dir, (float(DEFAULT_OVERSAMPLE),), sets)
    for name, rows in result["sets"].items():
        row = rows[str(float(DEFAULT_OVERSAMPLE))]
        print(f"\n{bundle_fixture} {name}: {row}")
        assert row["images"] >= 3
        assert BOUND.holds(row), (name, row)
    assert result["sets"]["cxr_samples"][str(float(DEFAULT_OVERSAMPLE))]["mean"] > 0  # reduced


def test_reduced_decode_keeps_the_crop_geometry(data_dir, cpu_bundle):
    """A reduced decode resampled over the same crop window gives nearly the full decode's model
    pixels (only libjpeg's DCT-domain downscale differs), on real Kermany JPEGs."""
    spec = load_bundle(cpu_bundle, device="cpu").preprocessing
    for path in _samples(data_dir)[::10]:
        small = decode_file(path, min_side=spec.size, reduce_to=spec.size * DEFAULT_OVERSAMPLE)
        assert small.reduction > 1
        reduced = model_pixels_from_decode(small.pixels, small.width, small.height,
                                           small.reduction, spec)
        full = to_model_pixels(decode_file(path, min_side=spec.size).pixels, spec)
        assert np.abs(reduced.astype(int) - full.astype(int)).mean() < 0.5


def test_bmp_and_tiff(data_dir):
    gray = decode_file(_samples(data_dir)[2], min_side=28).pixels[::3, ::3].copy()
    for suffix, image in ((".bmp", gray), (".tiff", gray), (".tiff", gray.astype(np.uint16) * 257)):
        ok, encoded = cv2.imencode(suffix, image)
        assert ok
        decoded = decode_bytes(encoded.tobytes(), f"x{suffix}", min_side=28)
        assert decoded.format == suffix.strip(".")[:4]
        expected = cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX) if image.dtype == np.uint16 \
            else gray
        assert np.abs(decoded.pixels.astype(int) - expected.astype(int)).max() <= 1


def test_jpeg_bomb_header_is_refused_before_decoding(data_dir):
    data = bytearray(_samples(data_dir)[0].read_bytes())
    width, height, _ = jpeg_size(bytes(data))
    index = bytes(data).find(height.to_bytes(2, "big") + width.to_bytes(2, "big"))
    data[index:index + 4] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_bytes(bytes(data), "bomb.jpg", min_side=28)


def test_compressed_dicom_syntaxes(data_dir, tmp_path):
    """RLE Lossless decodes to the same pixels; garbage in place of a JPEG 2000 frame is a
    plain-words error, not a crash (every syntax: tests/runtime/imaging/test_decode_dicom.py)."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, RLELossless

    source = data_dir / "dicom" / "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
    original = decode_file(source, min_side=28).pixels
    ds = pydicom.dcmread(source)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    assert np.array_equal(decode_file(tmp_path / "rle.dcm", min_side=28).pixels, original)
    ds = pydicom.dcmread(source)
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(tmp_path / "j2k.dcm", enforce_file_format=True)
    with pytest.raises(DecodeError, match="image data is damaged: the DICOM pixel data"):
        decode_file(tmp_path / "j2k.dcm", min_side=28)


def test_exif_rotated_jpeg_keeps_the_crop_geometry(data_dir):
    """OpenCV applies EXIF orientation; the reduced path must use the rotated size for the crop."""
    import io

    from PIL import Image

    from runtime.contract.manifest import Preprocessing

    spec = Preprocessing()
    image = Image.open(_samples(data_dir)[0]).convert("L")
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    reduced = decode_bytes(buffer.getvalue(), "r.jpg", 28, 112)
    full = decode_bytes(buffer.getvalue(), "r.jpg", 28, None)
    assert (reduced.width, reduced.height) == (image.height, image.width)
    assert full.pixels.shape == (image.width, image.height)
    a = model_pixels_from_decode(reduced.pixels, reduced.width, reduced.height, reduced.reduction,
                                 spec)
    assert np.abs(a.astype(int) - to_model_pixels(full.pixels, spec).astype(int)).mean() < 1.5
