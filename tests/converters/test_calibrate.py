"""python -m converters calibrate: a site's operating point on real labelled X-rays, written into a
verified copy of the bundle that the runtime then uses."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evaluation.metrics import wilson_interval
from runtime.bundle.artifacts import read_manifest
from runtime.bundle.load import load_bundle
from runtime.bundle.site import read_site_calibration
from runtime.contract.manifest import SITE_CALIBRATION
from runtime.errors import BundleError
from runtime.running.results import read_rows
from tests.converters.calibration_data import SITE, TARGET, file_hashes, kermany, run_cli, write_csv


def _joined(work: Path) -> list[dict[str, str]]:
    with open(work / "labelled_results.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_original_bundle_is_untouched(site_calibration):
    assert file_hashes(site_calibration["bundle"]) == site_calibration["before"]
    assert read_manifest(site_calibration["bundle"]).site_calibration is None


def test_the_copy_declares_the_calibration_with_its_sha256(site_calibration):
    out = site_calibration["out"]
    manifest = read_manifest(out)
    assert manifest.site_calibration is not None
    assert manifest.site_calibration.path == SITE_CALIBRATION
    assert SITE_CALIBRATION in [f.path for f in manifest.files]
    site = read_site_calibration(out, manifest)
    assert site.site == SITE and site.target_sensitivity == TARGET
    assert site.source.bundle == str(site_calibration["bundle"])
    assert site.source.artifact == manifest.default_artifact
    assert f"wrote {out}/" in site_calibration["stdout"]
    assert "build threshold" in site_calibration["stdout"]
    assert "site threshold" in site_calibration["stdout"]


def test_counts_errors_and_out_of_scope_rows_per_class(site_calibration):
    site = read_site_calibration(site_calibration["out"], read_manifest(site_calibration["out"]))
    normal, pneumonia = site.counts["NORMAL"], site.counts["PNEUMONIA"]
    assert normal.listed == 131 and pneumonia.listed == 91
    assert normal.errors == 1  # the text file named .jpg
    assert pneumonia.out_of_scope >= 1  # the colour picture
    for c in (normal, pneumonia):
        assert c.errors + c.out_of_scope + c.in_scope == c.listed
    rows = {Path(r["file"]).name: r for r in _joined(site_calibration["work"])}
    assert rows["scan-notes.jpg"]["status"] == "error"
    colour = rows["colour.png"]
    assert colour["scope"] == "out" and colour["flagged_at_site"] == "1"
    assert colour["flagged_at_build"] == "1"  # out of scope: always sent to a person


def test_the_site_threshold_is_the_highest_that_meets_the_target(site_calibration):
    """Recomputed from the per-image results, independently of the module's own arithmetic."""
    out = site_calibration["out"]
    site = read_site_calibration(out, read_manifest(out))
    rows = [r for r in _joined(site_calibration["work"]) if r["status"] == "ok"
            and r["scope"] == "in"]
    positive = np.array([r["label"] == "PNEUMONIA" for r in rows])
    p = np.array([float(r["probability"]) for r in rows])
    assert positive.sum() == site.counts["PNEUMONIA"].in_scope
    t = site.threshold
    sensitivity = (p[positive] >= t).mean()
    assert sensitivity >= TARGET
    # the next candidate up: the smallest positive probability above the one the threshold sits
    # on (the threshold is half a CSV step, 5e-7, below that probability)
    above = p[positive][p[positive] > t + 1e-6]
    assert above.size and (p[positive] >= above.min()).mean() < TARGET, "not the highest"
    point = site.at_site_threshold
    assert point.tp == int((p[positive] >= t).sum()) and point.tn == int((p[~positive] < t).sum())
    assert (point.sensitivity_low, point.sensitivity_high) == wilson_interval(point.tp,
                                                                              point.tp + point.fn)
    assert (point.specificity_low, point.specificity_high) == wilson_interval(point.tn,
                                                                              point.tn + point.fp)
    build = site.at_build_threshold
    assert build.threshold == read_manifest(out).threshold
    assert build.tp == int((p[positive] >= build.threshold).sum())
    assert point.deployed_sensitivity <= 1 and point.sensitivity_low <= point.sensitivity <= \
        point.sensitivity_high
    assert t != build.threshold


def test_triage_with_the_calibrated_bundle_uses_the_site_threshold(site_calibration, tmp_path):
    from runtime.running.triage import triage

    out = site_calibration["out"]
    bundle = load_bundle(out)
    site = bundle.site_in_force
    assert site is not None and bundle.threshold == site.threshold != bundle.manifest.threshold
    images = site_calibration["work"] / "images"  # the staged labelled images
    result = triage(images, bundle, tmp_path / "triage", workers=2)
    rows = read_rows(result.results_csv)
    expected = {Path(r["file"]).name: r["flagged_at_site"]
                for r in _joined(site_calibration["work"])}
    differ = 0
    for row in rows:
        if row["status"] != "ok":
            continue
        p = float(row["probability"])
        flagged = row["flagged"] == "1"
        assert flagged == (p >= site.threshold or row["scope"] == "out")
        name = row["path"].split("/", 1)[1].split("-", 1)[1]
        assert row["flagged"] == expected[name], row["path"]
        differ += (p >= site.threshold) != (p >= bundle.manifest.threshold)
    assert differ > 0, "no image lies between the two thresholds: the test proves nothing"
    summary = json.loads(result.summary_json.read_text())
    assert summary["bundle"]["site"]["site"] == SITE
    assert summary["bundle"]["threshold"] == site.threshold


def test_another_artifact_keeps_the_build_threshold(site_calibration):
    out = site_calibration["out"]
    manifest = read_manifest(out)
    other = next(a.path for a in manifest.artifacts if a.path != manifest.default_artifact)
    bundle = load_bundle(out, other)
    assert bundle.site is not None and bundle.site_in_force is None
    assert bundle.threshold == manifest.threshold
    assert any("site calibration" in note for note in bundle.notes)


def test_a_changed_calibration_is_refused(site_calibration, tmp_path):
    copy = tmp_path / "cpu-site"
    shutil.copytree(site_calibration["out"], copy)
    path = copy / SITE_CALIBRATION
    size, data = path.stat().st_size, json.loads(path.read_text())
    shown = repr(data["threshold"])  # one digit changed: same size, other bytes
    data["threshold"] = next(v for d in "9876543210" if d != shown[2]  # repr of the same length
                             and len(repr(v := float(shown[:2] + d + shown[3:]))) == len(shown))
    path.write_text(json.dumps(data, indent=2) + "\n")
    assert path.stat().st_size == size
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy)
    data["threshold"] = 0.5
    path.write_text(json.dumps(data, indent=2) + "\n")
    with pytest.raises(BundleError, match="was modified"):
        load_bundle(copy)
    from runtime.__main__ import main as runtime_main

    assert runtime_main(["verify", str(copy)]) == 2


def test_the_folder_form_and_a_rerun_replacing_the_copy(site_calibration, data_dir, tmp_path):
    labelled = tmp_path / "site-images"
    for label, folder in (("NORMAL", "normal"), ("PNEUMONIA", "Pneumonia")):  # any case
        (labelled / folder).mkdir(parents=True)
        for file in kermany(data_dir, label, 110, skip=100):  # >= 50 in scope (docs/scope-and-calibration.md)
            (labelled / folder / file.name).symlink_to(file)
    out = site_calibration["out"]  # an earlier calibrated copy is replaced
    copy = tmp_path / "cpu-site"
    shutil.copytree(out, copy)
    code, stdout, stderr = run_cli(["calibrate", "--bundle", str(site_calibration["bundle"]),
                                    "--labelled", str(labelled), "--site", "Second site",
                                    "--out", str(copy), "--work", str(tmp_path / "work"), "-q"])
    if code == 2 and "too few" in stderr:
        pytest.skip(f"some of the 50 images were out of scope here: {stderr}")
    assert code == 0, stderr
    site = read_site_calibration(copy, read_manifest(copy))
    assert site.site == "Second site" and site.counts["NORMAL"].listed == 110
    assert site.target_sensitivity == read_manifest(copy).threshold_info.sensitivity  # default
    assert not list(tmp_path.glob(".cpu-site*")), "no staging folder left behind"


def test_fewer_than_50_images_of_a_class_are_refused(cpu_bundle, data_dir, tmp_path):
    rows = [(p, "NORMAL") for p in kermany(data_dir, "NORMAL", 49)] + \
           [(p, "PNEUMONIA") for p in kermany(data_dir, "PNEUMONIA", 60)]
    labels = write_csv(tmp_path / "labels.csv", rows)
    code, _, stderr = run_cli(["calibrate", "--bundle", str(cpu_bundle), "--labelled",
                               str(labels), "--site", "Small site", "--out",
                               str(tmp_path / "out"), "--work", str(tmp_path / "work"), "-q"])
    assert code == 2
    assert "49 NORMAL" in stderr and "at least 50" in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, words", [
    ("file,class\na.jpeg,NORMAL\n", "needs a header row with path and label"),
    ("path,label\nmissing.jpeg,NORMAL\n", "line 2: file not found"),
    ("path,label\n{image},COVID\n", "line 2: label 'COVID' is not one of NORMAL, PNEUMONIA"),
    ("path,label\n{image},NORMAL|PNEUMONIA\n",
     "line 2: label 'NORMAL|PNEUMONIA' names several labels, but this model is multiclass"),
])
def test_a_bad_csv_is_refused_with_the_fix(cpu_bundle, data_dir, tmp_path, content, words):
    labels = tmp_path / "labels.csv"
    labels.write_text(content.format(image=kermany(data_dir, "NORMAL", 1)[0]))
    code, _, stderr = run_cli(["calibrate", "--bundle", str(cpu_bundle), "--labelled",
                               str(labels), "--site", "X", "--work", str(tmp_path / "w"),
                               "--out", str(tmp_path / "o"), "-q"])
    assert code == 2 and words in stderr and str(labels) in stderr


def test_a_folder_without_class_subfolders_and_an_out_on_the_bundle_are_refused(
        cpu_bundle, tmp_path):
    (tmp_path / "images" / "NORMAL").mkdir(parents=True)
    code, _, stderr = run_cli(["calibrate", "--bundle", str(cpu_bundle), "--labelled",
                               str(tmp_path / "images"), "--site", "X", "--work",
                               str(tmp_path / "w"), "--out", str(tmp_path / "o"), "-q"])
    assert code == 2 and "no PNEUMONIA subfolder" in stderr
    code, _, stderr = run_cli(["calibrate", "--bundle", str(cpu_bundle), "--labelled",
                               str(tmp_path / "images"), "--site", "X", "--out",
                               str(cpu_bundle), "-q"])
    assert code == 2 and "never modified" in stderr


def test_calibrate_has_help():
    from converters.__main__ import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["calibrate"].format_help()
    assert "--labelled" in text and "--sensitivity" in text and "50" in text
