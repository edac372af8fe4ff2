"""DICOM SR back to the archive: triage the shared DICOMs, review one, write SRs, read them back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.bundle.hashing import sha256_file
from runtime.clinic.review import ReviewEntry, ReviewLog
from runtime.running.results import ResultsError, read_rows
from runtime.running.triage import triage
from tests.runtime.helpers import REPO, run_cli, runtime_env

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from runtime.__main__ import main  # noqa: E402
from runtime.clinic.report_sr import SR_SUFFIX, make_reports, sr_path, write_reports  # noqa: E402  # noqa: E402

DX = "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
CR = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
CHILD = "child/cr_age4.dcm"  # the CR image with PatientAge 4 years: in the model's scope


def _input_folder(data_dir: Path, folder: Path) -> Path:
    """The shared DICOMs (non_cxr/sample.dcm is an error row), a JPEG (a non-DICOM row) and the
    CR image relabelled as a 4-year-old's (in scope, where the shared adults are not; the tiny
    model's feature guard keeps the CR image in scope, not the DX one)."""
    shutil.copytree(data_dir / "dicom", folder)
    jpeg = sorted((data_dir / "cxr_samples" / "NORMAL").glob("*.jpeg"))[0]
    shutil.copy(jpeg, folder / jpeg.name)
    child = pydicom.dcmread(data_dir / "dicom" / CR)
    child.PatientAge = "004Y"
    (folder / CHILD).parent.mkdir()
    child.save_as(folder / CHILD)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


@pytest.fixture
def triaged(data_dir, loaded_bundle, tmp_path) -> tuple[Path, Path]:
    """(input folder, results folder) of a fresh triage run."""
    folder = _input_folder(data_dir, tmp_path / "in")
    triage(folder, loaded_bundle, tmp_path / "results", batch=8, workers=2)
    return folder, tmp_path / "results"


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in folder.rglob("*") if p.is_file()}


def _items(dataset):
    """Every content item of an SR content tree, depth first."""
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _named(sr, code: str) -> list:
    return [i for i in _items(sr) if i.ConceptNameCodeSequence[0].CodeValue == code]


def _number(sr, code: str) -> float:
    (item,) = _named(sr, code)
    return float(item.MeasuredValueSequence[0].FloatingPointValue)


def _coded(sr, code: str) -> str:
    (item,) = _named(sr, code)
    return item.ConceptCodeSequence[0].CodeValue


def _text(sr, code: str) -> list[str]:
    return [str(i.TextValue) for i in _named(sr, code)]


def test_srs_reference_the_source_images_and_record_the_row(triaged):
    folder, results = triaged
    rows = {r["path"]: r for r in read_rows(results / "results.csv")}
    assert rows["non_cxr/sample.dcm"]["status"] == "error"
    assert rows[CHILD]["scope"] == "in" and rows[DX]["scope"] == "out"
    sha = sha256_file(folder / CR)
    log = ReviewLog(results)
    log.append(ReviewEntry(CR, sha, "overruled", reviewer="AB",
                           probability=rows[CR]["probability"]))
    log.append(ReviewEntry(CR, sha, "note", note="old scar, no consolidation", reviewer="AB"))
    ReviewLog(results).append(ReviewEntry(CR, sha, "confirmed", reviewer="EF"))  # 2nd opinion
    log.append(ReviewEntry(DX, sha256_file(folder / DX), "unsure", reviewer="CD"))
    log.undo("CD")  # taken back: DX ends with no decision
    run = json.loads((results / "run.json").read_text())
    before = _files(folder)

    out = results.parent / "sr"
    outcome = make_reports(results, out)

    dicom_rows = [p for p, r in rows.items() if r["status"] == "ok" and r["decode"] == "dicom"]
    assert sorted(dicom_rows) == sorted([CR, DX, "Fake_MONOHR1.dcm", CHILD])
    assert sorted(outcome.written) == sorted(sr_path(out, p) for p in dicom_rows)
    assert (outcome.not_dicom, outcome.error_rows, outcome.problems) == (1, 1, [])
    assert _files(folder) == before  # nothing written into (or changed in) the input folder
    for path in dicom_rows:
        source = pydicom.dcmread(folder / path, stop_before_pixels=True)
        sr = pydicom.dcmread(sr_path(out, path))
        row = rows[path]
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
        assert sr.Modality == "SR" and sr.PatientID == source.PatientID
        assert sr.StudyInstanceUID == source.StudyInstanceUID
        assert sr.SeriesInstanceUID != source.SeriesInstanceUID
        assert sr.SOPInstanceUID != source.SOPInstanceUID
        (study,) = sr.CurrentRequestedProcedureEvidenceSequence
        (series,) = study.ReferencedSeriesSequence
        (instance,) = series.ReferencedSOPSequence
        assert study.StudyInstanceUID == source.StudyInstanceUID
        assert series.SeriesInstanceUID == source.SeriesInstanceUID
        assert (instance.ReferencedSOPClassUID, instance.ReferencedSOPInstanceUID) == \
            (source.SOPClassUID, source.SOPInstanceUID)
        (image,) = [i for i in _items(sr) if i.ValueType == "IMAGE"]
        assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert _number(sr, "122157") == float(row["probability"])  # Probability
        assert _number(sr, "122411") == run["threshold"]  # Threshold Value
        assert _coded(sr, "SCOPE") == ("373066001" if row["scope"] == "in" else "373067005")
        assert _text(sr, "SCOPEREASON") == [row["scope_reason"]]
        finding = {"out": "82334004", "in": "415684004" if row["flagged"] == "1"
                   else "NOTSUSPECTED"}[row["scope"]]
        assert _coded(sr, "233604007") == finding  # Pneumonia: suspected / not / indeterminate
        assert _text(sr, "111003") == [run["sha256"]]  # Algorithm Version: the artifact's sha256
        assert _text(sr, "SOURCESHA256") == [sha256_file(folder / path)]
        persons = [str(i.PersonName) for i in _named(sr, "121008")]  # Person Observer Name
        if path == CR:
            assert _text(sr, "REVIEW") == ["overruled", "confirmed"]  # every reviewer's decision
            assert persons == ["AB^", "EF^"]
            second = _named(sr, "REVIEW")[1].ContentSequence[0]
            assert (second.RelationshipType, str(second.PersonName)) == ("HAS OBS CONTEXT", "EF^")
            assert _text(sr, "121106") == ["old scar, no consolidation"]  # Comment
        else:
            assert _text(sr, "REVIEW") == [] and persons == []
    # same study (CR and Fake_MONOHR1 share one): one new SR series for it
    cr, fake = (pydicom.dcmread(sr_path(out, p)) for p in (CR, "Fake_MONOHR1.dcm"))
    assert cr.SeriesInstanceUID == fake.SeriesInstanceUID
    assert {cr.InstanceNumber, fake.InstanceNumber} == {1, 2}


def test_highdicom_reads_the_report_as_a_measurement_report(triaged):
    import highdicom as hd

    folder, results = triaged
    (path,) = [p for p in write_reports(results, results.parent / "sr") if CHILD in str(p)]
    report = hd.sr.srread(path)
    (group,) = report.content.get_image_measurement_groups()
    assert group.finding_type.value == "233604007"
    assert {m.name.value for m in group.get_measurements()} == {"122157", "122411"}
    source = pydicom.dcmread(folder / CHILD, stop_before_pixels=True)
    assert [s.referenced_sop_instance_uid for s in group.source_images] == [source.SOPInstanceUID]


def test_cli_writes_counts_and_paths(triaged):
    folder, results = triaged
    out = results.parent / "sr"
    proc = run_cli("report-sr", str(results), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"4 written to {out}" in proc.stdout
    assert "skipped 1 non-DICOM rows and 1 error rows" in proc.stdout
    assert str(out / ("Fake_MONOHR1.dcm" + SR_SUFFIX)) in proc.stdout
    with pytest.raises(SystemExit) as done:
        main(["report-sr", "--help"])
    assert done.value.code == 0


def test_a_changed_or_missing_source_is_not_reported(triaged, capsys):
    folder, results = triaged
    ReviewLog(results).append(ReviewEntry(DX, sha256_file(folder / DX), "confirmed", reviewer="AB"))
    changed = pydicom.dcmread(folder / DX)
    changed.PatientAge = "070Y"
    changed.save_as(folder / DX)  # not the bytes the reviewer saw
    (folder / CR).unlink()
    assert main(["report-sr", str(results), "--out", str(results.parent / "sr")]) == 1
    printed = capsys.readouterr()
    assert f"not reported: {DX}: the source file changed since the reviewer saw it" in printed.err
    assert f"not reported: {CR}: the source file is no longer in the input folder" in printed.err
    assert "2 written" in printed.out
    assert not sr_path(results.parent / "sr", DX).exists()


def test_refusals(triaged, tmp_path, capsys):
    folder, results = triaged
    assert main(["report-sr", str(tmp_path / "nowhere"), "--out", str(tmp_path / "sr")]) == 2
    assert "results folder not found" in capsys.readouterr().err
    assert main(["report-sr", str(results), "--out", str(folder / "sr")]) == 2
    assert "inside the triage input folder" in capsys.readouterr().err
    assert not (folder / "sr").exists()
    with pytest.raises(ResultsError, match="is the results folder itself"):
        make_reports(results, results)
    with pytest.raises(ResultsError, match="not a triage results folder"):
        make_reports(folder, tmp_path / "sr")  # the input folder holds no results.csv
    shutil.rmtree(folder)
    with pytest.raises(ResultsError, match="make it available"):
        make_reports(results, tmp_path / "sr")


def test_missing_highdicom_names_the_extra(triaged, tmp_path, monkeypatch, capsys):
    folder, results = triaged
    monkeypatch.setitem(sys.modules, "highdicom", None)
    assert main(["report-sr", str(results), "--out", str(tmp_path / "sr")]) == 2
    assert "cxr-deploy-kit[dicom]" in capsys.readouterr().err
    assert not (tmp_path / "sr").exists()


def test_runtime_imports_without_highdicom():
    code = ("import sys; sys.modules['highdicom'] = None; "
            "import runtime.clinic.report_sr, runtime.__main__; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=runtime_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# --- several findings ------------------------------------------------------------------------


@pytest.fixture
def triaged_findings(data_dir, findings_bundle, tmp_path) -> tuple[Path, Path]:
    """(input folder, results folder) of a run of the two-finding bundle (PNEUMONIA, EFFUSION)."""
    from runtime.bundle.load import load_bundle

    folder = _input_folder(data_dir, tmp_path / "in")
    triage(folder, load_bundle(findings_bundle), tmp_path / "results", batch=8, workers=2)
    return folder, tmp_path / "results"


def _groups(sr) -> dict[str, object]:
    """The measurement groups of an SR by finding type (code value)."""
    groups = {}
    for item in _items(sr):
        if item.get("ValueType") == "CONTAINER" and \
                item.ConceptNameCodeSequence[0].CodeValue == "125007":  # Measurement Group
            (finding_type,) = [i for i in item.ContentSequence
                               if i.ConceptNameCodeSequence[0].CodeValue == "121071"]
            groups[finding_type.ConceptCodeSequence[0].CodeValue] = item
    return groups


def test_several_findings_give_one_group_per_finding(triaged_findings):
    import highdicom as hd

    folder, results = triaged_findings
    run = json.loads((results / "run.json").read_text())
    assert list(run["thresholds"]) == ["PNEUMONIA", "EFFUSION"]
    rows = {r["path"]: r for r in read_rows(results / "results.csv")}
    ReviewLog(results).append(ReviewEntry(CHILD, sha256_file(folder / CHILD), "confirmed",
                                          reviewer="AB"))
    out = results.parent / "sr"
    outcome = make_reports(results, out)
    assert len(outcome.written) == 4 and outcome.problems == []
    codes = {"PNEUMONIA": "233604007", "EFFUSION": "EFFUSION"}  # SNOMED CT, else local
    for path in (CR, DX, "Fake_MONOHR1.dcm", CHILD):
        row, sr = rows[path], pydicom.dcmread(sr_path(out, path))
        groups = _groups(sr)
        assert sorted(groups) == sorted(codes.values())
        p = {label: float(row["p_" + label]) for label in codes}
        reached = [label for label in codes if p[label] >= run["thresholds"][label]]
        named = max(reached or codes, key=p.get)  # the finding the row names (verdict.decide)
        assert row["scope"] == "out" or row["prediction"] == (named if reached else "NORMAL")
        for label, code in codes.items():
            group = groups[code]
            assert _number(group, "122157") == float(row["p_" + label])  # its probability
            assert _number(group, "122411") == run["thresholds"][label]  # its threshold
            reached = float(row["p_" + label]) >= run["thresholds"][label]
            expected = ("82334004" if row["scope"] == "out" else
                        "415684004" if reached else "NOTSUSPECTED")
            assert _coded(group, code) == expected
            texts = _text(group, "PREDICTION")
            assert texts == ([row["prediction"]] if label == named else [])
            assert _text(group, "REVIEW") == (["confirmed"] if label == named and path == CHILD
                                              else [])
            parameters = [str(i.TextValue) for i in _named(group, "111002")]  # Algorithm Param.
            assert [p for p in parameters if p.startswith("threshold")] == [
                f"threshold PNEUMONIA: {run['thresholds']['PNEUMONIA']!r}",
                f"threshold EFFUSION: {run['thresholds']['EFFUSION']!r}"]
        report = hd.sr.srread(sr_path(out, path))  # highdicom reads it as a measurement report
        assert len(report.content.get_image_measurement_groups()) == 2


def test_rows_without_label_columns_give_the_single_finding_report(triaged_findings):
    """results.csv written before the p_<label> columns: today's one-group report."""
    import csv

    from runtime.running.results import COLUMNS

    folder, results = triaged_findings
    rows = read_rows(results / "results.csv")
    with open(results / "results.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([[r[c] for c in COLUMNS] for r in rows])
    run = json.loads((results / "run.json").read_text())
    out = results.parent / "sr"
    make_reports(results, out)
    row = {r["path"]: r for r in rows}[CR]
    sr = pydicom.dcmread(sr_path(out, CR))
    assert list(_groups(sr)) == ["233604007"]
    assert _number(sr, "122157") == float(row["probability"])
    assert _number(sr, "122411") == run["threshold"]
    assert _text(sr, "PREDICTION") == []


def test_the_gateway_writes_the_same_reports_for_several_findings(triaged_findings):
    """runtime.pacs.reports (the DICOM gateway's SRs) builds them with the same groups."""
    pytest.importorskip("pynetdicom")
    from runtime.pacs.reports import SR_FOLDER, write_new_reports

    folder, results = triaged_findings
    run = json.loads((results / "run.json").read_text())
    done = write_new_reports(results)
    assert len(done.written) == 4 and done.problems == []
    row = {r["path"]: r for r in read_rows(results / "results.csv")}[CHILD]
    sr = pydicom.dcmread(sr_path(results / SR_FOLDER, CHILD))
    groups = _groups(sr)
    assert sorted(groups) == ["233604007", "EFFUSION"]
    assert _number(groups["EFFUSION"], "122157") == float(row["p_EFFUSION"])
    assert _number(groups["EFFUSION"], "122411") == run["thresholds"]["EFFUSION"]
