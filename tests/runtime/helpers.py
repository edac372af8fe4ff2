"""Helpers shared by the runtime tests (subprocess runs of the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def runtime_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra.pop("PYTHONPATH", ""), str(REPO),
                                                      env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``python -m runtime ARGS`` in a subprocess (the way users run it)."""
    return subprocess.run([sys.executable, "-m", "runtime", *args], cwd=REPO,
                          env=runtime_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def resign(bundle: Path, relative: str) -> None:
    """Record a changed file's new size and sha256 everywhere the manifest lists it (a bundle
    altered on purpose that still passes its checksum checks)."""
    from runtime.bundle.hashing import sha256_file
    from runtime.contract.manifest import dump_manifest, load_manifest

    file = bundle / relative
    digest, size = sha256_file(file), file.stat().st_size
    manifest = load_manifest(bundle)
    parts = [p for a in manifest.artifacts for p in a.files] + list(manifest.files)
    for part in parts:
        if part.path == relative:
            part.sha256, part.bytes = digest, size
    for entry in manifest.artifacts:
        if entry.path == relative:
            entry.sha256, entry.bytes = digest, size
    if manifest.reference_set is not None and manifest.reference_set.path == relative:
        manifest.reference_set.sha256, manifest.reference_set.bytes = digest, size
    dump_manifest(manifest, bundle / "manifest.json")


class PoisonedEngine:
    """An engine that answers NaN for one image (its model input saved in ``poison``) and
    passes every other image to the real engine: a model that breaks on one X-ray."""

    def __init__(self, engine, poison):
        import numpy as np

        self._engine, self._poison = engine, np.asarray(poison, np.float32)

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def _spoil(self, batch, out):
        import numpy as np

        out = np.array(out, np.float32, copy=True)
        for i, image in enumerate(batch):
            if np.allclose(image, self._poison, atol=1e-6):
                out[i] = np.nan
        return out

    def run(self, batch):
        return self._spoil(batch, self._engine.run(batch))

    def run_with_features(self, batch):
        out, features = self._engine.run_with_features(batch)
        return self._spoil(batch, out), features


def model_input_of(path: Path, bundle):
    """The normalised model input triage gives the image file at ``path`` (1, S, S)."""
    from runtime.preprocess.cpu import normalize
    from runtime.running.triage import DEFAULT_OVERSAMPLE, Entry, load_one, reduce_to_for

    spec = bundle.preprocessing
    reduce_to = reduce_to_for(spec, DEFAULT_OVERSAMPLE)
    loaded = load_one(Entry(Path(path), Path(path).name), spec, reduce_to, False)
    assert not loaded.error, loaded.error
    return normalize(loaded.pixels[None], spec)[0]


#: a sitecustomize.py that poisons the engine of every bundle a process loads (see PoisonedEngine);
#: $CXR_POISON names the .npy holding the model input answered with NaN
POISON_HOOK = '''
import dataclasses, os
import numpy as np
import runtime.bundle.load as _load
from tests.runtime.helpers import PoisonedEngine
_real = _load.load_bundle
def _poisoned(*args, **kwargs):
    bundle = _real(*args, **kwargs)
    return dataclasses.replace(bundle, engine=PoisonedEngine(bundle.engine,
                                                             np.load(os.environ["CXR_POISON"])))
_load.load_bundle = _poisoned
'''


def minimal_manifest_data(preprocessing: dict, input_channels: int = 1) -> dict:
    """A minimal valid manifest (schema 2) with ``preprocessing`` and the model's input channels."""
    metrics = dict(auc=0.9, sensitivity=0.9, specificity=0.9, accuracy=0.9, n=10)
    split = {"test": metrics, "val": metrics}
    parity = dict(max_abs_diff=0.0, mean_abs_diff=0.0, agreement=1.0, n=10)
    gate = dict(status="pass", sensitivity_drop=0.0, auc_drop=0.0, specificity_drop=0.0,
                reasons=[], measured_on=["CPUExecutionProvider"],
                asked_for=["CPUExecutionProvider"], max_sensitivity_drop=0.01,
                max_auc_drop=0.01, max_specificity_drop=0.01)
    measured = dict(engine="onnxruntime", requested=["CPUExecutionProvider"],
                    active=["CPUExecutionProvider"], fell_back=False, inference_precision="fp32")
    return {
        "schema_version": 2, "target": "cpu", "description": "",
        "model": {"name": "m", "classes": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA",
                  "input": {"name": "image", "shape": [-1, input_channels, 28, 28],
                            "dtype": "float32"},
                  "output": {"name": "probabilities", "shape": [-1, 2], "dtype": "float32"}},
        "preprocessing": preprocessing, "preprocessing_backend": "cpu", "threshold": 0.5,
        "threshold_info": {"chosen_on": "val", "sensitivity": 0.9, "model": "fp32",
                           "val": metrics},
        "default_artifact": "model.onnx", "default_artifact_reason": "",
        "gate": {"reference": "fp32", "split": "val", "max_sensitivity_drop": 0.01,
                 "max_auc_drop": 0.01, "max_specificity_drop": 0.01},
        "reference": {"engine": "pytorch", "precision": "fp32", "metrics": split},
        "provenance": {"checkpoint": "m.safetensors", "checkpoint_sha256": "0" * 64,
                       "architecture": "m", "config": {}, "data": "d", "data_md5": "0" * 32,
                       "calibration_images": 0, "built_at": "", "machine": "", "versions": {}},
        "build": {"seconds": 1.0},
        "artifacts": [{"path": "model.onnx", "format": "onnx-fp32", "precision": "fp32",
                       "engine": "onnxruntime", "sha256": "0" * 64, "bytes": 1, "files": [],
                       "total_bytes": 1, "parity": parity, "metrics": split, "gate": gate,
                       "measured_with": measured, "build": {"seconds": 1.0}}],
    }
