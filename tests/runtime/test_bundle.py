"""Bundle loading: every artifact of a real CPU bundle runs; tampered or incomplete bundles are
refused before anything is loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.bundle import BundleError, load_bundle, read_manifest
from tests.runtime.helpers import run_cli


@pytest.fixture
def bundle_copy(cpu_bundle, tmp_path) -> Path:
    target = tmp_path / "cpu"
    shutil.copytree(cpu_bundle, target)
    return target


def test_every_artifact_loads_and_scores(cpu_bundle, pneumoniamnist):
    from runtime.preprocess import normalize

    manifest = read_manifest(cpu_bundle)
    spec = None
    for entry in manifest["artifacts"]:
        bundle = load_bundle(cpu_bundle, entry["path"], device="cpu")
        spec = bundle.preprocessing
        probabilities = bundle.predict(normalize(pneumoniamnist.test.images[:64], spec))
        assert probabilities.shape == (64,) and np.all((0 <= probabilities) & (probabilities <= 1))
        assert not bundle.engine.fell_back
        if entry["engine"] == "openvino":
            assert bundle.engine.precision == "f32"  # reported as the hint's short name
    by_key = load_bundle(cpu_bundle, "onnx-int8")
    assert by_key.artifact["path"] == "model.int8.onnx"
    assert load_bundle(cpu_bundle).artifact["path"] == manifest["default_artifact"]


def test_tampered_artifact_is_refused(bundle_copy):
    manifest = read_manifest(bundle_copy)
    entry = next(a for a in manifest["artifacts"] if a["path"] == manifest["default_artifact"])
    victim = bundle_copy / entry["files"][-1]["path"]  # for OpenVINO: the .bin weights
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
    with pytest.raises(BundleError, match="missing threshold"):
        load_bundle(bundle_copy)
    manifest_path.write_text("{not json")
    with pytest.raises(BundleError, match="cannot be read"):
        load_bundle(bundle_copy)


def test_cli_refuses_tampered_bundle_and_writes_nothing(bundle_copy, data_dir, tmp_path):
    manifest = read_manifest(bundle_copy)
    main = bundle_copy / manifest["default_artifact"]
    data = bytearray(main.read_bytes())
    data[-2] ^= 0x20  # same size, one bit different
    main.write_bytes(bytes(data))
    out = tmp_path / "out"
    proc = run_cli("triage", str(data_dir / "dicom"), "--bundle", str(bundle_copy), "--out", str(out),
                   "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "failed its sha256 check" in proc.stderr
    assert not (out / "results.csv").exists()


def test_cli_verify(cpu_bundle):
    proc = run_cli("verify", str(cpu_bundle))
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout


def test_gpu_bundle_on_a_machine_without_cuda(bundle_copy, caplog):
    """A bundle asking for CUDA: auto runs on the CPU and says so; a forced CUDA session that
    ONNX Runtime silently moves to the CPU is reported as a fallback, loudly."""
    manifest_path = bundle_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["artifacts"]:
        if entry["engine"] == "onnxruntime":
            entry["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    manifest["preprocessing_backend"] = "gpu"
    manifest_path.write_text(json.dumps(manifest))
    bundle = load_bundle(bundle_copy, "model.int8.onnx", cuda_ok=False)
    assert bundle.device == "cpu" and bundle.engine.active == ["CPUExecutionProvider"]
    assert any("CUDA not usable" in note for note in bundle.notes)
    from runtime.gpu_preprocess import cuda_usable

    if not cuda_usable()[0]:
        with caplog.at_level("WARNING"):
            forced = load_bundle(bundle_copy, "model.int8.onnx", cuda_ok=True)
        assert forced.engine.fell_back and forced.device == "cpu"
        assert any("FELL BACK" in note for note in forced.notes)
        assert "FELL BACK" in caplog.text
