"""The scope guard's estimator (the bundles' guard is tested on real images in
tests/runtime/test_feature_guard.py)."""

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
