"""The bundles of every target, built once from the shipped checkpoint on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from runtime.engines import create_engine, predict_proba
from runtime.hashing import sha256_file
from runtime.metrics import binary_metrics, threshold_for_sensitivity
from runtime.preprocess import Preprocessing, normalize, to_model_pixels
from targets import get_target, target_names

pytestmark = pytest.mark.slow  # builds bundles (about a minute on 2 cores)

REQUIRED = {"schema_version", "target", "model", "preprocessing", "threshold", "default_artifact",
            "artifacts", "provenance"}
ARTIFACT_KEYS = {"path", "format", "precision", "engine", "sha256", "bytes", "parity", "metrics"}


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _all_artifacts(built_bundles):
    for target, bundle in built_bundles.items():
        for art in _manifest(bundle)["artifacts"]:
            yield target, bundle, art


def test_every_target_has_a_complete_bundle(built_bundles):
    assert set(built_bundles) == set(target_names())
    for target, bundle in built_bundles.items():
        manifest = _manifest(bundle)
        assert REQUIRED <= set(manifest)
        assert manifest["schema_version"] == 1 and manifest["target"] == target
        assert manifest["model"]["input"] == {"name": "image", "shape": [-1, 1, 28, 28],
                                              "dtype": "float32"}
        assert manifest["model"]["positive_class"] == "PNEUMONIA"
        assert Preprocessing.from_dict(manifest["preprocessing"]).size == 28
        assert {"checkpoint_sha256", "data", "built_at", "versions"} <= set(manifest["provenance"])
        names = [a["path"] for a in manifest["artifacts"]]
        assert manifest["default_artifact"] in names
        profile = get_target(target)
        built = set(names) | {s["path"] for s in manifest["skipped"]}
        assert built == {spec.filename for spec in profile.artifacts}
        for art in manifest["artifacts"]:
            assert ARTIFACT_KEYS <= set(art)
            assert art["gate"]["passed"]
        assert (bundle / "report.md").is_file()
        # nothing half-written next to the bundles
        assert not [p.name for p in bundle.parent.iterdir() if p.name.startswith(".")]


def test_every_file_is_hashed(built_bundles):
    for bundle in built_bundles.values():
        manifest = _manifest(bundle)
        on_disk = {p.name for p in bundle.iterdir() if p.is_file()} - {"manifest.json"}
        assert {f["path"] for f in manifest["files"]} == on_disk
        for entry in manifest["files"]:
            path = bundle / entry["path"]
            assert sha256_file(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
        for art in manifest["artifacts"]:
            assert sha256_file(bundle / art["path"]) == art["sha256"]
            assert (bundle / art["path"]).stat().st_size == art["bytes"]


def test_threshold_is_chosen_on_validation_with_the_pytorch_model(built_bundles, reference_checkpoint,
                                                                  pneumoniamnist):
    import torch

    from converters.checkpoint import load_checkpoint

    loaded = load_checkpoint(reference_checkpoint)
    x = torch.from_numpy(normalize(pneumoniamnist.val.images, loaded.spec.preprocessing))
    with torch.no_grad():
        p = torch.softmax(loaded.model(x), 1)[:, 1].numpy()
    for target, bundle in built_bundles.items():
        manifest = _manifest(bundle)
        sensitivity = get_target(target).sensitivity
        assert manifest["threshold_info"]["chosen_on"] == "val"
        expected = threshold_for_sensitivity(pneumoniamnist.val.labels, p, sensitivity)
        assert manifest["threshold"] == pytest.approx(expected, abs=1e-6)


def test_manifest_metrics_are_reproduced_by_loading_each_artifact(built_bundles, pneumoniamnist):
    """Load every artifact independently, run the real test split, get the manifest's numbers."""
    for target, bundle, art in _all_artifacts(built_bundles):
        manifest = _manifest(bundle)
        spec = Preprocessing.from_dict(manifest["preprocessing"])
        images = np.stack([to_model_pixels(im, spec) for im in pneumoniamnist.test.images])
        engine = create_engine(bundle / art["path"], art["engine"],
                               providers=art.get("providers", ()), device=art.get("device", "CPU"))
        probs = predict_proba(engine, normalize(images, spec))
        positive = manifest["model"]["classes"].index(manifest["model"]["positive_class"])
        got = binary_metrics(pneumoniamnist.test.labels, probs[:, positive], manifest["threshold"])
        want = art["metrics"]["test"]
        where = f"{target}/{art['path']}"
        assert got.n == want["n"] == 624, where
        assert (got.tp, got.fn, got.tn, got.fp) == (want["tp"], want["fn"], want["tn"],
                                                    want["fp"]), where
        for key in ("auc", "sensitivity", "specificity", "accuracy"):
            assert getattr(got, key) == pytest.approx(want[key], abs=1e-6), (where, key)


def test_parity_is_recorded_and_sane(built_bundles):
    limits = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.25}
    for target, bundle, art in _all_artifacts(built_bundles):
        parity = art["parity"]
        assert parity["n"] == 524 and parity["split"] == "val"
        assert parity["max_abs_diff"] < limits[art["precision"]], (target, art["path"], parity)
        assert parity["agreement"] >= (0.999 if art["precision"] != "int8" else 0.98)


def test_gate_holds_against_the_fp32_reference(built_bundles):
    for target, bundle, art in _all_artifacts(built_bundles):
        ref = _manifest(bundle)["reference"]["metrics"]["test"]
        test = art["metrics"]["test"]
        assert ref["sensitivity"] - test["sensitivity"] <= 0.005 + 1e-9, (target, art["path"])
        assert ref["auc"] - test["auc"] <= 0.005 + 1e-9, (target, art["path"])


def test_onnx_artifacts_carry_metadata_and_a_dynamic_batch(built_bundles):
    for target, bundle, art in _all_artifacts(built_bundles):
        if art["format"] != "onnx":
            continue
        model = onnx.load(str(bundle / art["path"]))
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["precision"] == art["precision"]
        assert json.loads(meta["classes"]) == ["NORMAL", "PNEUMONIA"]
        assert json.loads(meta["preprocessing"])["size"] == 28
        (inp,) = model.graph.input
        assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert inp.type.tensor_type.shape.dim[0].dim_param
        assert not list(bundle.glob("*.onnx.data"))  # self-contained
        engine = create_engine(bundle / art["path"], "onnxruntime")
        assert engine.run(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 2)


def test_openvino_ir_keeps_fp32_weights_and_rt_info(built_bundles):
    import openvino as ov

    bundle = built_bundles["cpu"]
    core = ov.Core()
    fp32 = core.read_model(str(bundle / "model.fp32.xml"))
    assert fp32.get_rt_info(["model_info", "precision"]).astype(str) == "fp32"
    weight_types = {op.get_element_type().get_type_name() for op in fp32.get_ordered_ops()
                    if op.get_type_name() == "Constant"}
    assert "f16" not in weight_types  # save_model did not compress to FP16
    int8 = core.read_model(str(bundle / "model.int8.xml"))
    assert int8.get_rt_info(["model_info", "precision"]).astype(str) == "int8"
    assert any(op.get_type_name() == "FakeQuantize" or op.get_element_type().get_type_name() == "i8"
               for op in int8.get_ordered_ops())


def test_cpu_default_is_the_fastest_and_int8_variants_were_measured(built_bundles):
    manifest = _manifest(built_bundles["cpu"])
    speeds = {a["path"]: a["speed"]["throughput_b64"] for a in manifest["artifacts"]}
    assert manifest["default_artifact"] == max(speeds, key=speeds.get)
    onnx_int8 = next(a for a in manifest["artifacts"] if a["path"] == "model.int8.onnx")
    schemes = {v["variant"] for v in onnx_int8["build"]["variants"]}
    assert schemes == {"activation_type=uint8", "activation_type=int8"}
    assert onnx_int8["conversion"]["calibration_images"] >= 300
    assert onnx_int8["conversion"]["calibration_split"] == "train"


def test_gpu_bundle_records_the_loud_fallback(built_bundles):
    manifest = _manifest(built_bundles["gpu"])
    assert manifest["default_artifact"] == "model.fp16.onnx"
    for art in manifest["artifacts"]:
        assert art["providers"][:2] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
        ran = art["measured_with"]
        assert ran["active"][0] in art["providers"]
        assert ran["fell_back"] == (ran["active"][0] != art["providers"][0])
    fp16 = onnx.load(str(built_bundles["gpu"] / "model.fp16.onnx"))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)


def test_arm_bundle_has_int8_onnx_and_ort_format(built_bundles):
    manifest = _manifest(built_bundles["arm"])
    paths = {a["path"]: a for a in manifest["artifacts"]}
    assert paths["model.int8.onnx"]["conversion"]["scheme"] == "U8S8"
    if "model.int8.ort" in paths:
        assert paths["model.int8.ort"]["format"] == "ort"
    else:  # not built: the reason must be written down
        assert manifest["skipped"] and manifest["skipped"][0]["reason"]


def test_report_has_a_row_per_artifact_and_the_pytorch_baseline(built_bundles):
    for bundle in built_bundles.values():
        report = (bundle / "report.md").read_text()
        assert "| artifact |" in report and "PyTorch FP32 (reference)" in report
        for art in _manifest(bundle)["artifacts"]:
            assert f"`{art['path']}`" in report


def test_the_runtime_loads_and_verifies_every_artifact(built_bundles, pneumoniamnist):
    """The on-device loader (runtime.bundle) accepts what the converters wrote."""
    bundle_mod = pytest.importorskip("runtime.bundle")
    for target, bundle, art in _all_artifacts(built_bundles):
        loaded = bundle_mod.load_bundle(bundle, artifact=art["path"], device="cpu")
        batch = normalize(pneumoniamnist.test.images[:8], loaded.preprocessing)
        probs = loaded.predict(batch)
        assert probs.shape == (8,) and np.all((probs >= 0) & (probs <= 1)), (target, art["path"])
        assert loaded.threshold == _manifest(bundle)["threshold"]
