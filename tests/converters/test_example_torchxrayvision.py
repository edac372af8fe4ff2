"""examples/torchxrayvision_densenet: TorchXRayVision's multi-label DenseNet-121 built from its
config with one command, verified, run on real X-rays by ``runtime triage``, and compared with
PyTorch eager fed by TorchXRayVision's own preprocessing (``xrv.datasets.normalize``,
``XRayCenterCrop``, ``XRayResizer``).

Its weights are random (TorchXRayVision's published ones are downloaded at first use, which the
kit never does), batch norm measured on 64 NIH training X-rays by examples/make_weights.py, which
also writes the labelled CSVs (adult_cxr/'s NIH images, their findings joined by ``|``). It is
built for the cpu target: OpenVINO FP32, and each INT8 format where it holds the gate. INT8 must
keep every finding's validation sensitivity within 0.5 pp, and with 22 to 42 validation positives
per finding one case moved by INT8 is 2.4 to 4.5 pp, so an INT8 format may be skipped (the cpu
target's INT8 is optional; the reasons are in ``skipped``). DenseNet-121 at 224 px takes many
minutes: run with CXR_ALL_EXAMPLES=1 (as the other DenseNet example).

Comparisons on 18 X-rays the build never read (12 NIH images taken out of the validation CSV
before the build: the training CSV's 300 are the fewest INT8 calibration takes; and 6 Hannover
images, which are not square):
- the FP32 artifact against PyTorch eager fed the kit's own pixels: every one of the 18 output
  columns within the format's parity tolerance (conversion and outputs);
- the default artifact against PyTorch eager fed by TorchXRayVision's preprocessing (skimage
  decode and antialiased resize against the kit's decoder and area resize): the decisions on every
  finding agree on at least 90% of image-finding pairs, and the mean probability differs by less
  than 0.05.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.__main__ import main as converters_main
from runtime.__main__ import main as runtime_main
from tests.converters.test_model_config_examples import make_weights
from tests.converters.vision import vision

NAME, TARGET = "torchxrayvision_densenet", "cpu"
FP32, INT8 = "openvino-fp32", {"openvino-int8", "onnx-int8"}
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("CXR_ALL_EXAMPLES") != "1",
                                 reason="DenseNet-121 takes minutes: CXR_ALL_EXAMPLES=1 runs it")]
FP32_TOLERANCE = 1e-3  # openvino-fp32's parity tolerance (runtime/contract/formats.py)
MIN_AGREEING_SHARE, MAX_MEAN_DIFF = 0.9, 0.05
FRESH_NIH, FRESH_HANNOVER = 12, 6


@pytest.fixture(scope="module")
def example(tmp_path_factory, data_dir: Path) -> dict:
    """Weights and CSVs made, the bundle built from the config, a folder of fresh X-rays."""
    vision("torchxrayvision")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CXR_DATA_DIR", str(data_dir))
        root = tmp_path_factory.mktemp("example-xrv")
        [config] = make_weights().make(root, [NAME], probe_images=64, epochs=0)
        nih = _take_out(config.parent / "val.csv", FRESH_NIH)
        out = root / "dist"
        assert converters_main(["build", "--config", str(config), "--target", TARGET,
                                "--out", str(out), "--quiet"]) == 0
    fresh = root / "fresh"
    fresh.mkdir()
    hannover = sorted((data_dir / "adult_cxr" / "hannover").glob("*.jpeg"))[:FRESH_HANNOVER]
    for path in [data_dir / "adult_cxr" / p for p in nih] + hannover:
        shutil.copy(path, fresh / path.name)
    return {"config": config, "bundle": out / TARGET, "root": root, "fresh": fresh}


def _take_out(labelled_csv: Path, count: int) -> list[str]:
    """The first ``count`` images of ``labelled_csv`` (paths), removed from it before the build,
    which reads every image of its splits: these are compared as X-rays it never read."""
    with labelled_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with labelled_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[count:])
    return [r["path"] for r in rows[:count]]


def _triage(example: dict, artifact: str | None = None) -> tuple[list[str], np.ndarray, dict]:
    """``runtime triage`` of the fresh X-rays: paths, (N, labels) probabilities, rows."""
    out = example["root"] / f"triage-{artifact or 'default'}"
    argv = ["triage", str(example["fresh"]), "--bundle", str(example["bundle"]), "--out",
            str(out), "--quiet", "--workers", "1"] + (["--exact-decode"] if artifact else [])
    assert runtime_main(argv + (["--artifact", artifact] if artifact else [])) == 0
    with (out / "results.csv").open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["path"])
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    labels = _config(example).output.labels
    probs = np.array([[float(r[f"p_{label}"]) for label in labels] for r in rows])
    return [r["path"] for r in rows], probs, {r["path"]: r for r in rows}


def _config(example: dict):
    from converters.config.model import load_config

    return load_config(example["config"])


def _eager(example: dict, inputs: np.ndarray) -> np.ndarray:
    """Every label's probability from TorchXRayVision's DenseNet in PyTorch eager: its logits,
    a sigmoid each (what ``DenseNet(apply_sigmoid=True)`` returns)."""
    import torch

    from converters.config.network import load_network

    network = load_network(_config(example))
    with torch.inference_mode():
        return torch.sigmoid(network(torch.from_numpy(inputs))).numpy()


def _xrv_inputs(paths: list[Path]) -> np.ndarray:
    """The X-rays as TorchXRayVision's own preprocessing makes them."""
    import skimage.io

    xrv = vision("torchxrayvision")
    transform = vision("torchvision.transforms").Compose([xrv.datasets.XRayCenterCrop(),
                                                          xrv.datasets.XRayResizer(224)])
    out = []
    for path in paths:
        image = xrv.datasets.normalize(skimage.io.imread(path), 255)
        if image.ndim == 3:
            image = image.mean(2)
        out.append(transform(image[None, ...]))
    return np.stack(out).astype(np.float32)


def test_the_multilabel_bundle_names_every_finding_and_verifies(example):
    manifest = json.loads((example["bundle"] / "manifest.json").read_text())
    config = _config(example)
    model = manifest["model"]
    assert (model["task"], model["classes"], model["findings"]) == (
        "multilabel", list(config.output.labels), list(config.output.findings))
    assert set(manifest["finding_thresholds"]) == set(config.output.findings)
    for finding, info in manifest["finding_threshold_info"].items():
        assert info["chosen_on"] == "val" and info["val"]["sensitivity"] >= 0.9, finding
    built = {a["format"] for a in manifest["artifacts"]}
    skipped = {s["format"]: s["reason"] for s in manifest["skipped"]}
    assert FP32 in built and built | set(skipped) == {FP32} | INT8, (built, skipped)
    print(f"\nxrv (cpu): built {sorted(built)}, default {manifest['default_artifact']}; "
          f"skipped {skipped or 'none'}")
    assert all(set(a["finding_metrics"]) == set(config.output.findings)
               for a in manifest["artifacts"])
    assert runtime_main(["verify", str(example["bundle"])]) == 0


def test_fp32_artifact_matches_pytorch_eager_on_every_column(example):
    from converters.config.for_build import preprocessing_of
    from runtime.imaging.decode import decode_file
    from runtime.preprocess.cpu import normalize, to_model_pixels

    paths, kit, _rows = _triage(example, "model.fp32.xml")
    spec = preprocessing_of(_config(example))
    pixels = np.stack([to_model_pixels(decode_file(example["fresh"] / p).pixels, spec)
                       for p in paths])
    eager = _eager(example, normalize(pixels, spec))
    assert kit.shape == eager.shape == (len(paths), 18)
    assert np.abs(kit - eager).max() <= FP32_TOLERANCE + 1e-6  # results.csv keeps 6 decimals


def test_default_artifact_agrees_with_pytorch_fed_by_torchxrayvision(example):
    manifest = json.loads((example["bundle"] / "manifest.json").read_text())
    paths, kit, rows = _triage(example)
    eager = _eager(example, _xrv_inputs([example["fresh"] / p for p in paths]))
    labels = list(_config(example).output.labels)
    thresholds = manifest["finding_thresholds"]
    columns = [labels.index(f) for f in thresholds]
    cut = np.array(list(thresholds.values()))
    agree = (kit[:, columns] >= cut) == (eager[:, columns] >= cut)
    print(f"xrv preprocessing vs the kit: {int(agree.sum())} of {agree.size} decisions agree, "
          f"mean |difference| {np.abs(kit - eager).mean():.4f}, max "
          f"{np.abs(kit - eager).max():.4f}")
    assert agree.mean() >= MIN_AGREEING_SHARE, agree.mean()
    assert np.abs(kit - eager).mean() < MAX_MEAN_DIFF
    for path, row in rows.items():  # flagged when any finding reaches its threshold
        p = {f: float(row[f"p_{f}"]) for f in thresholds}
        reached = any(p[f] >= thresholds[f] for f in thresholds)
        assert row["flagged"] == ("1" if reached or row["scope"] == "out" else "0"), path
