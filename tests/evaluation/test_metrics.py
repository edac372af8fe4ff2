"""Clinical metrics against scikit-learn's independent implementation, on real model scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

from evaluation.metrics import binary_metrics, decision_threshold, roc_auc, threshold_for_sensitivity


@pytest.fixture(scope="module")
def scores(pneumoniamnist):
    """Real scores: mean pixel brightness of the test images is a weak but genuine signal."""
    return pneumoniamnist.test.labels, pneumoniamnist.test.images.mean(axis=(1, 2)) / 255.0


def test_auc_matches_sklearn(scores):
    labels, values = scores
    assert roc_auc(labels, values) == pytest.approx(roc_auc_score(labels, values), abs=1e-12)
    rounded = np.round(values, 2)  # many ties
    assert roc_auc(labels, rounded) == pytest.approx(roc_auc_score(labels, rounded), abs=1e-12)


def test_infinite_scores_tie_like_any_other(scores):
    """Always-flagged rows scored +inf (calibration's "as deployed") are one tie group."""
    labels, values = scores
    always = values.copy()
    always[::7] = np.inf
    with np.errstate(invalid="raise"):
        auc = roc_auc(labels, always)
    assert auc == pytest.approx(roc_auc_score(labels, np.where(np.isinf(always), 2.0, always)),
                                abs=1e-12)


def test_auc_is_nan_for_one_class():
    assert np.isnan(roc_auc(np.ones(4), np.arange(4.0)))


@pytest.mark.parametrize("target", [0.5, 0.9, 0.98, 1.0])
def test_threshold_reaches_the_sensitivity(scores, target):
    labels, values = scores
    threshold = threshold_for_sensitivity(labels, values, target)
    m = binary_metrics(labels, values, threshold)
    assert m.sensitivity >= target
    # the highest such threshold: anything above it misses the target
    above = values[values > threshold].min()
    assert binary_metrics(labels, values, above).sensitivity < target


def test_confusion_matches_sklearn(scores):
    labels, values = scores
    m = binary_metrics(labels, values, 0.5)
    tn, fp, fn, tp = confusion_matrix(labels, values >= 0.5).ravel()
    assert (m.tn, m.fp, m.fn, m.tp) == (tn, fp, fn, tp)
    assert m.accuracy == pytest.approx((tp + tn) / len(labels))


def test_threshold_needs_positives():
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_sensitivity(np.zeros(3), np.arange(3.0), 0.9)


@pytest.mark.parametrize("target", [0.5, 0.9, 0.98])
def test_decision_threshold_keeps_the_decisions_with_a_margin(scores, target):
    labels, values = scores
    top = threshold_for_sensitivity(labels, values, target)
    threshold = decision_threshold(labels, values, target)
    assert threshold < top
    assert (values >= threshold).tolist() == (values >= top).tolist()
    # the borderline positive nudged down by a conversion's rounding is still flagged
    borderline = values[labels.astype(bool) & (values == top)]
    assert (borderline - 1e-7 >= threshold).all()
