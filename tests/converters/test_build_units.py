"""Fast unit tests of the build's parts: the format table, the gate, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from converters.bundle_writer import swap_into_place, write_bundle, write_reference_set
from converters.findings import Findings
from converters.formats import resolve
from converters.validate import Evaluation, check_gate, measure_speed, parity
from evaluation.metrics import binary_metrics
from runtime.contract import manifest as contract
from runtime.contract.formats import FORMATS, Placement, get_format
from runtime.contract.manifest import MeasuredWith
from runtime.engines.registry import ENGINES, engine_kind
from targets import all_targets

CPU = Placement(providers=("CPUExecutionProvider",))
ONE = Findings(("PNEUMONIA",), (1,))  # the reference models' one finding


def test_every_profile_format_is_in_the_table_with_a_converter_and_an_engine():
    for profile in all_targets():
        assert set(profile.preference) <= set(profile.formats), profile.name
        for key in profile.formats:
            row = get_format(key)
            convert, levels = resolve(row.converter)
            assert callable(convert) and levels, key
            engine_kind(row.engine)
            placement = row.placement(profile.name)
            assert placement.providers or placement.device, (profile.name, key)
            if row.source:
                assert profile.formats.index(row.source) < profile.formats.index(key)
    assert {"onnx-fp32", "onnx-fp16", "onnx-int8", "openvino-fp32", "openvino-int8",
            "ort-int8"} <= set(FORMATS)
    assert set(ENGINES) >= {"onnxruntime", "openvino"}


def test_unknown_format_names_the_closest():
    with pytest.raises(KeyError, match="Did you mean 'onnx-int8'"):
        get_format("onnx-int9")


def _evaluation(labels: np.ndarray, scores: np.ndarray, threshold: float,
                ran_on: tuple[str, ...] = ("CPUExecutionProvider",)) -> Evaluation:
    m = binary_metrics(labels, scores, threshold)
    probs = np.stack([1 - scores, scores], 1)
    return Evaluation(probs, probs, m, m, parity=parity(probs, probs, ONE, (threshold,)),
                      engine=MeasuredWith("onnxruntime", list(ran_on), list(ran_on), False, "f32"))


def test_gate_fails_on_a_sensitivity_drop_over_half_a_point():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 390 + [0] * 234)
    scores = np.where(labels == 1, rng.uniform(0.5, 1, 624), rng.uniform(0, 0.6, 624))
    ref = _evaluation(labels, scores, 0.5)
    one_missed, two_missed = scores.copy(), scores.copy()
    one_missed[0] = 0.1
    two_missed[:2] = 0.1
    assert check_gate(_evaluation(labels, one_missed, 0.5), ref, get_format("onnx-int8"), CPU).passed  # 0.26 pp
    gate = check_gate(_evaluation(labels, two_missed, 0.5), ref, get_format("onnx-int8"), CPU)  # 0.51 pp
    assert not gate.passed and "0.51 pp below" in gate.reasons[0]


def test_gate_fails_on_an_auc_drop():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 600)
    scores = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 600), 0, 1)
    ref = _evaluation(labels, scores, 0.0)  # everything flagged: sensitivity 1 for both
    noisy = np.clip(scores + rng.normal(0, 0.2, 600), 0, 1)
    gate = check_gate(_evaluation(labels, noisy, 0.0), ref, get_format("onnx-int8"), CPU)
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
    assert check_gate(_evaluation(labels, four_alarms, 0.5), ref, get_format("onnx-int8"), CPU).passed
    gate = check_gate(_evaluation(labels, five_alarms, 0.5), ref, get_format("onnx-int8"), CPU)
    assert not gate.passed and "specificity" in gate.reasons[0]
    assert gate.specificity_drop == pytest.approx(5 / 234)


def _swapped(scores: np.ndarray, missed: np.ndarray, swaps: int) -> np.ndarray:
    """``scores`` with ``swaps`` of the reference's missed positives caught and as many caught
    ones missed: sensitivity, specificity and AUC unchanged, 2 x ``swaps`` decisions moved."""
    moved = scores.copy()
    moved[missed[:swaps]] = 0.55
    moved[np.flatnonzero(scores > 0.5)[:swaps]] = 0.4
    return moved


def test_gate_fails_when_decisions_move_although_the_metrics_hold():
    rng = np.random.default_rng(4)
    labels = np.array([1] * 390 + [0] * 234)
    scores = np.where(labels == 1, rng.uniform(0.6, 1, 624), rng.uniform(0, 0.3, 624))
    scores[:20] = 0.4  # missed positives, still ranked above every normal: AUC 1
    ref = _evaluation(labels, scores, 0.5)
    row = get_format("onnx-int8")
    for swaps, passes in ((9, True), (20, False)):  # 18 of 624 moved (2.9%), 40 (6.4%)
        moved = _swapped(scores, np.arange(20), swaps)
        candidate = _evaluation(labels, moved, 0.5)
        candidate.parity = parity(candidate.val_probs, ref.val_probs, ONE, (0.5,))
        gate = check_gate(candidate, ref, row, CPU)
        assert (gate.sensitivity_drop, gate.specificity_drop, gate.auc_drop) == (0, 0, 0)
        assert gate.passed == passes and gate.agreement == pytest.approx(1 - 2 * swaps / 624)
        assert gate.min_agreement == 0.97
    assert gate.reasons == ["decisions differ from the FP32 reference's on 40 of 624 validation "
                            "images (6.4%; allowed 3%)"]


def test_gate_rejects_a_broken_float_artifact_by_parity():
    labels = np.array([0, 1, 0, 1])
    ref = _evaluation(labels, np.array([0.1, 0.9, 0.2, 0.8]), 0.5)
    off = _evaluation(labels, np.array([0.1, 0.9, 0.2, 0.8]), 0.5)
    off.parity = parity(np.array([[0.8, 0.2]] * 4), np.array([[0.9, 0.1]] * 4), ONE, (0.5,))
    assert not check_gate(off, ref, get_format("onnx-fp32"), CPU).passed
    assert check_gate(off, ref, get_format("onnx-int8"), CPU).passed


def _split_evaluation(labels: np.ndarray, val_scores: np.ndarray, test_scores: np.ndarray,
                      threshold: float = 0.5) -> Evaluation:
    """An artifact whose validation and test scores differ (parity: the validation scores)."""
    val = _evaluation(labels, val_scores, threshold)
    test = _evaluation(labels, test_scores, threshold)
    val.test_probs, val.test = test.test_probs, test.test
    return val


def test_the_gate_reads_the_validation_drop_only():
    rng = np.random.default_rng(3)
    labels = np.array([1] * 390 + [0] * 234)
    scores = np.where(labels == 1, rng.uniform(0.6, 1, 624), rng.uniform(0, 0.4, 624))
    ref = _evaluation(labels, scores, 0.5)
    ruined = scores.copy()
    ruined[:20] = 0.1  # 20 of 390 positives missed: 5.1 pp of sensitivity
    row = get_format("onnx-int8")

    on_val = check_gate(_split_evaluation(labels, ruined, scores), ref, row, CPU)
    assert not on_val.passed and on_val.split == "val"
    assert on_val.reasons[0].startswith("validation sensitivity 0.9487 is 5.13 pp below")
    assert on_val.sensitivity_drop == pytest.approx(20 / 390)

    on_test = check_gate(_split_evaluation(labels, scores, ruined), ref, row, CPU)
    assert on_test.passed and on_test.reasons == [] and on_test.split == "val"
    assert on_test.sensitivity_drop == 0.0 and on_test.auc_drop == 0.0


def test_manifests_gated_on_test_still_load_and_say_so():
    gate = contract.to_dict(_gate())
    del gate["split"]
    assert contract.parse(contract.GateVerdict, gate).split == "test"
    attempt = contract.to_dict(contract.BuildAttempt("default", 1.0, _gate(), _metrics(),
                                                     contract.Parity(0.0, 0.0, 1.0, 4)))
    attempt.pop("val", None)
    assert contract.parse(contract.BuildAttempt, attempt).val is None


def test_speed_measurement_uses_the_benchmark_loops():
    from benchmarks.measure import Settings
    from benchmarks.runners import sync_runners

    batches: list[int] = []
    settings = Settings(repeats=5, warmup=4, min_seconds=0.0, min_runs=3)
    speed = measure_speed(sync_runners(lambda x: batches.append(len(x))),
                          np.zeros((5, 1, 4, 4), np.float32), settings)
    assert speed.runs_b1 == 5 and speed.runs_b64 == 3
    assert batches == [1] * 9 + [64] * 4  # latency warm-up + runs, one throughput warm-up + 3
    assert speed.latency_b1_ms > 0 and speed.throughput_b64 > 0


def _metrics() -> contract.Metrics:
    return contract.Metrics(auc=0.9, sensitivity=0.9, specificity=0.8, accuracy=0.85, n=10)


def _gate() -> contract.GateVerdict:
    return contract.GateVerdict("pass", 0.0, 0.0, 0.0, [], ["CPU"], ["CPU"], 0.005, 0.005, 0.02)


def _manifest() -> contract.Manifest:
    """A small but complete schema-2 manifest (artifacts are filled in by the writer)."""
    from runtime.contract.manifest import Preprocessing

    split = contract.SplitMetrics(test=_metrics(), val=_metrics())
    return contract.Manifest(
        schema_version=contract.SCHEMA_VERSION, target="cpu", description="unit test",
        model=contract.ModelInfo("m", ["NORMAL", "PNEUMONIA"], "PNEUMONIA",
                                 contract.TensorSpec("image", [-1, 1, 28, 28], "float32"),
                                 contract.TensorSpec("probabilities", [-1, 2], "float32")),
        preprocessing=Preprocessing(size=28), preprocessing_backend="cpu", threshold=0.3,
        threshold_info=contract.ThresholdInfo("val", 0.98, "pytorch", _metrics()),
        default_artifact="model.xml", default_artifact_reason="unit test",
        gate=contract.GatePolicy("pytorch fp32", "test", 0.005, 0.005, 0.02),
        reference=contract.ReferenceModel("pytorch", "fp32", split),
        provenance=contract.Provenance("c.safetensors", "0" * 64, "a", {}, "d", "m", 0, "now",
                                       "here", {}),
        build=contract.BuildInfo(1.0), artifacts=[],
        reference_set=contract.ReferenceSet(contract.REFERENCE_SET, "", 0, 2, "val", 0,
                                            ["model.xml"]))


def _entry() -> contract.ArtifactEntry:
    split = contract.SplitMetrics(test=_metrics(), val=_metrics())
    return contract.ArtifactEntry(
        path="model.xml", format="openvino-fp32", precision="fp32", engine="openvino", sha256="",
        bytes=0, files=[], total_bytes=0, parity=contract.Parity(0.0, 0.0, 1.0, 10),
        metrics=split, gate=_gate(),
        measured_with=MeasuredWith("openvino", ["CPU"], ["CPU"], False, "f32"),
        build=contract.ArtifactBuild(1.0), device="CPU", precision_hint="f32")


def _write(tmp_path, report=lambda manifest: "ok"):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "model.xml").write_text("xml")
    (src / "model.bin").write_bytes(b"\0" * 10)
    ref = write_reference_set(src / "ref.npz", np.zeros((2, 1, 28, 28), np.float32),
                              np.array([3, 5]), {"model.xml": np.full((2, 2), 0.5, np.float32)})
    return write_bundle(tmp_path / "dist", "cpu",
                        [(_entry(), [src / "model.xml", src / "model.bin"])], _manifest(), ref,
                        report)


def test_write_bundle_hashes_every_part_and_replaces_atomically(tmp_path):
    bundle = _write(tmp_path)
    manifest = contract.load_manifest(bundle)
    (art,) = manifest.artifacts
    assert [f.path for f in art.files] == ["model.xml", "model.bin"]
    assert art.bytes == 3 and art.total_bytes == 13
    assert {f.path for f in manifest.files} == {"model.xml", "model.bin", "report.md",
                                                 "reference_set.npz"}
    ref = manifest.reference_set
    assert ref.bytes == (bundle / ref.path).stat().st_size
    with np.load(bundle / ref.path) as data:
        assert data["indices"].tolist() == [3, 5]
        assert data["probabilities/model.xml"].shape == (2, 2)
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


def test_the_reference_set_bytes_depend_only_on_the_arrays(tmp_path):
    import time

    arrays = (np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2), np.array([1, 2]),
              {"a.onnx": np.eye(2, dtype=np.float32)})
    first = write_reference_set(tmp_path / "one.npz", *arrays).read_bytes()
    time.sleep(2.1)  # zip timestamps have a 2-second resolution
    assert write_reference_set(tmp_path / "two.npz", *arrays).read_bytes() == first


def test_writing_refuses_a_manifest_the_runtime_would_refuse(tmp_path):
    manifest = _manifest()
    manifest.artifacts, manifest.threshold = [_entry()], 1.5
    with pytest.raises(contract.ContractError, match="threshold is 1.5"):
        contract.dump_manifest(manifest, tmp_path / "manifest.json")
    assert not (tmp_path / "manifest.json").exists()


def _two_findings(labels: np.ndarray, bacterial: np.ndarray, viral: np.ndarray) -> Evaluation:
    """An evaluation of a normal / bacterial / viral model at thresholds 0.5 (BACTERIAL and
    VIRAL scored one against the rest)."""
    probs = np.stack([1 - bacterial - viral, bacterial, viral], 1)
    measured = TWO.metrics(labels, probs, (0.5, 0.5))
    return Evaluation(probs, probs, measured[0], measured[0], finding_val=measured,
                      finding_test=measured, thresholds=(0.5, 0.5),
                      parity=parity(probs, probs, TWO, (0.5, 0.5)),
                      engine=MeasuredWith("onnxruntime", ["CPUExecutionProvider"],
                                          ["CPUExecutionProvider"], False, "f32"))


TWO = Findings(("BACTERIAL", "VIRAL"), (1, 2))


def test_the_gate_checks_every_finding_and_names_the_one_that_fails():
    labels = np.array([0] * 200 + [1] * 200 + [2] * 200)  # normal, bacterial, viral
    bacterial = np.where(labels == 1, 0.7, 0.1)
    viral = np.where(labels == 2, 0.6, 0.05)
    ref = _two_findings(labels, bacterial, viral)
    worse = viral.copy()
    worse[400:402] = 0.3  # two viral cases missed (still ranked first): 1 pp of sensitivity
    gate = check_gate(_two_findings(labels, bacterial, worse), ref, get_format("onnx-int8"), CPU,
                      TWO.names)
    assert not gate.passed and gate.reasons == [
        ("VIRAL: validation sensitivity 0.9900 is 1.00 pp below the FP32 reference 1.0000 "
         "(allowed 0.5 pp)")]
    assert gate.sensitivity_drop == pytest.approx(0.01)  # the worst finding's
    ok = check_gate(_two_findings(labels, bacterial, viral), ref, get_format("onnx-int8"), CPU,
                    TWO.names)
    assert ok.passed and ok.sensitivity_drop == 0.0


def test_parity_reads_every_column_and_agrees_only_on_every_findings_decision():
    reference = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.6, 0.35, 0.05]])
    moved = reference.copy()
    moved[1] = [0.2, 0.4, 0.4]  # VIRAL's decision changes (0.6 -> 0.4), BACTERIAL's does not
    moved[2] = [0.45, 0.35, 0.2]  # NORMAL moves most: no finding's decision changes
    found = parity(moved, reference, TWO, (0.5, 0.5))
    assert found.max_abs_diff == pytest.approx(0.2)  # VIRAL's column on image 1
    assert found.agreement == pytest.approx(2 / 3)
    assert parity(reference, reference, TWO, (0.5, 0.5)).agreement == 1.0


def test_multilabel_findings_score_each_label_against_the_rest():
    labels = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 1, 1]])  # 0/1 per label
    findings = Findings(("A", "C"), (0, 2), task="multilabel")
    assert findings.targets(labels, 1).tolist() == [True, False, False, True]
    probs = np.array([[0.9, 0.1, 0.8], [0.1, 0.2, 0.3], [0.7, 0.9, 0.1], [0.2, 0.8, 0.6]])
    thresholds = findings.thresholds(labels, probs, (1.0, 1.0))
    assert thresholds == pytest.approx((0.7 - 0.25, 0.6 - 0.15))  # halfway to the next lower
    measured = findings.metrics(labels, probs, thresholds)
    assert [m.sensitivity for m in measured] == [1.0, 1.0]
    assert [m.specificity for m in measured] == [1.0, 1.0]
    with pytest.raises(ValueError, match="multilabel model's labels"):
        findings.targets(labels[:, 0], 0)
