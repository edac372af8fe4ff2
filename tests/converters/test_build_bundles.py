"""The bundles of every target, built once from the shipped checkpoint on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from evaluation.metrics import binary_metrics, decision_threshold
from runtime.bundle.hashing import sha256_file
from runtime.contract.formats import get_format
from runtime.contract.manifest import Manifest, load_manifest
from runtime.engines.base import predict_proba
from runtime.engines.registry import create_engine
from runtime.preprocess.cpu import normalize, to_model_pixels
from targets import get_target, target_names

pytestmark = pytest.mark.slow  # builds bundles (about a minute on 2 cores)


def _manifest(bundle: Path) -> Manifest:
    return load_manifest(bundle)


def _all_artifacts(built_bundles):
    for target, bundle in built_bundles.items():
        for art in _manifest(bundle).artifacts:
            yield target, bundle, art


def test_every_target_has_a_complete_bundle(built_bundles):
    assert set(built_bundles) == set(target_names())
    for target, bundle in built_bundles.items():
        manifest = _manifest(bundle)  # validated field by field on load
        assert manifest.schema_version == 2 and manifest.target == target
        assert manifest.model.input.shape == [-1, 1, 28, 28]
        assert manifest.model.positive_class == "PNEUMONIA"
        profile = get_target(target)
        built = {a.format for a in manifest.artifacts} | {s.format for s in manifest.skipped}
        assert built == set(profile.formats)
        for art in manifest.artifacts:
            assert art.path == get_format(art.format).filename
            assert art.gate.status in ("pass", "provisional")
        assert (bundle / "report.md").is_file()
        # nothing half-written next to the bundles
        assert not [p.name for p in bundle.parent.iterdir() if p.name.startswith(".")]


def test_every_file_is_hashed(built_bundles):
    for bundle in built_bundles.values():
        manifest = _manifest(bundle)
        on_disk = {p.name for p in bundle.iterdir() if p.is_file()} - {"manifest.json"}
        assert {f.path for f in manifest.files} == on_disk
        assert manifest.reference_set.path in on_disk
        for entry in manifest.files:
            path = bundle / entry.path
            assert sha256_file(path) == entry.sha256 and path.stat().st_size == entry.bytes
        for art in manifest.artifacts:
            assert sha256_file(bundle / art.path) == art.sha256
            assert (bundle / art.path).stat().st_size == art.bytes


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
        assert manifest.threshold_info.chosen_on == "val"
        expected = decision_threshold(pneumoniamnist.val.labels, p, sensitivity)
        assert manifest.threshold == pytest.approx(expected, abs=1e-6)


def test_manifest_metrics_are_reproduced_by_loading_each_artifact(built_bundles, pneumoniamnist):
    """Load every artifact independently, run the real test split, get the manifest's numbers."""
    from runtime.bundle.artifacts import placement_of

    for target, bundle, art in _all_artifacts(built_bundles):
        manifest = _manifest(bundle)
        spec = manifest.preprocessing
        images = np.stack([to_model_pixels(im, spec) for im in pneumoniamnist.test.images])
        engine = create_engine(bundle / art.path, art.engine, placement_of(bundle, art))
        probs = predict_proba(engine, normalize(images, spec))
        positive = manifest.model.positive_index
        got = binary_metrics(pneumoniamnist.test.labels, probs[:, positive], manifest.threshold)
        want = art.metrics.test
        where = f"{target}/{art.path}"
        assert got.n == want.n == 624, where
        assert (got.tp, got.fn, got.tn, got.fp) == (want.tp, want.fn, want.tn, want.fp), where
        for key in ("auc", "sensitivity", "specificity", "accuracy"):
            assert getattr(got, key) == pytest.approx(getattr(want, key), abs=1e-6), (where, key)


def test_parity_is_recorded_and_sane(built_bundles):
    for target, bundle, art in _all_artifacts(built_bundles):
        parity = art.parity
        assert parity.n == 524 and parity.split == "val"
        # float formats within their row's tolerance; INT8 (judged by the gate) still close
        limit = get_format(art.format).parity_tolerance or 0.25
        assert parity.max_abs_diff < limit, (target, art.path, parity)
        assert parity.agreement >= (0.999 if art.precision != "int8" else 0.98)


def test_gate_is_provisional_exactly_where_other_providers_measured(built_bundles):
    """No GPU here: the gpu bundle's numbers come from the CPU provider, so its gate is
    provisional; the cpu and arm bundles were measured with what they ask for."""
    from runtime.preprocess.gpu import cuda_usable

    for target, bundle, art in _all_artifacts(built_bundles):
        ran = art.measured_with
        asked = art.providers or [art.device]
        assert art.gate.measured_on == ran.active and art.gate.asked_for == asked
        expected = "pass" if ran.active[0] == asked[0] else "provisional"
        assert art.gate.status == expected, (target, art.path)
    if not cuda_usable()[0]:
        gpu = _manifest(built_bundles["gpu"])
        assert {a.gate.status for a in gpu.artifacts} == {"provisional"}
        assert "gate **provisional**" in (built_bundles["gpu"] / "report.md").read_text()
    assert {a.gate.status for a in _manifest(built_bundles["cpu"]).artifacts} == {"pass"}


def test_onnx_artifacts_carry_metadata_and_a_dynamic_batch(built_bundles):
    for target, bundle, art in _all_artifacts(built_bundles):
        if Path(art.path).suffix != ".onnx":
            continue
        model = onnx.load(str(bundle / art.path))
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["precision"] == art.precision
        assert json.loads(meta["classes"]) == ["NORMAL", "PNEUMONIA"]
        assert json.loads(meta["preprocessing"])["size"] == 28
        (inp,) = model.graph.input
        assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert inp.type.tensor_type.shape.dim[0].dim_param
        assert not list(bundle.glob("*.onnx.data"))  # self-contained
        engine = create_engine(bundle / art.path, "onnxruntime")
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


def test_the_default_follows_the_profile_preference_not_a_timing(built_bundles):
    for target, bundle in built_bundles.items():
        manifest = _manifest(bundle)
        profile = get_target(target)
        built = [a.format for a in manifest.artifacts if a.gate.passed]
        first = next(key for key in profile.preference if key in built)
        assert manifest.default.format == first, target
        assert "preference" in manifest.default_artifact_reason
    onnx_int8 = _manifest(built_bundles["cpu"]).artifact("model.int8.onnx")
    assert onnx_int8.conversion["scheme"] == "U8S8"  # fixed, not the faster of two
    assert onnx_int8.conversion["calibration_images"] >= 300
    assert onnx_int8.conversion["calibration_split"] == "train"


def test_gpu_bundle_records_the_loud_fallback(built_bundles):
    manifest = _manifest(built_bundles["gpu"])
    assert manifest.default_artifact == "model.fp16.onnx"
    for art in manifest.artifacts:
        assert art.providers[:2] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
        ran = art.measured_with
        assert ran.active[0] in art.providers
        assert ran.fell_back == (ran.active[0] != art.providers[0])
    fp16 = onnx.load(str(built_bundles["gpu"] / "model.fp16.onnx"))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)


def test_arm_bundle_has_int8_onnx_and_ort_format(built_bundles):
    manifest = _manifest(built_bundles["arm"])
    paths = {a.path: a for a in manifest.artifacts}
    assert paths["model.int8.onnx"].conversion["scheme"] == "U8S8"
    if "model.int8.ort" in paths:
        assert paths["model.int8.ort"].format == "ort-int8"
    else:  # not built: the reason must be written down
        assert manifest.skipped and manifest.skipped[0].reason


def test_the_test_x_rays_as_files_are_measured_too(built_bundles, data_dir):
    """Every tiny bundle also carries the metrics of its test X-rays as kermany_test_224's JPEGs
    (what triage of that folder gives; tests/runtime/running/test_triage.py reproduces them): the same
    624 X-rays, another rendering, so close to but not the PneumoniaMNIST figures."""
    from converters.data.kermany import TEST_FOLDER

    for target, bundle in built_bundles.items():
        manifest = _manifest(bundle)  # [data.files] test of models/reference/model.toml
        assert manifest.provenance.test_files == f"{data_dir / TEST_FOLDER} (624 images)", target
        ref = manifest.reference.metrics.test_files
        assert ref is not None and ref.n == 624 and ref.tp + ref.fn == 390, target
        for art in manifest.artifacts:
            files, arrays = art.metrics.test_files, art.metrics.test
            assert files is not None and files.n == 624, (target, art.path)
            assert abs(files.auc - arrays.auc) < 0.02, (target, art.path)
            assert (files.tp, files.fn, files.tn, files.fp) != \
                (arrays.tp, arrays.fn, arrays.tn, arrays.fp), (target, art.path)
        report = (bundle / "report.md").read_text()
        assert "## The test X-rays as files" in report and TEST_FOLDER in report, target


def test_report_has_a_row_per_artifact_and_the_pytorch_baseline(built_bundles):
    for bundle in built_bundles.values():
        report = (bundle / "report.md").read_text()
        assert "| artifact |" in report and "PyTorch FP32 (reference)" in report
        for art in _manifest(bundle).artifacts:
            row = next(line for line in report.splitlines() if line.startswith(f"| `{art.path}`"))
            assert f"| {art.gate.status} |" in row


def test_the_reference_set_is_real_validation_images_with_build_answers(built_bundles,
                                                                       pneumoniamnist):
    for target, bundle in built_bundles.items():
        manifest = _manifest(bundle)
        ref = manifest.reference_set
        assert ref.n >= 64 and ref.split == "val"
        with np.load(bundle / ref.path) as data:
            inputs, indices = data["inputs"], data["indices"]
            expected = normalize(pneumoniamnist.val.images[indices], manifest.preprocessing)
            assert np.array_equal(inputs, expected)
            labels = pneumoniamnist.val.labels[indices]
            assert 0 < labels.sum() < len(labels)  # both classes
            for art in manifest.artifacts:
                probs = data[f"probabilities/{art.path}"]
                assert probs.shape == (ref.n, 2)
                # the build's answers tell the classes apart on these images
                assert probs[labels == 1, 1].mean() > probs[labels == 0, 1].mean() + 0.3


def test_the_runtime_verifies_every_artifact_on_this_device(built_bundles):
    """What the converters wrote, the on-device check accepts: same answers here."""
    from runtime.bundle.selfcheck import verify_all

    for target, bundle in built_bundles.items():
        checks = verify_all(bundle, device="cpu")
        assert [c.artifact for c in checks] == [a.path for a in _manifest(bundle).artifacts]
        for check in checks:
            assert check.passed and check.agreement == 1.0, (target, check)
