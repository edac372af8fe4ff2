"""The clinical model as a bundle: built on Kermany images, then triaged from the JPEG folder.

``converters build`` evaluates a ``dataset: kermany`` checkpoint on the Kermany 224 JPEGs (its
own validation split, then ``kermany_test_224`` for the gate metrics), so the bundle's manifest
carries test metrics on exactly the 624 files ``runtime triage`` reads here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from evaluation.metrics import binary_metrics
from tests.runtime.helpers import run_cli

pytestmark = pytest.mark.slow

CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
#: The build decodes each JPEG with runtime.imaging.decode and area-resizes it with
#: runtime.preprocess.cpu.to_model_pixels (crop none) -- the code triage runs on a file below its
#: reduced-decode size (224 px < 4 x 128 px). Measured on this bundle's default (OpenVINO INT8):
#: triage vs the build's inputs differ by at most 5.0e-7 in probability (mean 2.5e-7), 0 decisions
#: change, so sensitivity, specificity and AUC agree to 4 decimals. The tolerance admits one
#: flipped case per class (1/390 sensitivity, 1/234 specificity) and 0.001 AUC: room for a
#: probability within float rounding of the threshold on another CPU, never a different decode.
SENSITIVITY_TOLERANCE = 1 / 390 + 1e-9
SPECIFICITY_TOLERANCE = 1 / 234 + 1e-9
AUC_TOLERANCE = 0.001


def test_clinical_bundle_is_built_and_gated_on_kermany(clinical_cpu_bundle: Path):
    from converters.clinical import CLINICAL_CHECKPOINT
    from runtime.bundle.hashing import sha256_file
    from runtime.contract.manifest import load_manifest

    manifest = load_manifest(clinical_cpu_bundle)
    assert manifest.provenance.checkpoint_sha256 == sha256_file(CLINICAL_CHECKPOINT)
    # --model clinical builds the clinical model's config, like any other model's
    assert manifest.provenance.model_config == str(CLINICAL_CHECKPOINT.parent / "model.toml")
    assert manifest.model.input.shape == [-1, 1, 128, 128]
    assert manifest.reference.metrics.test.n == 624  # kermany_test_224, not PneumoniaMNIST
    assert manifest.artifacts and all(a.gate.status == "pass" for a in manifest.artifacts)


def _class_rows(rows: list[dict]) -> list[dict]:
    """Rows of images under a class folder (the walk also lists manifest.csv, as an error)."""
    return [r for r in rows if len(Path(r["path"]).parts) == 2
            and Path(r["path"]).parts[0] in CLASS_FOLDERS
            and Path(r["path"]).suffix.lower() in IMAGE_SUFFIXES]


def test_triage_of_kermany_test_224_matches_the_manifest(clinical_cpu_bundle: Path, data_dir: Path,
                                                         tmp_path: Path):
    from runtime.contract.manifest import load_manifest

    proc = run_cli("triage", str(data_dir / "kermany_test_224"), "--bundle",
                   str(clinical_cpu_bundle), "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "out" / "results.csv", encoding="utf-8", newline="") as handle:
        rows = _class_rows(list(csv.DictReader(handle)))
    assert len(rows) == 624 and all(r["status"] == "ok" for r in rows)
    labels = np.array([Path(r["path"]).parts[0] == "PNEUMONIA" for r in rows])
    scores = np.array([float(r["probability"]) for r in rows])
    manifest = load_manifest(clinical_cpu_bundle)
    default = next(a for a in manifest.artifacts if a.path == manifest.default_artifact)
    measured = binary_metrics(labels, scores, manifest.threshold)
    expected = default.metrics.test
    print(f"\nclinical {default.path} on kermany_test_224: sensitivity {measured.sensitivity:.4f} "
          f"(manifest {expected.sensitivity:.4f}), specificity {measured.specificity:.4f} "
          f"(manifest {expected.specificity:.4f}), AUC {measured.auc:.4f} "
          f"(manifest {expected.auc:.4f})")
    assert int(labels.sum()) == 390
    assert abs(measured.sensitivity - expected.sensitivity) <= SENSITIVITY_TOLERANCE
    assert abs(measured.specificity - expected.specificity) <= SPECIFICITY_TOLERANCE
    assert abs(measured.auc - expected.auc) <= AUC_TOLERANCE


def test_benchmarks_measure_it_on_its_own_test_images(clinical_cpu_bundle: Path, data_dir: Path):
    """The benchmark workers take the test split from the bundle's model config (and the
    PyTorch baseline from its network): both reproduce the build's Kermany test metrics, which
    PneumoniaMNIST's 28 px images upsampled to 128 px would not."""
    from benchmarks.measure import Settings
    from benchmarks.worker import run_worker
    from runtime.contract.manifest import load_manifest

    manifest = load_manifest(clinical_cpu_bundle)
    config = manifest.provenance.model_config
    assert config is not None and manifest.provenance.dataset is None
    settings = Settings.quick().as_dict()
    artifact = run_worker({"kind": "artifact", "bundle": str(clinical_cpu_bundle),
                           "artifact": manifest.default_artifact, "timing": False,
                           "settings": settings, "data": str(data_dir), "dataset": "config",
                           "config": config, "device": "cpu"}, timeout=300)
    baseline = run_worker({"kind": "pytorch", "config": config,
                           "threshold": manifest.threshold, "device": "cpu", "timing": False,
                           "settings": settings, "data": str(data_dir)}, timeout=300)
    for result, expected in ((artifact, manifest.default.metrics.test),
                             (baseline, manifest.reference.metrics.test)):
        assert result["status"] == "ok", result.get("error")
        got = result["quality"]  # same images, same engine: at most a float-rounding flip
        assert got["n"] == expected.n == 624
        assert abs(got["sensitivity"] - expected.sensitivity) <= SENSITIVITY_TOLERANCE
        assert abs(got["specificity"] - expected.specificity) <= SPECIFICITY_TOLERANCE
        assert abs(got["auc"] - expected.auc) <= AUC_TOLERANCE
