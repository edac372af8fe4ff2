"""The scope guard's estimator (the bundles' guard is tested on real images in
tests/runtime/judging/test_feature_guard.py)."""

from __future__ import annotations

import numpy as np

from converters.scope_reference import fit_reference, ledoit_wolf, limit_for


def test_ledoit_wolf_is_scikit_learns_estimate():
    from sklearn.covariance import ledoit_wolf as reference

    rng = np.random.default_rng(0)
    for n, d in ((50, 8), (400, 64)):
        x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
        ours, shrinkage = ledoit_wolf(x)
        theirs, expected = reference(x, assume_centered=True)
        assert abs(shrinkage - expected) < 1e-12
        assert np.allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_the_limit_holds_the_share_and_far_points_are_beyond_it():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    train = rng.normal(size=(2000, 16)) + 3.0 * labels[:, None]
    fitted = fit_reference(train, labels)
    val = rng.normal(size=(500, 16))
    limit = limit_for(fitted.reference.distances(val), 0.99)
    assert np.mean(fitted.reference.distances(val) <= limit) >= 0.99
    assert (fitted.reference.distances(rng.normal(size=(20, 16)) + 10.0) > limit).all()


def test_blocks_are_modelled_apart_and_weigh_the_same():
    """Two blocks of very different widths: the precision is block-diagonal, each block's squared
    distance per feature counts equally, and a shift confined to the narrow block is still seen."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 3000)
    narrow, wide = rng.normal(size=(3000, 4)), rng.normal(size=(3000, 60)) + 2.0 * labels[:, None]
    fitted = fit_reference(np.hstack([narrow, wide]), labels, [4, 60])
    precision = fitted.reference.precision
    assert fitted.widths == (4, 60)
    assert not precision[:4, 4:].any() and not precision[4:, :4].any()
    alone = fit_reference(narrow, labels).reference.precision  # one block: divided by its width
    assert np.allclose(precision[:4, :4] * 2, alone)
    test = np.hstack([rng.normal(size=(500, 4)), rng.normal(size=(500, 60))])
    distances = fitted.reference.distances(test)
    assert 0.8 < np.median(distances) < 1.2  # about 1 per feature, whatever the widths
    limit = limit_for(distances, 0.99)
    shifted = test[:50].copy()
    shifted[:, :4] += 8.0  # only the 4 narrow features move, 60 wide ones stay
    assert (fitted.reference.distances(shifted) > limit).all()


def test_widths_that_do_not_add_up_are_refused():
    import pytest

    with pytest.raises(ValueError, match="do not add up"):
        fit_reference(np.zeros((10, 5)), np.zeros(10), [2, 2])


def test_every_architecture_reports_its_blocks_and_the_head_reads_the_last():
    """``logits_and_features``: one pooled block per conv block (``feature_widths``), the last of
    them what the classifier reads, and the same logits as ``forward``."""
    import torch

    from converters.architectures import build_model

    models = {"pneumonia_cnn": build_model("pneumonia_cnn", width=8),
              "resnet18_small": build_model("resnet18_small", width=8),
              "clinical_cnn": build_model("clinical_cnn", width=4, temperature=0.5),
              "ensemble": build_model("ensemble", members=[
                  {"architecture": "pneumonia_cnn", "config": {"width": 4}},
                  {"architecture": "pneumonia_cnn", "config": {"width": 8}}])}
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(3, 1, 32, 32)).astype(np.float32))
    for name, model in models.items():
        model.eval()
        with torch.no_grad():
            logits, features = model.logits_and_features(x)
            assert torch.equal(logits, model(x)), name
        assert features.shape == (3, sum(model.feature_widths)), name
        assert len(model.feature_widths) >= 4 and (features >= 0).all(), name  # pooled ReLUs
    single = models["pneumonia_cnn"]
    with torch.no_grad():
        _, features = single.logits_and_features(x)
        last = features[:, -single.feature_widths[-1]:]
        assert torch.allclose(single.head(last), single(x))
