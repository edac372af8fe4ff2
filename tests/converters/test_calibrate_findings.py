"""Site calibration of a model with several findings: a threshold per finding, each one against the
rest on the site's labelled X-rays, used by the runtime; one finding keeps its file as it was. A
multi-label model's CSV may give an image several labels (``|``) or none: each finding is then
calibrated on the images that carry it against those that do not."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from runtime.bundle.artifacts import read_manifest
from runtime.bundle.load import load_bundle
from runtime.bundle.site import read_site_calibration, site_words
from runtime.contract.manifest import SITE_CALIBRATION
from tests.converters.calibration_data import TARGET, kermany, run_cli, write_csv
from tests.runtime.findings_bundle import SECOND, several_findings_bundle

FINDINGS = ["PNEUMONIA", SECOND]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, findings_bundle: Path, data_dir: Path) -> dict:
    """The two-finding bundle calibrated on 110 + 90 real Kermany test X-rays (the NORMAL ones
    labelled as the second finding, whose output they are)."""
    root = tmp_path_factory.mktemp("site-findings")
    rows = [(p, SECOND) for p in kermany(data_dir, "NORMAL", 110)] + \
           [(p, "PNEUMONIA") for p in kermany(data_dir, "PNEUMONIA", 90)]
    labels = write_csv(root / "labels.csv", rows)
    out, work = root / "site", root / "work"
    code, stdout, stderr = run_cli(["calibrate", "--bundle", str(findings_bundle), "--labelled",
                                    str(labels), "--site", "Two findings ward", "--sensitivity",
                                    str(TARGET), "--out", str(out), "--work", str(work),
                                    "--quiet"])
    assert code == 0, stderr
    return {"out": out, "work": work, "stdout": stdout, "stderr": stderr}


def _joined(work: Path) -> list[dict[str, str]]:
    with open(work / "labelled_results.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_each_finding_gets_the_highest_threshold_that_meets_the_target(calibrated):
    """Recomputed from the per-image results (each finding's p_ column, one against the rest)."""
    out = calibrated["out"]
    site = read_site_calibration(out, read_manifest(out))
    assert list(site.finding_thresholds) == FINDINGS == list(site.findings)
    assert site.finding_thresholds["PNEUMONIA"] == site.threshold
    rows = [r for r in _joined(calibrated["work"]) if r["status"] == "ok" and r["scope"] == "in"]
    for finding in FINDINGS:
        positive = np.array([r["label"] == finding for r in rows])
        p = np.array([float(r[f"p_{finding}"]) for r in rows])
        assert positive.sum() == site.counts[finding].in_scope >= 50
        t = site.finding_thresholds[finding]
        assert (p[positive] >= t).mean() >= TARGET
        above = p[positive][p[positive] > t + 1e-6]
        assert above.size and (p[positive] >= above.min()).mean() < TARGET, "not the highest"
        figures = site.findings[finding]
        assert figures.at_site_threshold.threshold == t
        assert figures.at_site_threshold.tp == int((p[positive] >= t).sum())
        assert figures.at_site_threshold.tn == int((p[~positive] < t).sum())
        assert 0.5 < figures.auc <= 1.0 and figures.target_sensitivity == TARGET
    # the first finding's figures are the calibration's own (as for a model with one finding)
    assert site.at_site_threshold == site.findings["PNEUMONIA"].at_site_threshold
    for finding in FINDINGS:
        assert f"Finding {finding}, one against the rest" in calibrated["stdout"]
    assert "Site thresholds PNEUMONIA " in calibrated["stdout"]
    assert "thresholds PNEUMONIA" in site_words(site)
    build = read_manifest(calibrated["out"]).thresholds()
    assert (f"build thresholds PNEUMONIA {build['PNEUMONIA']:.4f}, {SECOND} "
            f"{build[SECOND]:.4f}") in calibrated["stderr"]


def test_the_runtime_uses_every_site_threshold(calibrated, findings_bundle):
    site_bundle = load_bundle(calibrated["out"])
    site = site_bundle.site_in_force
    assert site is not None and site_bundle.thresholds == site.finding_thresholds
    assert load_bundle(findings_bundle).thresholds != site_bundle.thresholds
    assert site_bundle.describe()["site"]["thresholds"] == site.finding_thresholds
    joined = {r["file"]: r for r in _joined(calibrated["work"])}
    flagged = [r for r in joined.values() if r["flagged_at_site"] == "1"]
    assert flagged and all(
        r["scope"] != "in" or any(float(r[f"p_{f}"]) >= site.finding_thresholds[f]
                                  for f in FINDINGS) for r in flagged)


def test_one_finding_keeps_its_calibration_file(site_calibration):
    """The reference bundle's site_calibration.json has no per-finding keys."""
    data = json.loads((site_calibration["out"] / SITE_CALIBRATION).read_text())
    assert "finding_thresholds" not in data and "findings" not in data
    header = (site_calibration["work"] / "labelled_results.csv").read_text().splitlines()[0]
    assert header == ("file,label,status,probability,scope,flagged_at_build,flagged_at_site,"
                      "reason")


# --------------------------------------------------------------------------------------------
# a multi-label model: several labels per image, or none


@pytest.fixture(scope="module")
def multilabel_bundle(tmp_path_factory, cpu_bundle: Path) -> Path:
    """The two-finding bundle declared multi-label (its findings are independent labels)."""
    return several_findings_bundle(cpu_bundle, tmp_path_factory.mktemp("multilabel") / "cpu",
                                   task="multilabel")


#: the labels of the real Kermany test X-rays in the multi-label site CSV: (Kermany class, count,
#: skip, the CSV label); 30 carry both findings, 30 carry none
MULTILABEL_ROWS = [("NORMAL", 120, 0, SECOND), ("NORMAL", 30, 120, ""),
                   ("PNEUMONIA", 90, 0, "PNEUMONIA"),
                   ("PNEUMONIA", 29, 90, f"PNEUMONIA|{SECOND}"),
                   ("PNEUMONIA", 1, 119, f" {SECOND.lower()} | pneumonia ")]


@pytest.fixture(scope="module")
def multilabel_calibrated(tmp_path_factory, multilabel_bundle: Path, data_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("site-multilabel")
    rows = [(p, label) for kind, count, skip, label in MULTILABEL_ROWS
            for p in kermany(data_dir, kind, count, skip)]
    labels = write_csv(root / "labels.csv", rows)
    out, work = root / "site", root / "work"
    code, stdout, stderr = run_cli(["calibrate", "--bundle", str(multilabel_bundle),
                                    "--labelled", str(labels), "--site", "Multi-label ward",
                                    "--sensitivity", str(TARGET), "--out", str(out), "--work",
                                    str(work), "--quiet"])
    assert code == 0, stderr
    return {"out": out, "work": work, "stdout": stdout, "stderr": stderr}


def test_a_multilabel_finding_is_calibrated_on_the_images_that_carry_it(multilabel_calibrated):
    """Positives of a finding: every image whose labels include it (an image with both labels
    is a positive of both; one with none a negative of both); recomputed from the results."""
    out = multilabel_calibrated["out"]
    site = read_site_calibration(out, read_manifest(out))
    rows = _joined(multilabel_calibrated["work"])
    assert len(rows) == 270
    carried = [set(filter(None, r["label"].split("|"))) for r in rows]
    assert sum(c == set(FINDINGS) for c in carried) == 30
    assert sum(not c for c in carried) == 30
    assert site.counts[SECOND].listed == 150 and site.counts["PNEUMONIA"].listed == 120
    assert site.images is not None and site.images.listed == 270
    inside = [(r, c) for r, c in zip(rows, carried) if r["status"] == "ok" and r["scope"] == "in"]
    assert site.images.in_scope == len(inside)
    both = [r for r, c in inside if c == set(FINDINGS)]
    assert both, "some in-scope images carry both findings"
    for finding in FINDINGS:
        positive = np.array([finding in c for _, c in inside])
        p = np.array([float(r[f"p_{finding}"]) for r, _ in inside])
        assert positive.sum() == site.counts[finding].in_scope >= 50
        assert (~positive).sum() >= 50
        t = site.finding_thresholds[finding]
        assert (p[positive] >= t).mean() >= TARGET
        above = p[positive][p[positive] > t + 1e-6]
        assert above.size and (p[positive] >= above.min()).mean() < TARGET, "not the highest"
        point = site.findings[finding].at_site_threshold
        assert point.tp + point.fn == positive.sum() and point.tn + point.fp == (~positive).sum()
        assert point.tp == int((p[positive] >= t).sum())
        assert point.tn == int((p[~positive] < t).sum())
    stdout = multilabel_calibrated["stdout"]
    assert "all images" in stdout and f"images without {SECOND} not flagged" in stdout
    assert f"on the {site.images.in_scope} in-scope images" in stdout
    assert f"{site.images.in_scope} in-scope images; with label:" in site_words(site)
    data = json.loads((out / SITE_CALIBRATION).read_text())
    assert data["images"]["listed"] == 270


def test_a_multilabel_row_with_an_unknown_label_or_too_few_without_a_finding_is_refused(
        multilabel_bundle, data_dir, tmp_path):
    image = kermany(data_dir, "NORMAL", 1)[0]
    bad = write_csv(tmp_path / "bad.csv", [(image, "PNEUMONIA|COVID")])
    code, _, stderr = run_cli(["calibrate", "--bundle", str(multilabel_bundle), "--labelled",
                               str(bad), "--site", "X", "--work", str(tmp_path / "w1"),
                               "--out", str(tmp_path / "o1"), "-q"])
    assert code == 2 and "line 2: label 'COVID' is not one of" in stderr
    rows = [(p, f"PNEUMONIA|{SECOND}") for p in kermany(data_dir, "PNEUMONIA", 60)] + \
           [(p, SECOND) for p in kermany(data_dir, "NORMAL", 60)]
    every = write_csv(tmp_path / "every.csv", rows)
    code, _, stderr = run_cli(["calibrate", "--bundle", str(multilabel_bundle), "--labelled",
                               str(every), "--site", "X", "--work", str(tmp_path / "w2"),
                               "--out", str(tmp_path / "o2"), "-q"])
    assert code == 2 and f"0 without {SECOND}" in stderr and "at least 50" in stderr
    assert not (tmp_path / "o2").exists()


def test_a_multiclass_model_refuses_a_row_with_several_labels(findings_bundle, data_dir,
                                                                tmp_path):
    rows = [(kermany(data_dir, "NORMAL", 1)[0], SECOND),
            (kermany(data_dir, "PNEUMONIA", 1)[0], f"PNEUMONIA|{SECOND}")]
    labels = write_csv(tmp_path / "labels.csv", rows)
    code, _, stderr = run_cli(["calibrate", "--bundle", str(findings_bundle), "--labelled",
                               str(labels), "--site", "X", "--work", str(tmp_path / "w"),
                               "--out", str(tmp_path / "o"), "-q"])
    assert code == 2 and str(labels) in stderr
    assert f"line 3: label 'PNEUMONIA|{SECOND}' names several labels, but this model is " \
           "multiclass" in stderr
