"""Fast unit tests of the build's parts: the converter table, variants, gate, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters.build import CONVERTERS, variants
from converters.bundle_writer import swap_into_place, write_bundle
from converters.validate import Evaluation, check_gate, measure_speed, parity
from runtime.metrics import binary_metrics
from targets import ArtifactSpec, all_targets


def test_every_profile_artifact_has_a_converter():
    for profile in all_targets():
        for spec in profile.artifacts:
            assert (spec.format, spec.precision) in CONVERTERS, (profile.name, spec.filename)


def test_tuple_options_expand_into_variants():
    spec = ArtifactSpec("m.onnx", "onnx", "int8", "onnxruntime",
                        options={"activation_type": ("uint8", "int8"), "per_channel": True})
    out = variants(spec)
    assert [name for name, _ in out] == ["activation_type=uint8", "activation_type=int8"]
    assert [v.options["activation_type"] for _, v in out] == ["uint8", "int8"]
    assert variants(ArtifactSpec("m.onnx", "onnx", "fp32", "onnxruntime"))[0][0] == "default"


def _evaluation(labels: np.ndarray, scores: np.ndarray, threshold: float) -> Evaluation:
    m = binary_metrics(labels, scores, threshold)
    probs = np.stack([1 - scores, scores], 1)
    return Evaluation(probs, probs, m, m, parity=parity(probs, probs, 1))


def test_gate_fails_on_a_sensitivity_drop_over_half_a_point():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 390 + [0] * 234)
    scores = np.where(labels == 1, rng.uniform(0.5, 1, 624), rng.uniform(0, 0.6, 624))
    ref = _evaluation(labels, scores, 0.5)
    one_missed, two_missed = scores.copy(), scores.copy()
    one_missed[0] = 0.1
    two_missed[:2] = 0.1
    assert check_gate(_evaluation(labels, one_missed, 0.5), ref, "int8").passed  # 0.26 pp
    gate = check_gate(_evaluation(labels, two_missed, 0.5), ref, "int8")  # 0.51 pp
    assert not gate.passed and "0.51 pp below" in gate.reasons[0]


def test_gate_fails_on_an_auc_drop():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 600)
    scores = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 600), 0, 1)
    ref = _evaluation(labels, scores, 0.0)  # everything flagged: sensitivity 1 for both
    noisy = np.clip(scores + rng.normal(0, 0.2, 600), 0, 1)
    gate = check_gate(_evaluation(labels, noisy, 0.0), ref, "int8")
    assert not gate.passed and gate.auc_drop > 0.005 and "AUC" in gate.reasons[0]


def test_gate_fails_on_a_specificity_drop_over_two_points():
    rng = np.random.default_rng(2)
    labels = np.array([1] * 390 + [0] * 234)
    scores = np.where(labels == 1, rng.uniform(0.6, 1, 624), rng.uniform(0, 0.4, 624))
    ref = _evaluation(labels, scores, 0.5)
    four_alarms, five_alarms = scores.copy(), scores.copy()
    # flagged, yet still ranked below every positive: AUC and sensitivity are unchanged
    four_alarms[390:394] = 0.55  # 4 of 234 normals now flagged: 1.71 pp
    five_alarms[390:395] = 0.55  # 5 of 234: 2.14 pp
    assert check_gate(_evaluation(labels, four_alarms, 0.5), ref, "int8").passed
    gate = check_gate(_evaluation(labels, five_alarms, 0.5), ref, "int8")
    assert not gate.passed and "specificity" in gate.reasons[0]
    assert gate.specificity_drop == pytest.approx(5 / 234)


def test_gate_rejects_a_broken_float_artifact_by_parity():
    labels = np.array([0, 1, 0, 1])
    ref = _evaluation(labels, np.array([0.1, 0.9, 0.2, 0.8]), 0.5)
    off = _evaluation(labels, np.array([0.1, 0.9, 0.2, 0.8]), 0.5)
    off.parity = parity(np.array([[0.8, 0.2]] * 4), np.array([[0.9, 0.1]] * 4), 1)
    assert not check_gate(off, ref, "fp32").passed
    assert check_gate(off, ref, "int8").passed


def test_speed_measurement_is_positive():
    speed = measure_speed(lambda x: x * 2, np.zeros((5, 1, 4, 4), np.float32), seconds=0.01)
    assert speed.latency_b1_ms > 0 and speed.throughput_b64 > 0 and speed.runs_b64 >= 3


def _write(tmp_path, report=lambda manifest: "ok"):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "model.xml").write_text("xml")
    (src / "model.bin").write_bytes(b"\0" * 10)
    entry = {"path": "model.xml", "format": "openvino", "precision": "fp32"}
    return write_bundle(tmp_path / "dist", "cpu", [(entry, [src / "model.xml", src / "model.bin"])],
                        {"schema_version": 1, "target": "cpu"}, report)


def test_write_bundle_hashes_every_part_and_replaces_atomically(tmp_path):
    bundle = _write(tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (art,) = manifest["artifacts"]
    assert [f["path"] for f in art["files"]] == ["model.xml", "model.bin"]
    assert art["bytes"] == 3 and art["total_bytes"] == 13
    assert {f["path"] for f in manifest["files"]} == {"model.xml", "model.bin", "report.md"}
    (bundle / "marker").write_text("old")
    again = _write(tmp_path)
    assert again == bundle and not (bundle / "marker").exists()
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["cpu"]


def test_a_failure_while_writing_leaves_the_old_bundle(tmp_path):
    bundle = _write(tmp_path)
    before = (bundle / "manifest.json").read_text()

    def broken(_manifest):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _write(tmp_path, broken)
    assert (bundle / "manifest.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["cpu"]


def test_swap_into_place_without_a_previous_bundle(tmp_path):
    staged = tmp_path / ".x.partial"
    staged.mkdir()
    (staged / "f").write_text("1")
    swap_into_place(staged, tmp_path / "x")
    assert (tmp_path / "x" / "f").read_text() == "1" and not staged.exists()
