"""A model with several findings, built end to end for the cpu target from its config: normal /
bacterial / viral pneumonia on real X-rays (tests/converters/three_class_fixture.py), findings
BACTERIAL and VIRAL.

Each finding's threshold is chosen on validation (one finding against the rest, the config's
sensitivity); each artifact carries each finding's validation and test metrics; the gate checks
every finding's drops; ``runtime triage`` writes p_NORMAL, p_BACTERIAL and p_VIRAL and flags a
case when any finding reaches its threshold.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.__main__ import main as converters_main
from evaluation.metrics import decision_threshold
from runtime.__main__ import main as runtime_main
from runtime.contract.manifest import Manifest, load_manifest
from tests.converters.three_class_fixture import (
    FINDINGS,
    LABELS,
    TEST_FOLDER,
    write_config,
)

pytestmark = pytest.mark.slow  # one cpu build of a 128 px network (about a minute on 2 cores)

SENSITIVITY = 0.95
TRIAGE_PER_LABEL = 8  # X-rays of kermany_test_224 per label that runtime triage scores


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir: Path) -> dict:
    """The 3-class config, its cpu bundle and the manifest."""
    root = tmp_path_factory.mktemp("three-class")
    config = write_config(root, data_dir, SENSITIVITY)
    out = root / "dist"
    assert converters_main(["build", "--config", str(config), "--target", "cpu", "--out",
                            str(out), "--quiet"]) == 0
    return {"root": root, "config": config, "bundle": out / "cpu",
            "manifest": load_manifest(out / "cpu")}


def _reference_val(config: Path, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """The validation labels (class indices) and the PyTorch FP32 probabilities on them."""
    from converters.config.for_build import build_inputs
    from converters.config.model import load_config
    from converters.reference import torch_probs

    loaded, sets = build_inputs(load_config(config), tmp)
    return sets.val.labels, torch_probs(loaded.model, sets.val.inputs)


def test_the_manifest_names_every_finding_with_its_threshold_chosen_on_validation(built):
    manifest: Manifest = built["manifest"]
    model = manifest.model
    assert (model.classes, model.findings, model.task) == (list(LABELS), list(FINDINGS),
                                                          "multiclass")
    assert model.positive_class == FINDINGS[0]
    labels, probs = _reference_val(built["config"], built["root"] / "work")
    for finding in FINDINGS:
        column = LABELS.index(finding)
        expected = decision_threshold(labels == column, probs[:, column], SENSITIVITY)
        assert manifest.finding_thresholds[finding] == pytest.approx(expected, abs=1e-6)
        info = manifest.finding_threshold_info[finding]
        assert (info.chosen_on, info.sensitivity, info.val.n) == ("val", SENSITIVITY, len(labels))
        assert info.val.sensitivity >= SENSITIVITY
    assert manifest.threshold == manifest.finding_thresholds[FINDINGS[0]]
    assert manifest.threshold_info.val == manifest.finding_threshold_info[FINDINGS[0]].val
    assert manifest.finding_thresholds[FINDINGS[0]] != manifest.finding_thresholds[FINDINGS[1]]


def test_every_artifact_carries_each_findings_metrics_and_is_gated_on_each(built):
    manifest: Manifest = built["manifest"]
    assert {a.format for a in manifest.artifacts} == {"openvino-fp32", "openvino-int8",
                                                       "onnx-int8"}
    reference = {f: manifest.finding_threshold_info[f].val for f in FINDINGS}
    for artifact in manifest.artifacts:
        per = artifact.finding_metrics
        assert list(per) == list(FINDINGS), artifact.path
        assert artifact.metrics == per[FINDINGS[0]]  # the first finding's, for old readers
        assert per[FINDINGS[1]].val != per[FINDINGS[0]].val
        assert {m.val.n for m in per.values()} == {reference[FINDINGS[0]].n}
        assert {m.test.n for m in per.values()} == {3 * 40}
        # the recorded drops are the worst finding's, on validation
        drops = {f: (reference[f].sensitivity - per[f].val.sensitivity,
                     reference[f].auc - per[f].val.auc,
                     reference[f].specificity - per[f].val.specificity) for f in FINDINGS}
        gate = artifact.gate
        assert gate.sensitivity_drop == pytest.approx(max(d[0] for d in drops.values()))
        assert gate.auc_drop == pytest.approx(max(d[1] for d in drops.values()))
        assert gate.specificity_drop == pytest.approx(max(d[2] for d in drops.values()))
        assert gate.passed and gate.split == "val"
        for attempt in artifact.build.attempts:
            if not attempt.gate.passed:  # a failed retry level names the finding it failed on
                assert all(r.split(":")[0] in FINDINGS for r in attempt.gate.reasons
                           if not r.startswith("parity")), attempt.gate.reasons
    fp32 = manifest.artifact("model.fp32.xml")
    assert fp32.parity.agreement == 1.0 and fp32.parity.max_abs_diff < 1e-3
    report = (built["bundle"] / "report.md").read_text()
    assert "## Findings" in report and all(f"| {f} | `model.int8.xml` |" in report
                                           for f in FINDINGS)


def test_the_bundle_verifies_and_triage_flags_by_any_finding(built, data_dir, tmp_path):
    bundle = built["bundle"]
    assert runtime_main(["verify", str(bundle)]) == 0
    folder = tmp_path / "xrays"
    test_folder = data_dir / TEST_FOLDER
    picked = {"NORMAL": sorted((test_folder / "NORMAL").glob("*.jpeg")),
              "BACTERIAL": sorted((test_folder / "PNEUMONIA").glob("*_bacteria_*.jpeg")),
              "VIRAL": sorted((test_folder / "PNEUMONIA").glob("*_virus_*.jpeg"))}
    for label, paths in picked.items():
        (folder / label).mkdir(parents=True)
        for path in paths[-TRIAGE_PER_LABEL:]:
            shutil.copy(path, folder / label / path.name)
    out = tmp_path / "triage"
    assert runtime_main(["triage", str(folder), "--bundle", str(bundle), "--out", str(out),
                         "--quiet", "--workers", "1"]) == 0
    with (out / "results.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        assert reader.fieldnames[-3:] == ["p_NORMAL", "p_BACTERIAL", "p_VIRAL"]
    assert len(rows) == 3 * TRIAGE_PER_LABEL and all(r["status"] == "ok" for r in rows)
    thresholds = json.loads((bundle / "manifest.json").read_text())["finding_thresholds"]
    by_finding = {f: 0 for f in FINDINGS}
    for row in rows:
        p = np.array([float(row[f"p_{label}"]) for label in LABELS])
        assert p.sum() == pytest.approx(1, abs=1e-4)  # a softmax row
        reached = [f for f in FINDINGS if float(row[f"p_{f}"]) >= thresholds[f]]
        if row["scope"] == "out":
            assert row["flagged"] == "1"
            continue
        assert row["flagged"] == ("1" if reached else "0"), row
        if reached:
            finding = max(reached, key=lambda f: float(row[f"p_{f}"]))
            assert row["prediction"] == finding
            assert float(row["probability"]) == pytest.approx(float(row[f"p_{finding}"]))
            if reached == [finding]:
                by_finding[finding] += 1
        else:
            assert row["prediction"] == "NORMAL"
    # some case is flagged by the second finding alone: the first finding's threshold is not
    # the only one in force
    assert by_finding[FINDINGS[1]] >= 1, by_finding
