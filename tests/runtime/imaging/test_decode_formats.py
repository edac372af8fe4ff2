"""Damaged vs whole, odd but valid variants, unsupported formats, and same-bytes-same-pixels,
all on files built from the real X-rays."""

from __future__ import annotations

import io
import threading

import cv2
import numpy as np
import pytest

from runtime.errors import DecodeError
from runtime.imaging.decode import decode_bytes
from tests.runtime.imaging import hostile

pytestmark = pytest.mark.timeout(120)


def _pixels(data: bytes, name: str) -> np.ndarray:
    return decode_bytes(data, name, min_side=28).pixels


@pytest.fixture(scope="module")
def jpeg(data_dir) -> bytes:
    return hostile.xray_jpegs(data_dir)[0].read_bytes()


@pytest.fixture(scope="module")
def gray(data_dir) -> np.ndarray:
    return hostile.xray_gray(data_dir)


def test_damaged_jpeg_data_is_an_error(jpeg):
    """64 corrupted bytes mid-scan, a cut file, a cut file with an end marker: all damaged."""
    whole = _pixels(jpeg, "x.jpg")
    for seed in range(3):
        with pytest.raises(DecodeError, match="image data is damaged: the JPEG's compressed data"):
            _pixels(hostile.jpeg_corrupt_mid(jpeg, seed), "x.jpg")
    with pytest.raises(DecodeError, match="image data is damaged: the JPEG ends before"):
        _pixels(jpeg[: len(jpeg) * 6 // 10], "x.jpg")
    with pytest.raises(DecodeError, match="image data is damaged"):
        _pixels(jpeg[: len(jpeg) * 6 // 10] + b"\xff\xd9", "x.jpg")
    assert whole.shape[0] > 500


def test_harmless_jpeg_oddities_are_accepted(jpeg):
    whole = _pixels(jpeg, "x.jpg")
    trailer = jpeg + b"\x00" * 100 + b"thumbnail or padding after the end marker"
    assert np.array_equal(_pixels(trailer, "x.jpg"), whole)
    assert np.array_equal(_pixels(hostile.jpeg_with_header_junk(jpeg), "x.jpg"), whole)


def test_png_damage_and_harmless_oddities(gray):
    png = cv2.imencode(".png", np.stack([gray.astype(np.uint16) * 257] * 3, -1))[1].tobytes()
    whole = _pixels(png, "x.png")
    assert np.array_equal(whole, cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX))
    with pytest.raises(DecodeError, match="image data is damaged: the PNG's image data fails its "
                                          "checksum"):
        _pixels(hostile.png_with_bad_idat_crc(png), "x.png")
    with pytest.raises(DecodeError, match="image data is damaged: the PNG ends before"):
        _pixels(png[: len(png) // 2], "x.png")
    assert np.array_equal(_pixels(png + b"trailing junk" * 4, "x.png"), whole)
    assert np.array_equal(_pixels(hostile.png_with_bad_ancillary_crc(png), "x.png"), whole)


def test_tiff_variants_decode_to_the_xray(gray):
    for name, (data, expected) in hostile.tiff_variants(gray).items():
        decoded = decode_bytes(data, f"{name}.tif", min_side=28)
        assert decoded.format == "tiff"
        assert np.abs(decoded.pixels.astype(int) - expected.astype(int)).max() <= 1, name


def test_damaged_tiff_is_an_error(gray):
    data, _ = hostile.tiff_variants(gray)["float32_deflate"]
    middle = len(data) // 2
    with pytest.raises(DecodeError, match="image data is damaged"):
        _pixels(data[:middle] + bytes(64) + data[middle + 64:], "x.tif")


def test_bmp_variants_decode_to_the_xray(gray):
    for name, data in hostile.bmp_variants(gray).items():
        pixels = _pixels(data, f"{name}.bmp")
        diff = np.abs(pixels.astype(int) - gray.astype(int))
        if name == "pil_1":  # 1-bit: only black and white survive
            assert set(np.unique(pixels)) <= {0, 255}
        else:
            assert diff.max() <= (8 if name == "bitfields_565" else 0), name
    data = hostile.bmp_variants(gray)["pil_L"]
    with pytest.raises(DecodeError, match="image data is damaged: the BMP ends before"):
        _pixels(data[: len(data) // 2], "x.bmp")


def test_unsupported_formats_and_non_images_are_named(gray):
    from PIL import Image

    image = Image.fromarray(gray)
    for fmt, name in (("GIF", "GIF"), ("WEBP", "WebP")):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        for suffix in (".png", ".gif", ""):
            with pytest.raises(DecodeError, match=f"format not supported: the file is a {name}"):
                decode_bytes(buffer.getvalue(), f"x{suffix}", min_side=28)
    with pytest.raises(DecodeError, match="not an image: the file is text"):
        decode_bytes(b"PatientID,Finding\n1,none\n", "list.csv")
    with pytest.raises(DecodeError, match="not an image: its content matches no"):
        decode_bytes(np.random.default_rng(0).bytes(3000), "x.jpg")


def test_dicom_with_a_tiff_preamble_is_read_as_dicom(data_dir):
    data = (data_dir / "dicom" / hostile.CHEST_DICOM).read_bytes()
    dual = hostile.dicom_with_tiff_preamble(data)
    assert dual[:4] == b"II*\x00"
    decoded = decode_bytes(dual, "dual.tif", min_side=28)
    assert decoded.format == "dicom"
    assert np.array_equal(decoded.pixels, decode_bytes(data, "x.dcm", min_side=28).pixels)


def test_bombs_are_refused_from_the_header(gray):
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_bytes(hostile.png_header(30000, 30000) + b"\x00" * 100, "bomb.png")
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, gray, compression="zlib")
    data = bytearray(buffer.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:  # declare 60000 x 60000 pixels
        tags = tif.pages.first.tags
        offsets = [tags[name].valueoffset for name in ("ImageWidth", "ImageLength")]
        kinds = [tags[name].dtype for name in ("ImageWidth", "ImageLength")]
    for offset, kind in zip(offsets, kinds):
        size = 2 if int(kind) == 3 else 4
        data[offset:offset + size] = (60000).to_bytes(size, "little")
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_bytes(bytes(data), "bomb.tif")


def test_same_bytes_same_pixels_across_threads(data_dir, gray, jpeg):
    """A set of odd files decoded 6 times each by 4 threads in shuffled orders: identical arrays."""
    files = {f"tiff_{k}.tif": v[0] for k, v in hostile.tiff_variants(gray).items()}
    files.update({f"bmp_{k}.bmp": v for k, v in hostile.bmp_variants(gray).items()})
    files["x.jpg"] = jpeg
    files["x16.png"] = cv2.imencode(".png", np.stack([gray.astype(np.uint16) * 257] * 3,
                                                     -1))[1].tobytes()
    files["x.dcm"] = (data_dir / "dicom" / hostile.CHEST_DICOM).read_bytes()
    reference = {name: _pixels(data, name) for name, data in files.items()}
    mismatches: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(6):
            order = list(files)
            rng.shuffle(order)
            for name in order:
                if not np.array_equal(_pixels(files[name], name), reference[name]):
                    mismatches.append(name)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not mismatches


def test_pngsuite_like_corruptions_are_errors(gray):
    """The defects of PngSuite's x* files on a real X-ray PNG: each is an error, none a crash."""
    png = cv2.imencode(".png", gray)[1].tobytes()
    for name, data in hostile.pngsuite_like_corruptions(png).items():
        with pytest.raises(DecodeError) as info:
            _pixels(data, f"{name}.png")
        message = str(info.value)
        assert message.startswith(("image data is damaged", "not an image")), (name, message)


def test_a_cut_or_crc_damaged_png_never_reaches_libpng(gray, monkeypatch):
    """imagecodecs leaks ~1.8 MB per failed PNG decode: cut files and critical-chunk CRC errors
    are caught from the chunk table first (a service fed damaged PNGs must not grow)."""
    import imagecodecs

    png = cv2.imencode(".png", gray)[1].tobytes()
    idat = [c for c in hostile.png_chunks(png) if c[1] == b"IDAT"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("libpng was handed a damaged PNG")

    monkeypatch.setattr(imagecodecs, "png_decode", must_not_run)
    for cut in (png[: len(png) // 2], png[: idat[0][0] + 20], hostile.png_with_bad_idat_crc(png)):
        with pytest.raises(DecodeError, match="image data is damaged: the PNG"):
            decode_bytes(cut, "x.png")
