"""Adding a format = one converter module + one row in the format table (docs/adding-a-format.md):
a throw-away format is registered, built into a bundle by a test profile, and run by
the runtime (load + verify + predict) without touching the build, the runtime or the engines."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.contract.formats import (
    ANY_TARGET,
    CPU,
    FormatRow,
    Placement,
    register_format,
    unregister_format,
)
from targets import TargetProfile, register, unregister

pytestmark = pytest.mark.slow  # one small build (export + reference + one artifact)

KEY = "onnx-fp32-copy"


@pytest.fixture
def copy_format():
    register_format(FormatRow(
        KEY, "fp32", ".copy.onnx", "tests.converters.copy_format:convert", "onnxruntime",
        {ANY_TARGET: Placement(providers=CPU)}, parity_tolerance=1e-3, device_tolerance=1e-3,
        description="test only: the ONNX FP32 export under another key"))
    register(TargetProfile(name="test-copy", description="test profile with a new format",
                           formats=(KEY,), preprocessing_backend="cpu"))
    yield KEY
    unregister("test-copy")
    unregister_format(KEY)


def test_a_new_format_builds_verifies_and_predicts(copy_format, tmp_path, reference_checkpoint,
                                                  data_dir, pneumoniamnist):
    from converters.build import build_bundle
    from evaluation.metrics import roc_auc
    from runtime.bundle.artifacts import read_manifest
    from runtime.bundle.load import load_bundle
    from runtime.bundle.selfcheck import verify_all
    from runtime.preprocess.cpu import normalize

    bundle = build_bundle("test-copy", reference_checkpoint, tmp_path / "dist", str(data_dir),
                          progress=False)
    manifest = read_manifest(bundle)
    (entry,) = manifest.artifacts
    assert (entry.path, entry.format, entry.engine) == ("model.copy.onnx", KEY, "onnxruntime")
    assert entry.conversion["converter"] == "tests.converters.copy_format"
    assert manifest.default_artifact == "model.copy.onnx" and entry.gate.status == "pass"
    (check,) = verify_all(bundle)
    assert check.passed and check.format == KEY and check.tolerance == 1e-3
    loaded = load_bundle(bundle, KEY)
    scores = loaded.predict_positive(normalize(pneumoniamnist.test.images, loaded.preprocessing))
    assert roc_auc(pneumoniamnist.test.labels, scores) == pytest.approx(entry.metrics.test.auc,
                                                                         abs=1e-6)
    assert np.mean(scores >= loaded.threshold) > 0  # it flags some real X-rays
