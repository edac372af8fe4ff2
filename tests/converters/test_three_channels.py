"""A 3-channel model flows through the build and the runtime when its Preprocessing says 3.

The model is the shipped reference ensemble rewritten for three channels with per-channel
mean/std and the same exact answers (tests/converters/three_channel_fixture.py). Its cpu and gpu
bundles are built (export, INT8 calibration data, reference set, scope guard, gate) and every
artifact, fed by the runtime's 3-channel pixels, must answer as the one-channel PyTorch model
does on its own one-channel pixels: a 1-channel shape, a first-channel-only normalisation or a
channel swap anywhere would break that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from converters.checkpoint import load_checkpoint
from evaluation.metrics import binary_metrics
from runtime.contract.formats import get_format
from runtime.contract.manifest import load_manifest
from runtime.imaging.decode import decode_file
from runtime.preprocess.cpu import normalize, prepare_batch, to_model_pixels
from tests.converters.three_channel_fixture import MEAN, STD, make_three_channel_checkpoint
from tests.runtime.helpers import run_cli

pytestmark = pytest.mark.slow  # builds two bundles (a few minutes on 2 cores)

#: decisions of an INT8 artifact against the FP32 model at the bundle threshold (the gate bounds
#: the metrics; this bounds the share of changed decisions on the X-rays below)
MIN_INT8_AGREEMENT = 0.95


@pytest.fixture(scope="module")
def three_channel(tmp_path_factory, reference_checkpoint: Path) -> Path:
    return make_three_channel_checkpoint(
        reference_checkpoint, tmp_path_factory.mktemp("three") / "three_channels.safetensors")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, three_channel: Path, data_dir: Path) -> dict[str, Path]:
    from converters.build import build_bundles

    built = build_bundles(["cpu", "gpu"], three_channel, tmp_path_factory.mktemp("dist-3ch"),
                          str(data_dir), progress=False)
    return {bundle.name: bundle for bundle in built}


def _xrays(data_dir: Path) -> list[np.ndarray]:
    files = sorted((data_dir / "cxr_samples").rglob("*.jpeg"))[::7]
    files += sorted((data_dir / "kermany_test_224").rglob("*.jpeg"))[::25]
    return [decode_file(path).pixels for path in files]


def _one_channel_probabilities(reference_checkpoint: Path, grays: list[np.ndarray]) -> np.ndarray:
    loaded = load_checkpoint(reference_checkpoint)
    spec = loaded.spec.preprocessing
    inputs = normalize(np.stack([to_model_pixels(g, spec) for g in grays]), spec)
    with torch.no_grad():
        return torch.softmax(loaded.model(torch.from_numpy(inputs)), 1).numpy()


def test_the_manifest_and_the_reference_set_say_three_channels(bundles, reference_checkpoint,
                                                               pneumoniamnist):
    import onnx

    for bundle in bundles.values():
        manifest = load_manifest(bundle)
        assert manifest.model.input.shape == [-1, 3, 28, 28]
        pre = manifest.preprocessing
        assert (pre.channels, pre.mean, pre.std) == (3, MEAN, STD)
        with np.load(bundle / manifest.reference_set.path) as ref:
            assert ref["inputs"].shape == (manifest.reference_set.n, 3, 28, 28)
        # the FP32 reference's figures are the one-channel model's on the same test images
        one = load_checkpoint(reference_checkpoint)
        test = pneumoniamnist.test
        inputs = prepare_batch(test.images, one.spec.preprocessing)
        with torch.no_grad():
            p = torch.softmax(one.model(torch.from_numpy(inputs)), 1)[:, 1].numpy()
        expected = binary_metrics(test.labels, p, manifest.threshold)
        assert manifest.reference.metrics.test.auc == pytest.approx(expected.auc, abs=1e-6)
        assert manifest.reference.metrics.test.sensitivity == pytest.approx(expected.sensitivity)
    graph = onnx.load(str(bundles["gpu"] / "model.fp32.onnx"))
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, 28, 28]


def test_every_artifact_answers_as_the_one_channel_model(bundles, reference_checkpoint, data_dir):
    from runtime.bundle.load import load_bundle

    grays = _xrays(data_dir)
    expected = _one_channel_probabilities(reference_checkpoint, grays)
    for target, bundle in bundles.items():
        for entry in load_manifest(bundle).artifacts:
            loaded = load_bundle(bundle, artifact=entry.path, device="cpu")
            assert entry.gate.passed, (target, entry.path, entry.gate.words())
            spec = loaded.preprocessing
            pixels = np.stack([to_model_pixels(g, spec) for g in grays])
            got = loaded.probabilities(normalize(pixels, spec))
            tolerance = get_format(entry.format).parity_tolerance
            diff = np.abs(got - expected).max()
            if tolerance is not None:  # FP32 / FP16: the very same answers, within the format's
                assert diff <= tolerance, (target, entry.path, diff)
            agree = ((got[:, 1] >= loaded.threshold) == (expected[:, 1] >= loaded.threshold)).mean()
            print(f"\n3-channel {target}/{entry.path} vs 1-channel PyTorch on {len(grays)} "
                  f"X-rays: max |dp| {diff:.2e}, decisions agree {agree:.3f}")
            assert agree >= MIN_INT8_AGREEMENT, (target, entry.path, agree)


def test_the_device_check_and_triage_run_on_three_channels(bundles, data_dir, tmp_path):
    """``runtime verify`` (the 3-channel reference set on this device) and triage with the
    GPU preprocessing graph (on the CPU provider here) on real X-rays."""
    from runtime.bundle.load import load_bundle
    from runtime.running.results import read_rows
    from runtime.running.triage import triage

    for bundle in bundles.values():
        proc = run_cli("verify", str(bundle))
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    folder = data_dir / "kermany_test_224" / "PNEUMONIA"
    loaded = load_bundle(bundles["gpu"], artifact="model.fp32.onnx", device="cpu")
    out = {}
    for backend in ("gpu", "cpu"):
        triage(folder, loaded, tmp_path / backend, backend=backend, batch=32, workers=2)
        out[backend] = {row["path"]: float(row["probability"])
                        for row in read_rows(tmp_path / backend / "results.csv")}
    assert len(out["gpu"]) == len(list(folder.glob("*.jpeg"))) > 300
    diffs = [abs(out["gpu"][k] - out["cpu"][k]) for k in out["cpu"]]
    print(f"\n3-channel triage, GPU graph vs CPU preprocessing, {len(diffs)} X-rays: "
          f"max |dp| {max(diffs):.2e}")
    assert max(diffs) <= 0.01  # the graph's pixels are the CPU's (one grey level at most)
    flagged = np.mean([p >= loaded.threshold for p in out["cpu"].values()])
    assert flagged > 0.8  # pneumonia X-rays: the model still sees them
