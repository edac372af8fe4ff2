"""DICOM transfer syntaxes as archives send them: a real chest radiograph re-encoded into each
syntax within the test, plus pydicom's own public test files (shipped in the pydicom wheel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import runtime.imaging.dicom
from runtime.errors import DecodeError
from runtime.imaging.decode import decode_file
from tests.runtime.imaging.hostile import CHEST_DICOM

pydicom = pytest.importorskip("pydicom")
from pydicom import uid  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def _gdcm_convert(source: Path, out: Path, syntax: str, near_lossless: int = 0) -> None:
    """Re-encode ``source`` into ``syntax`` with GDCM (a test-only encoder)."""
    gdcm = pytest.importorskip("gdcm")
    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(syntax)))
    if near_lossless:
        codec = gdcm.JPEGLSCodec()
        codec.SetLossless(False)
        codec.SetLossyError(near_lossless)
        change.SetUserCodec(codec)
    change.SetInput(reader.GetImage())
    assert change.Change(), syntax
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(out))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()


@pytest.fixture(scope="module")
def chest(data_dir, tmp_path_factory) -> dict[str, Path]:
    """The real chest DICOM (8-bit) and a 12-bit version of it, uncompressed."""
    folder = tmp_path_factory.mktemp("chest")
    source = data_dir / "dicom" / CHEST_DICOM
    ds = pydicom.dcmread(source)
    ds.PixelData = (ds.pixel_array.astype(np.uint16) * 16).tobytes()  # 0..4080
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.save_as(folder / "chest12.dcm", enforce_file_format=True)
    return {"8": source, "12": folder / "chest12.dcm"}


LOSSLESS = [(uid.JPEGLossless, "8"), (uid.JPEGLosslessSV1, "12"), (uid.JPEGLosslessSV1, "8"),
            (uid.JPEGLSLossless, "12"), (uid.JPEG2000Lossless, "8"), (uid.JPEG2000Lossless, "12"),
            (uid.RLELossless, "12")]


@pytest.mark.parametrize("syntax,bits", LOSSLESS, ids=[f"{s.name[:24]}-{b}bit" for s, b in LOSSLESS])
def test_lossless_syntaxes_give_the_uncompressed_pixels(chest, tmp_path, syntax, bits):
    out = tmp_path / "x.dcm"
    _gdcm_convert(chest[bits], out, syntax)
    assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == syntax
    decoded = decode_file(out, min_side=28)
    assert np.array_equal(decoded.pixels, decode_file(chest[bits], min_side=28).pixels)


def test_lossy_syntaxes_stay_close(chest, tmp_path):
    """JPEG baseline (8-bit), JPEG extended (12-bit), JPEG-LS near-lossless, JPEG 2000 lossy."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    results = {}
    _gdcm_convert(chest["8"], tmp_path / "baseline.dcm", uid.JPEGBaseline8Bit)
    _gdcm_convert(chest["8"], tmp_path / "nearlossless.dcm", uid.JPEGLSNearLossless,
                  near_lossless=2)
    ds = pydicom.dcmread(chest["12"])
    frame = imagecodecs.jpeg8_encode(ds.pixel_array, level=90, bitspersample=12)
    assert frame[frame.find(b"\xff\xc1") + 4] == 12  # a real 12-bit extended (SOF1) frame
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = uid.JPEGExtended12Bit
    ds.save_as(tmp_path / "extended12.dcm", enforce_file_format=True)
    ds = pydicom.dcmread(chest["12"])
    ds.compress(uid.JPEG2000, j2k_cr=[20])
    ds.save_as(tmp_path / "j2k_lossy.dcm", enforce_file_format=True)
    for name, bits in (("baseline", "8"), ("nearlossless", "8"), ("extended12", "12"),
                       ("j2k_lossy", "12")):
        decoded = decode_file(tmp_path / f"{name}.dcm", min_side=28).pixels.astype(int)
        reference = decode_file(chest[bits], min_side=28).pixels.astype(int)
        results[name] = np.abs(decoded - reference).mean()
        assert results[name] < 1.5, (name, results[name])
    assert results["nearlossless"] > 0  # really lossy


PYDICOM_SAME = ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
                "MR_small_implicit.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
                "MR_small_jp2klossless.dcm"]


def test_pydicom_test_files_in_every_encoding_agree(monkeypatch):
    """pydicom's MR_small in explicit/implicit LE, big endian, RLE, JPEG-LS, J2K: same pixels."""
    from pydicom.data import get_testdata_file

    monkeypatch.setattr(runtime.imaging.dicom, "XRAY_MODALITIES", frozenset({"MR", "NM", "OT", "CT"}))
    monkeypatch.setattr(runtime.imaging.dicom, "CHEST_PARTS", frozenset({"WHOLE BODY", "HEAD"}))
    pixels = {name: decode_file(get_testdata_file(name), min_side=28).pixels
              for name in PYDICOM_SAME}
    for name, array in pixels.items():
        assert array.shape == (64, 64) and np.array_equal(array, pixels["MR_small.dcm"]), name
    deflated = decode_file(get_testdata_file("image_dfl.dcm"), min_side=28)  # deflate, OT
    assert deflated.pixels.shape == (512, 512) and deflated.pixels.std() > 10
    extended = decode_file(get_testdata_file("JPGExtended.dcm"), min_side=28)  # 12-bit, NM
    assert extended.pixels.shape == (1024, 256) and extended.pixels.std() > 1
    rgb_sv1 = decode_file(get_testdata_file("SC_rgb_jpeg_gdcm.dcm"), min_side=28)  # SV1 RGB
    assert rgb_sv1.pixels.shape == (100, 100)


DAMAGEABLE = [uid.JPEGBaseline8Bit, uid.JPEGLSLossless, uid.JPEGLSNearLossless,
              uid.JPEGLossless, uid.JPEG2000Lossless]


@pytest.mark.parametrize("syntax", DAMAGEABLE, ids=[s.name[:24] for s in DAMAGEABLE])
def test_damaged_compressed_dicom_is_an_error(chest, tmp_path, syntax):
    """A frame cut in half (all syntaxes) or overwritten with 64 random bytes mid-frame (8-bit
    JPEG and JPEG-LS, whose decoders can tell) is an error row, not a quietly wrong image."""
    from pydicom.encaps import encapsulate, generate_frames

    _gdcm_convert(chest["8"], tmp_path / "src.dcm", syntax, near_lossless=2 if
                  syntax == uid.JPEGLSNearLossless else 0)
    ds = pydicom.dcmread(tmp_path / "src.dcm")
    frame = next(generate_frames(ds.PixelData))
    middle = len(frame) // 2
    noise = np.random.default_rng(0).integers(0, 255, 64, dtype=np.uint8).tobytes()
    cases = {"cut": frame[:middle]}
    if syntax not in (uid.JPEGLossless, uid.JPEG2000Lossless):
        cases["overwritten"] = frame[:middle] + noise + frame[middle + 64:]
    for name, bad in cases.items():
        ds.PixelData = encapsulate([bad])
        ds.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        with pytest.raises(DecodeError, match="image data is damaged: the DICOM pixel data"):
            decode_file(tmp_path / f"{name}.dcm", min_side=28)
    ds.PixelData = encapsulate([frame + b"\x00" * 6])  # padding after the end marker: fine
    ds.save_as(tmp_path / "padded.dcm", enforce_file_format=True)
    assert np.array_equal(decode_file(tmp_path / "padded.dcm", min_side=28).pixels,
                          decode_file(tmp_path / "src.dcm", min_side=28).pixels)


def test_garbage_compressed_dicom_is_an_error(chest, tmp_path):
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(chest["8"])
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds.file_meta.TransferSyntaxUID = uid.JPEG2000Lossless
    ds.save_as(tmp_path / "garbage.dcm", enforce_file_format=True)
    with pytest.raises(DecodeError, match="image data is damaged") as info:
        decode_file(tmp_path / "garbage.dcm", min_side=28)
    assert "pip" not in str(info.value) and "plugin" not in str(info.value)


def test_cut_uncompressed_dicom_is_an_error(chest, tmp_path):
    data = chest["8"].read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(DecodeError, match="image data is damaged"):
        decode_file(tmp_path / "cut.dcm", min_side=28)
