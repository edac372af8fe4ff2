"""Bundle loading: every artifact of a real CPU bundle runs; tampered, incomplete, outdated or
logit-returning bundles are refused before anything is triaged."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.bundle.artifacts import read_manifest
from runtime.bundle.hashing import sha256_file
from runtime.bundle.load import load_bundle
from runtime.contract.manifest import dump_manifest, load_manifest
from runtime.errors import BundleError
from tests.runtime.helpers import resign, run_cli


@pytest.fixture
def bundle_copy(cpu_bundle, tmp_path) -> Path:
    target = tmp_path / "cpu"
    shutil.copytree(cpu_bundle, target)
    return target


def test_every_artifact_loads_and_scores(cpu_bundle, pneumoniamnist):
    from evaluation.metrics import roc_auc
    from runtime.preprocess.cpu import normalize

    manifest = read_manifest(cpu_bundle)
    images, labels = pneumoniamnist.test.images[:256], pneumoniamnist.test.labels[:256]
    for entry in manifest.artifacts:
        bundle = load_bundle(cpu_bundle, entry.path, device="cpu")
        probabilities = bundle.predict_positive(normalize(images, bundle.preprocessing))
        assert probabilities.shape == (256,)
        # real X-rays are told apart, not just scored
        assert roc_auc(labels, probabilities) > 0.9
        assert not bundle.engine.fell_back
        if entry.precision_hint:
            assert bundle.engine.precision == entry.precision_hint  # e.g. OpenVINO's "f32"
    assert load_bundle(cpu_bundle, "onnx-int8").artifact.path == "model.int8.onnx"
    assert load_bundle(cpu_bundle).artifact.path == manifest.default_artifact


def test_tampered_artifact_is_refused(bundle_copy):
    manifest = read_manifest(bundle_copy)
    victim = bundle_copy / manifest.default.all_files()[-1].path  # for OpenVINO: the .bin
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size
    victim.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle_copy)


def test_truncated_and_missing_files_are_refused(bundle_copy):
    onnx_file = bundle_copy / "model.int8.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    with pytest.raises(BundleError, match="incomplete or was modified"):
        load_bundle(bundle_copy, "model.int8.onnx")
    onnx_file.unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(bundle_copy, "model.int8.onnx")


def test_bad_manifests(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nowhere")
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    with pytest.raises(BundleError, match="not in the bundle"):
        load_bundle(bundle_copy, "model.fp16.onnx")
    escaped = dict(manifest, artifacts=[dict(manifest["artifacts"][0], path="../../etc/passwd",
                                             files=[])],
                   default_artifact="../../etc/passwd")
    manifest_path.write_text(json.dumps(escaped))
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(bundle_copy)
    manifest_path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "threshold"}))
    with pytest.raises(BundleError, match=r"field threshold is missing; rebuild it with "
                                          r"`python -m converters build --target cpu`"):
        load_bundle(bundle_copy)
    wrong_type = json.loads(json.dumps(manifest))
    wrong_type["artifacts"][1]["parity"]["max_abs_diff"] = "small"
    manifest_path.write_text(json.dumps(wrong_type))
    with pytest.raises(BundleError, match=r"field artifacts\[1\]\.parity\.max_abs_diff is "
                                          r"'small', expected a number"):
        load_bundle(bundle_copy)
    manifest_path.write_text("{not json")
    with pytest.raises(BundleError, match="cannot be read"):
        load_bundle(bundle_copy)


def test_an_older_schema_is_refused_with_the_rebuild_command(bundle_copy):
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "schema_version": 1}))
    with pytest.raises(BundleError) as info:
        load_bundle(bundle_copy)
    assert str(bundle_copy) in str(info.value)
    assert ("was built by an older kit (schema 1); rebuild it with "
            "`python -m converters build --target cpu`") in str(info.value)


def test_provenance_names_the_model_config_or_the_training_dataset(cpu_bundle, bundle_copy):
    """A reference bundle names the config it was built from (and its sha256); a kit
    checkpoint's names its dataset instead: that field is validated with a plain error, and a
    manifest without it still loads (the benchmarks then ask for a rebuild)."""
    from tests.conftest import REFERENCE_CONFIG

    provenance = load_manifest(cpu_bundle).provenance
    if not os.environ.get("CXR_TEST_CPU_BUNDLE"):
        assert provenance.model_config == str(REFERENCE_CONFIG)
        assert provenance.model_config_sha256 == sha256_file(REFERENCE_CONFIG)
        assert provenance.dataset is None
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "provenance": {**manifest["provenance"],
                                                           "dataset": "chexpert"}}))
    with pytest.raises(BundleError, match=r"field provenance.dataset is 'chexpert', expected one "
                                          r"of pneumoniamnist, kermany; rebuild it with "
                                          r"`python -m converters build --target cpu`"):
        load_bundle(bundle_copy)
    older = {k: v for k, v in manifest["provenance"].items() if k != "dataset"}
    path.write_text(json.dumps({**manifest, "provenance": older}))
    assert load_manifest(bundle_copy).provenance.dataset is None


def test_the_manifest_round_trips_through_the_types(cpu_bundle, tmp_path):
    manifest = load_manifest(cpu_bundle)
    folder = tmp_path / "copy"
    folder.mkdir()
    dump_manifest(manifest, folder / "manifest.json")
    assert json.loads((folder / "manifest.json").read_text()) == \
        json.loads((cpu_bundle / "manifest.json").read_text())


def _strip_softmax(path: Path) -> None:
    """Turn the model's final Softmax into an Identity: it now returns logits."""
    import onnx

    model = onnx.load(str(path))
    outputs = {o.name for o in model.graph.output}
    (node,) = [n for n in model.graph.node if n.op_type == "Softmax" and n.output[0] in outputs]
    node.op_type, node.domain = "Identity", ""
    del node.attribute[:]
    onnx.save(model, str(path))


def test_an_artifact_returning_logits_is_refused_at_load(bundle_copy):
    _strip_softmax(bundle_copy / "model.int8.onnx")
    resign(bundle_copy, "model.int8.onnx")
    with pytest.raises(BundleError, match="not probabilities.*must end in a softmax"):
        load_bundle(bundle_copy, "model.int8.onnx")


def test_cli_refuses_tampered_bundle_and_writes_nothing(bundle_copy, data_dir, tmp_path):
    manifest = read_manifest(bundle_copy)
    main = bundle_copy / manifest.default_artifact
    data = bytearray(main.read_bytes())
    data[-2] ^= 0x20  # same size, one bit different
    main.write_bytes(bytes(data))
    out = tmp_path / "out"
    proc = run_cli("triage", str(data_dir / "dicom"), "--bundle", str(bundle_copy), "--out", str(out),
                   "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "failed its sha256 check" in proc.stderr
    assert not (out / "results.csv").exists()


def test_cli_verify_runs_every_artifact_on_the_reference_set(cpu_bundle):
    proc = run_cli("verify", str(cpu_bundle))
    assert proc.returncode == 0, proc.stderr
    manifest = read_manifest(cpu_bundle)
    lines = proc.stdout.splitlines()
    for entry in manifest.artifacts:
        row = next(line for line in lines if line.startswith(entry.path + " "))
        assert entry.format in row and row.rstrip().endswith("ok")
    assert f"same answers on {manifest.reference_set.n} reference images" in proc.stdout


def test_cli_verify_fails_when_an_artifact_answers_differently(bundle_copy):
    """Reference probabilities altered (and re-signed): the device no longer agrees."""
    ref = bundle_copy / "reference_set.npz"
    with np.load(ref) as data:
        arrays = {k: data[k] for k in data.files}
    key = "probabilities/model.int8.onnx"
    arrays[key] = arrays[key][:, ::-1].copy()  # classes swapped: every answer differs
    np.savez(ref, **arrays)
    resign(bundle_copy, "reference_set.npz")
    proc = run_cli("verify", str(bundle_copy))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("model.int8.onnx "))
    assert "DIFFERENT" in row
    assert "model.int8.onnx answer differently on this device" in proc.stderr


def test_gpu_bundle_on_a_machine_without_cuda(bundle_copy, caplog):
    """A bundle asking for CUDA: auto runs on the CPU and says so; a forced CUDA session that
    ONNX Runtime silently moves to the CPU is reported as a fallback, loudly."""
    manifest = load_manifest(bundle_copy)
    entry = manifest.artifact("model.int8.onnx")
    entry.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    manifest.preprocessing_backend = "gpu"
    dump_manifest(manifest, bundle_copy / "manifest.json")
    bundle = load_bundle(bundle_copy, "model.int8.onnx", cuda_ok=False)
    assert bundle.device == "cpu" and bundle.engine.active == ["CPUExecutionProvider"]
    assert any("CUDA not usable" in note for note in bundle.notes)
    from runtime.preprocess.gpu import cuda_usable

    if not cuda_usable()[0]:
        with caplog.at_level("WARNING"):
            forced = load_bundle(bundle_copy, "model.int8.onnx", cuda_ok=True)
        assert forced.engine.fell_back and forced.device == "cpu"
        assert any("FELL BACK" in note for note in forced.notes)
        assert "FELL BACK" in caplog.text
