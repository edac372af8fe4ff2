"""Any registered architecture that declares its input size and preprocessing builds a bundle."""

from __future__ import annotations

import numpy as np
import pytest

from converters.checkpoint import load_checkpoint
from evaluation.metrics import binary_metrics
from runtime.engines.base import predict_proba
from runtime.engines.registry import create_engine
from runtime.preprocess.cpu import normalize, to_model_pixels

pytestmark = pytest.mark.slow  # builds bundles (about a minute on 2 cores)


def test_resnet18_small_is_a_different_architecture(resnet_checkpoint):
    loaded = load_checkpoint(resnet_checkpoint)
    assert loaded.spec.architecture == "resnet18_small"
    assert loaded.spec.input_shape == (1, 64, 64)
    names = {type(m).__name__ for m in loaded.model.modules()}
    assert "BasicBlock" in names and sum(n == "BasicBlock" for n in
                                         (type(m).__name__ for m in loaded.model.modules())) == 8


def test_resnet_checkpoint_builds_a_64px_bundle(resnet_bundle, pneumoniamnist):
    from runtime.bundle.artifacts import placement_of
    from runtime.contract.manifest import load_manifest

    manifest = load_manifest(resnet_bundle)
    assert manifest.model.input.shape == [-1, 1, 64, 64]
    assert manifest.preprocessing.size == 64
    assert manifest.provenance.architecture == "resnet18_small"
    assert manifest.reference.metrics.test.auc > 0.7  # better than chance
    spec = manifest.preprocessing
    images = np.stack([to_model_pixels(im, spec) for im in pneumoniamnist.test.images])
    inputs = normalize(images, spec)
    for art in manifest.artifacts:
        engine = create_engine(resnet_bundle / art.path, art.engine,
                               placement_of(resnet_bundle, art))
        probs = predict_proba(engine, inputs)
        got = binary_metrics(pneumoniamnist.test.labels, probs[:, 1], manifest.threshold)
        assert got.auc == pytest.approx(art.metrics.test.auc, abs=1e-6)
        assert got.sensitivity == pytest.approx(art.metrics.test.sensitivity)
        assert art.gate.passed
