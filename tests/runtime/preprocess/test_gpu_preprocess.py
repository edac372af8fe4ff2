"""The GPU preprocessing graph gives the CPU backend's pixels (run here on ONNX Runtime's CPU
provider: the graph is the same one CUDA runs) on real images of mixed sizes."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.contract.manifest import Preprocessing
from runtime.imaging.decode import decode_file
from runtime.preprocess.cpu import model_pixels_from_decode, normalize, reduced_window
from runtime.preprocess.gpu import GpuPreprocessor, cuda_usable

#: stated tolerance: at most one grey level per pixel (rounding of x.5 ties in float32 sums)
MAX_GREY_LEVELS = 1


def _real_files(data_dir):
    jpegs = sorted((data_dir / "cxr_samples").rglob("*.jpeg"))[::12]
    small = sorted((data_dir / "kermany_test_224").rglob("*.jpeg"))[::100]
    dicoms = sorted((data_dir / "dicom").glob("*.dcm"))
    return jpegs + small + dicoms


@pytest.mark.parametrize("reduce_to", [112, None])
def test_gpu_graph_matches_cpu_backend(data_dir, loaded_bundle, reduce_to):
    spec = loaded_bundle.preprocessing
    gpu = GpuPreprocessor(spec, ["CPUExecutionProvider"])
    windows, cpu_pixels = [], []
    for path in _real_files(data_dir):
        d = decode_file(path, min_side=spec.size, reduce_to=reduce_to)
        windows.append(reduced_window(d.pixels, d.width, d.height, d.reduction, spec))
        cpu_pixels.append(model_pixels_from_decode(d.pixels, d.width, d.height, d.reduction, spec))
    cpu_inputs = normalize(np.stack(cpu_pixels), spec)
    gpu_inputs = gpu(windows)  # one padded batch of mixed sizes
    assert gpu_inputs.shape == cpu_inputs.shape and gpu_inputs.dtype == np.float32
    grey = np.abs(gpu_inputs - cpu_inputs) / (spec.scale / spec.std[0])
    assert grey.max() <= MAX_GREY_LEVELS + 1e-3
    assert (grey > 0.5).mean() < 0.01  # ties are rare
    probability_diff = np.abs(loaded_bundle.predict_positive(gpu_inputs)
                              - loaded_bundle.predict_positive(cpu_inputs))
    assert probability_diff.max() < 0.01


def test_graph_normalisation_other_spec():
    spec = Preprocessing(size=16, scale=1 / 255, mean=(0.25,), std=(0.2,))
    image = np.arange(64 * 48, dtype=np.uint32).reshape(64, 48) % 256
    window = reduced_window(image.astype(np.uint8), 48, 64, 1, spec)
    out = GpuPreprocessor(spec, ["CPUExecutionProvider"])([window])
    expected = normalize(model_pixels_from_decode(image.astype(np.uint8), 48, 64, 1, spec)[None], spec)
    assert np.abs(out - expected).max() <= spec.scale / spec.std[0] + 1e-5


def test_cuda_probe_agrees_with_a_real_session(loaded_bundle):
    """The probe's verdict is what a CUDA session on a real artifact actually runs on."""
    import onnxruntime as ort

    usable, why = cuda_usable()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert (usable, why) == (False, "this onnxruntime build has no CUDA provider")
        return
    model = loaded_bundle.path / "model.int8.onnx"
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        active = ort.InferenceSession(str(model), options, providers=[
            "CUDAExecutionProvider", "CPUExecutionProvider"]).get_providers()
    except Exception:  # missing CUDA libraries may raise here instead of falling back
        active = []
    assert usable == (active[:1] == ["CUDAExecutionProvider"]), (usable, why, active)
    if not usable:  # e.g. this machine: onnxruntime-gpu lists CUDA, libraries or GPU missing
        assert why.startswith(("CUDA session failed", "CUDA provider did not load")), why


class _FakeSession:
    def __init__(self, active):
        self.active = active

    def get_providers(self):
        return self.active


@pytest.mark.parametrize("available,active,expected", [
    (["CPUExecutionProvider"], None, (False, "this onnxruntime build has no CUDA provider")),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"],
     (False, "CUDA provider did not load (no GPU or missing CUDA/cuDNN libraries)")),
    (["CUDAExecutionProvider", "CPUExecutionProvider"],
     ["CUDAExecutionProvider", "CPUExecutionProvider"], (True, "CUDA provider active")),
])
def test_cuda_probe_decides_from_the_active_providers(monkeypatch, available, active, expected):
    """Each branch of the probe, with onnxruntime's answers replaced (no GPU needed)."""
    import onnxruntime as ort

    from runtime.preprocess import gpu as gpu_preprocess

    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    monkeypatch.setattr(gpu_preprocess, "_session", lambda *a, **k: _FakeSession(active))
    assert gpu_preprocess.cuda_usable.__wrapped__() == expected


def test_device_cuda_refused_without_cuda(cpu_bundle):
    from runtime.bundle.load import load_bundle
    from runtime.errors import BundleError

    if cuda_usable()[0]:
        pytest.skip("CUDA is usable on this machine")
    with pytest.raises(BundleError, match="CUDA is not usable"):
        load_bundle(cpu_bundle, "model.int8.onnx", device="cuda")


def test_triage_with_gpu_backend_matches_cpu_backend(data_dir, loaded_bundle, tmp_path):
    """The whole runner with the GPU preprocessing backend (CPU provider here) vs the CPU one."""
    import csv
    import shutil

    from runtime.running.triage import triage

    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted((data_dir / "cxr_samples").rglob("*.jpeg"))[::35]:
        shutil.copy(path, folder / path.name)
    shutil.copytree(data_dir / "dicom", folder / "dicom")
    results = {}
    for backend in ("cpu", "gpu"):
        summary = triage(folder, loaded_bundle, tmp_path / backend, backend=backend).summary
        assert summary["preprocessing"]["backend"] == backend
        with open(tmp_path / backend / "results.csv", newline="") as handle:
            results[backend] = {r["path"]: r for r in csv.DictReader(handle)}
    assert results["cpu"].keys() == results["gpu"].keys()
    for path, row in results["cpu"].items():
        other = results["gpu"][path]
        assert row["status"] == other["status"]
        if row["status"] == "ok":
            assert abs(float(row["probability"]) - float(other["probability"])) < 0.01


def test_gpu_bundle_without_a_gpu_says_so_in_plain_words(built_bundles, data_dir, tmp_path):
    """ONNX Runtime's own provider-loading dump (``[E:onnxruntime ...] Failed to load library``)
    never reaches the console; the runtime's one-line warning says what happened instead."""
    import shutil
    import subprocess
    import sys

    folder = tmp_path / "xrays"
    folder.mkdir()
    for path in sorted((data_dir / "cxr_samples" / "NORMAL").glob("*.jpeg"))[:3]:
        shutil.copy(path, folder / path.name)
    run = subprocess.run([sys.executable, "-m", "runtime", "triage", str(folder), "--bundle",
                          str(built_bundles["gpu"]), "--out", str(tmp_path / "out"), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "onnxruntime_src" not in run.stderr and "[E:onnxruntime" not in run.stderr, run.stderr
    usable, _why = cuda_usable()
    if not usable:
        assert "CUDA not usable here" in run.stderr


def test_a_bundle_that_is_not_area_resized_is_preprocessed_on_the_cpu(cpu_bundle, data_dir,
                                                                     tmp_path, caplog):
    """The graph resizes by area only: a bundle asking for linear interpolation gets the CPU
    backend's pixels (its own) even with the GPU backend asked for, and triage says why."""
    import json
    import logging
    import shutil

    from runtime.bundle.load import load_bundle
    from runtime.preprocess.gpu import cannot_run
    from runtime.running.triage import triage

    assert cannot_run(Preprocessing()) is None
    assert "linear" in cannot_run(Preprocessing(interpolation="linear"))
    bundle = tmp_path / "linear"
    shutil.copytree(cpu_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["preprocessing"]["interpolation"] = "linear"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted((data_dir / "cxr_samples").rglob("*.jpeg"))[::70]:
        shutil.copy(path, folder / path.name)
    with caplog.at_level(logging.WARNING, logger="runtime.running.triage"):
        summary = triage(folder, load_bundle(bundle), tmp_path / "out", backend="gpu").summary
    assert summary["preprocessing"]["backend"] == "cpu"
    assert "resizes by area only" in caplog.text and "linear interpolation" in caplog.text
