"""Site calibration of a model with several findings: a threshold per finding, each one against the
rest on the site's labelled X-rays, used by the runtime; one finding keeps its file as it was."""

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
from tests.runtime.findings_bundle import SECOND

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
