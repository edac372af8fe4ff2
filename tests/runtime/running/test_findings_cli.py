"""`python -m runtime triage` with a model of several findings: the console names every finding's
threshold, results.csv has every label's probability, run.json every finding's threshold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runtime.running.results import read_rows
from tests.runtime.helpers import run_cli


def test_triage_cli_with_two_findings(findings_bundle: Path, data_dir: Path, tmp_path: Path):
    folder = tmp_path / "xrays"
    folder.mkdir()
    for label in ("NORMAL", "PNEUMONIA"):
        for path in sorted((data_dir / "kermany_test_224" / label).glob("*.jpeg"))[:4]:
            shutil.copy(path, folder / f"{label}-{path.name}")
    out = tmp_path / "out"
    proc = run_cli("triage", str(folder), "--bundle", str(findings_bundle), "--out", str(out),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    thresholds = run["thresholds"]
    assert list(thresholds) == ["PNEUMONIA", "EFFUSION"] and run["threshold"] == \
        thresholds["PNEUMONIA"]
    assert (f"thresholds PNEUMONIA {thresholds['PNEUMONIA']:.4f}, EFFUSION "
            f"{thresholds['EFFUSION']:.4f}") in proc.stderr
    assert (f"flagged (a finding at its threshold: PNEUMONIA >= {thresholds['PNEUMONIA']:.3f}, "
            f"EFFUSION >= {thresholds['EFFUSION']:.3f}, or out of scope)") in proc.stdout
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["p_EFFUSION", "p_PNEUMONIA"]
    for row in read_rows(out / "results.csv"):
        p = {k: float(row["p_" + k]) for k in thresholds}
        reached = [k for k in thresholds if p[k] >= thresholds[k]]
        assert row["flagged"] == str(int(bool(reached) or row["scope"] == "out"))
        if row["scope"] == "in":
            assert row["prediction"] == (max(reached, key=p.get) if reached else "NORMAL")


def test_one_finding_keeps_its_run_json_and_words(cpu_bundle: Path, data_dir: Path,
                                                  tmp_path: Path):
    folder = tmp_path / "xrays"
    folder.mkdir()
    for path in sorted((data_dir / "kermany_test_224" / "PNEUMONIA").glob("*.jpeg"))[:2]:
        shutil.copy(path, folder / path.name)
    out = tmp_path / "out"
    proc = run_cli("triage", str(folder), "--bundle", str(cpu_bundle), "--out", str(out),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    run = json.loads((out / "run.json").read_text())
    assert "thresholds" not in run  # run.json as it always was
    assert f"], threshold {run['threshold']:.4f}" in proc.stderr
    assert f"flagged (probability >= {run['threshold']:.3f}, or out of scope)" in proc.stdout
