"""A real PACS (Orthanc on loopback) pushes the shared chest X-rays to the kit's listener; the kit
triages them and sends one SR per image back by C-STORE and by STOW-RS; QIDO-RS finds each SR in
its source study and pydicom reads it. dcmtk's storescu/echoscu are a second client."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from tests.runtime.pacs.kit import (
    Listener,
    chest_dx,
    copies,
    send_with_pynetdicom,
    uid_of,
    wait_for,
)
from tests.runtime.pacs.orthanc import Orthanc, free_port, require

#: how long an SR may take to reach Orthanc: a bound for a busy shared machine (CI timed out at 60 s
#: under load 10), where a first try that fails waits for the outbox's back-off; never a speed check
SENT_WITHIN_S = 180

DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, cpu_bundle: Path):
    """Orthanc + the kit's listener sending SRs back to it (C-STORE and STOW-RS)."""
    require("Orthanc", "storescu", "echoscu")
    root = tmp_path_factory.mktemp("pacs")
    kit_port = free_port()
    orthanc = Orthanc(root / "orthanc", {"kit": ("CXRKIT", "127.0.0.1", kit_port)}).start()
    listener = Listener(cpu_bundle, root / "kit", kit_port, "--allow", "ORTHANC@127.0.0.1",
                        "--allow", "STORESCU", "--send-to",
                        f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", "--stow",
                        f"{orthanc.url}/dicom-web")
    try:
        yield orthanc, listener.start()
    finally:
        listener.stop()
        orthanc.stop()


def _sent(listener: Listener, name: str) -> list[str]:
    return [line for line in listener.text().splitlines() if line.startswith(f"sent {name}.sr.dcm")]


def test_orthanc_pushes_and_finds_the_srs_in_the_studies(pacs, data_dir: Path):
    orthanc, listener = pacs
    chests = [data_dir / "dicom" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
              chest_dx(data_dir)]
    answer = orthanc.push("kit", [orthanc.upload(p) for p in chests])
    assert answer.ok and answer.json()["FailedInstancesCount"] == 0, answer.text
    names = [uid_of(p) + ".dcm" for p in chests]
    wait_for(lambda: all(len(_sent(listener, n)) == 2 for n in names), 90,
             "both SRs sent by C-STORE and STOW-RS")
    rows = {r["path"]: r for r in listener.rows()}
    for path, name in zip(chests, names):
        row = rows[name]
        assert row["status"] == "ok" and row["decode"].startswith("dicom")
        source = pydicom.dcmread(path, stop_before_pixels=True)
        found = orthanc.qido_srs(str(source.StudyInstanceUID))
        assert len(found) == 1, found  # C-STORE and STOW-RS delivered the same SR instance
        sr = pydicom.dcmread(pydicom.filebase.DicomBytesIO(
            orthanc.file_of(found[0]["00080018"]["Value"][0])))
        assert sr.Modality == "SR" and sr.StudyInstanceUID == source.StudyInstanceUID
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
        assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]\
            .ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert f"{float(row['probability']):.6f}" in "".join(
            f"{float(v.NumericValue):.6f}" for v in _numeric(sr))
    # no patient data on the console, only UIDs (a scope reason names the age: results.csv only)
    assert "patient age" in "".join(r["scope_reason"] for r in rows.values())
    text = listener.text()
    assert "patient age" not in text
    for path in chests:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        for key in ("PatientName", "PatientID", "AccessionNumber"):
            assert not str(header.get(key, "")) or str(header.get(key)) not in text, key


def _numeric(sr) -> list:
    found, stack = [], [sr]
    while stack:
        item = stack.pop()
        for child in item.get("ContentSequence", []):
            if child.ValueType == "NUM":
                found.extend(child.MeasuredValueSequence)
            stack.append(child)
    return found


def test_storescu_sends_dx_and_rle_and_a_damaged_one_becomes_an_error_row(pacs, data_dir,
                                                                           tmp_path: Path):
    orthanc, listener = pacs
    dx, rle, cut = copies(chest_dx(data_dir), tmp_path / "dx", 3, DX_PRESENTATION)
    ds = pydicom.dcmread(rle)
    ds.compress(pydicom.uid.RLELossless)
    ds.save_as(rle, enforce_file_format=True)
    damaged = pydicom.dcmread(cut)
    damaged.PixelData = damaged.PixelData[:500_000]  # half the pixels the header announces
    echo = subprocess.run(["echoscu", "-aet", "STORESCU", "-aec", "CXRKIT", "127.0.0.1",
                           str(listener.port)], check=False, capture_output=True, text=True,
                           timeout=60)
    assert echo.returncode == 0, echo.stderr
    sent = subprocess.run(["storescu", "-xr", "-aet", "STORESCU", "-aec", "CXRKIT", "127.0.0.1",
                           str(listener.port), str(dx), str(rle)],
                          check=False, capture_output=True, text=True,
                          timeout=120)
    assert sent.returncode == 0, sent.stderr
    assert send_with_pynetdicom(listener.port, [damaged]) == [0x0000]  # spooled: acknowledged
    names = [uid_of(p) + ".dcm" for p in (dx, rle)] + [uid_of(cut) + ".dcm"]
    wait_for(lambda: {r["path"] for r in listener.rows()} >= set(names), 90, "three rows")
    rows = {r["path"]: r for r in listener.rows()}
    assert rows[names[0]]["status"] == rows[names[1]]["status"] == "ok"
    assert rows[names[0]]["probability"] == rows[names[1]]["probability"]  # RLE is lossless
    assert rows[names[2]]["status"] == "error" and rows[names[2]]["error"]
    wait_for(lambda: len(_sent(listener, names[1])) == 2, SENT_WITHIN_S,
             "the RLE image's SR sent")
    assert len(orthanc.qido_srs(str(pydicom.dcmread(dx).StudyInstanceUID))) == 2


def test_a_disallowed_ae_and_a_non_image_are_refused_with_dicom_answers(pacs, tmp_path):
    _, listener = pacs
    intruder = subprocess.run(["echoscu", "-aet", "INTRUDER", "-aec", "CXRKIT", "127.0.0.1",
                               str(listener.port)], check=False, capture_output=True, text=True,
                           timeout=60)
    assert intruder.returncode != 0
    assert "Calling AE Title Not Recognized" in intruder.stderr, intruder.stderr
    assert "refused association from INTRUDER@127.0.0.1" in listener.text()
    report = next((listener.out / "sr").glob("*.sr.dcm"))  # an SR is not an image
    shutil.copy(report, tmp_path / "report.dcm")
    before = len(listener.rows())
    refused = subprocess.run(["storescu", "-R", "-aet", "STORESCU", "-aec", "CXRKIT",
                              "127.0.0.1", str(listener.port), str(tmp_path / "report.dcm")],
                             check=False, capture_output=True, text=True,
                           timeout=60)
    assert refused.returncode != 0
    assert "Rejected Presentation Contexts" in refused.stderr or \
        "No presentation context" in refused.stderr or "no acceptable" in refused.stderr.lower(),\
        refused.stderr
    assert listener.process.poll() is None and len(listener.rows()) == before
    status = listener.status()
    assert "C-STORE ORTHANC@127.0.0.1" in status and "0 waiting" in status


def test_a_later_review_decision_goes_out_as_an_amended_sr(pacs, data_dir: Path):
    from runtime.clinic.review import ReviewEntry, ReviewLog

    orthanc, listener = pacs
    source = pydicom.dcmread(chest_dx(data_dir), stop_before_pixels=True)
    name = str(source.SOPInstanceUID) + ".dcm"
    wait_for(lambda: len(_sent(listener, name)) == 2, 90, "the first SR sent")  # order-proof
    first = pydicom.dcmread(listener.out / "sr" / f"{name}.sr.dcm")
    ReviewLog(listener.out).append(ReviewEntry(name, "", "confirmed", reviewer="Dr Test"))
    wait_for(lambda: len([line for line in listener.text().splitlines()
                          if line.startswith(f"sent {name}.review-")]) == 2, SENT_WITHIN_S,
             "the amended SR sent by C-STORE and STOW-RS")
    found = orthanc.qido_srs(str(source.StudyInstanceUID))
    uids = {f["00080018"]["Value"][0] for f in found}
    assert len(found) == 2 and first.SOPInstanceUID in uids
    amended_uid = (uids - {first.SOPInstanceUID}).pop()
    amended = pydicom.dcmread(pydicom.filebase.DicomBytesIO(orthanc.file_of(amended_uid)))
    predecessor = amended.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]\
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert predecessor == first.SOPInstanceUID
    texts = []
    stack = [amended]
    while stack:
        item = stack.pop()
        for child in item.get("ContentSequence", []):
            texts.append(str(child.get("TextValue", "")))
            stack.append(child)
    assert "confirmed" in texts


#: pydicom's test files (also decoded in tests/runtime/imaging/test_decode_dicom.py), one per
#: transfer syntax the shared chest DICOMs do not cover (J2K, JPEG extended, deflated, JPEG
#: lossless SV1, big endian); Secondary Capture, not chest X-rays. JPEG-LS: Orthanc refuses
#: pydicom's JPEG-LS files (no study UID), so it is sent by pynetdicom.
PYDICOM_FILES = ("JPEG2000.dcm", "JPGExtended.dcm", "image_dfl.dcm", "SC_rgb_jpeg_gdcm.dcm",
                 "SC_rgb_small_odd_big_endian.dcm")
JPEG_LS = "JPEGLSNearLossless_08.dcm"


def test_every_transfer_syntax_arrives_as_sent_and_gets_a_row(pacs):
    from pydicom.data import get_testdata_file

    orthanc, listener = pacs
    files = [Path(get_testdata_file(name)) for name in PYDICOM_FILES]
    answer = orthanc.push("kit", [orthanc.upload(p) for p in files])
    assert answer.ok and answer.json()["FailedInstancesCount"] == 0, answer.text
    jpeg_ls = Path(get_testdata_file(JPEG_LS))
    assert send_with_pynetdicom(listener.port, [pydicom.dcmread(jpeg_ls)]) == [0x0000]
    files.append(jpeg_ls)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    names = {str(h.SOPInstanceUID) + ".dcm": h for h in headers}
    assert len(names) == len(files)
    wait_for(lambda: {r["path"] for r in listener.rows()} >= set(names), 90, "a row for each",
             listener.tail)
    rows = {r["path"]: r for r in listener.rows()}
    for name, header in names.items():
        spooled = pydicom.dcmread(listener.out / "spool" / name, stop_before_pixels=True)
        assert spooled.file_meta.TransferSyntaxUID == header.file_meta.TransferSyntaxUID, name
        assert rows[name]["status"] in ("ok", "error")
        assert rows[name]["status"] == "error" or rows[name]["scope"] == "out"  # not chest X-rays
    jpeg_ls_row = rows[str(headers[-1].SOPInstanceUID) + ".dcm"]  # it names no modality
    assert jpeg_ls_row["status"] == "error" and "not a radiograph" in jpeg_ls_row["error"]
    assert listener.process.poll() is None
