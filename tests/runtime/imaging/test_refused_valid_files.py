"""Valid files the runner once refused (bmpsuite's BMPs in tests/runtime/imaging/public/, pydicom's
own test file, a real X-ray re-coded with arithmetic coding, and a JPEG with extraneous bytes
before a marker made from a real X-ray): each now decodes, to the pixels
a reference decode gives, and damage is still refused."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import simplejpeg
from pydicom.data import get_testdata_file

from runtime.errors import DecodeError
from runtime.imaging.decode import decode_bytes, decode_file, raster_estimate
from runtime.imaging.limits import DEFAULT_MEMORY_BUDGET, MAX_PIXELS

PUBLIC = Path(__file__).parent / "public"


def test_arithmetic_coded_jpeg_decodes_like_its_huffman_twin(xray, tmp_path):
    """A real X-ray losslessly re-coded with arithmetic coding by libjpeg-turbo's jpegtran."""
    jpegtran = shutil.which("jpegtran")
    if jpegtran is None:
        message = "jpegtran missing: apt-get install libjpeg-turbo-progs"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, but {message}")
        pytest.skip(message)
    arithmetic_file = tmp_path / "arithmetic.jpg"
    subprocess.run([jpegtran, "-arithmetic", "-outfile", str(arithmetic_file), str(xray)],
                   check=True, timeout=60)
    assert b"\xff\xc9" in arithmetic_file.read_bytes()  # SOF9: arithmetic-coded
    arithmetic, huffman = decode_file(arithmetic_file), decode_file(xray)
    assert arithmetic.format == "jpeg" and np.array_equal(arithmetic.pixels, huffman.pixels)


@pytest.mark.parametrize("name", ["rgb32bf.bmp", "rgb32-111110.bmp"])
def test_32_bit_bmp_with_bit_field_masks_decodes(name):
    """Masks in the high three bytes (bmpsuite g/: 'good') and 11-11-10 bits: Pillow refuses
    both; the pixels are those of the same picture stored as 24-bit (11-bit channels: +-1)."""
    reference = decode_file(PUBLIC / "rgb24.bmp").pixels
    pixels = decode_file(PUBLIC / name).pixels
    assert np.abs(pixels.astype(int) - reference).max() <= (0 if name == "rgb32bf.bmp" else 1)


def test_bmp_with_alpha_bit_fields_decodes_like_the_plain_rgba_bmp():
    assert np.array_equal(decode_file(PUBLIC / "rgba32abf.bmp").pixels,
                          decode_file(PUBLIC / "rgba32.bmp").pixels)


def test_12_bit_jpeg_extended_dicom_that_libjpeg_refuses_decodes():
    import pydicom

    ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm", download=False))
    ds.Modality = "DX"  # a nuclear-medicine sample: made a radiograph for the header checks
    buffer = io.BytesIO()
    ds.save_as(buffer)
    decoded = decode_bytes(buffer.getvalue(), "x.dcm")
    assert (decoded.width, decoded.height) == (256, 1024) and decoded.pixels.std() > 5


@pytest.fixture()
def xray(data_dir: Path) -> Path:
    return sorted((data_dir / "kermany_test_224" / "NORMAL").glob("*.jpeg"))[0]


def _progressive(path: Path) -> bytes:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()


def test_jpeg_with_extraneous_bytes_before_a_marker_decodes(xray):
    whole = xray.read_bytes()
    before_end = whole[:-2] + b"\x00" * 20 + b"\xff\xd9"  # junk before the end marker
    progressive = _progressive(xray)
    table = progressive.find(b"\xff\xc4", progressive.find(b"\xff\xda"))  # a table between scans
    between_scans = progressive[:table] + b"\x12\x34" * 16 + progressive[table:]
    for junk, clean in ((before_end, whole), (between_scans, progressive)):
        with pytest.raises(ValueError, match="extraneous bytes before marker"):
            simplejpeg.decode_jpeg(junk, colorspace="GRAY", strict=True)
        pixels = decode_bytes(junk).pixels
        assert np.array_equal(pixels, decode_bytes(clean).pixels)
        assert np.array_equal(pixels, simplejpeg.decode_jpeg(junk, colorspace="GRAY",
                                                              strict=False)[:, :, 0])


def test_damage_beside_extraneous_bytes_is_still_refused(xray):
    damaged = bytearray(xray.read_bytes()[:-2] + b"\x00" * 20 + b"\xff\xd9")
    middle = len(damaged) // 2
    damaged[middle:middle + 40] = bytes(range(40))
    with pytest.raises(DecodeError, match="image data is damaged"):
        decode_bytes(bytes(damaged))


def test_a_16_bit_rgba_png_just_under_the_pixel_limit_fits_the_memory_budget():
    """Its decode estimate (RGBA pixels + their 16-bit gray, then gray + uint8) leaves room in the
    default budget for a 200 MiB file; the old estimate (13 bytes a pixel) left 33 MB."""
    side = int(MAX_PIXELS ** 0.5)
    assert side * side <= MAX_PIXELS
    assert raster_estimate(side, side, 4, 2) + 200 * 2**20 <= DEFAULT_MEMORY_BUDGET


def test_hierarchical_jpeg_names_the_library_that_cannot(tmp_path, xray):
    data = bytearray(xray.read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 1] = 0xC5  # a hierarchical (differential) frame header
    path = tmp_path / "hierarchical.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match="hierarchical JPEG .*libjpeg-turbo"):
        decode_file(path)
    assert os.path.getsize(path) == len(data)
