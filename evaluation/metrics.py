"""Clinical metrics on probabilities of the positive class, and of each class for a model with
more than two (numpy only)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over runs of tied scores
    # (compared, not subtracted: infinite scores, e.g. always-flagged rows, tie like any other)
    boundaries = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(scores)]))
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def threshold_for_sensitivity(labels: np.ndarray, scores: np.ndarray, sensitivity: float) -> float:
    """The highest threshold t with sensitivity(score >= t) >= ``sensitivity``."""
    labels = np.asarray(labels).reshape(-1).astype(bool)
    positives = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1)[labels])[::-1]
    if positives.size == 0:
        raise ValueError("no positive cases: cannot choose a threshold for sensitivity")
    if not 0.0 < sensitivity <= 1.0:
        raise ValueError(f"sensitivity must be in (0, 1], got {sensitivity}")
    needed = math.ceil(sensitivity * positives.size - 1e-9)
    return float(positives[needed - 1])


def decision_threshold(labels: np.ndarray, scores: np.ndarray, sensitivity: float) -> float:
    """:func:`threshold_for_sensitivity`, moved down to halfway to the next lower score: the same
    decisions on these scores, with a margin on both sides. At the highest such threshold the
    borderline positive sits exactly on it, so a converted model that rounds that one score
    down by 1e-7 misses it, and the gate sees a sensitivity drop that is not there."""
    top = threshold_for_sensitivity(labels, scores, sensitivity)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    below = values[values < top]
    return top if below.size == 0 else float((top + below.max()) / 2)


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics at one threshold (flagged means probability >= threshold)."""

    auc: float
    sensitivity: float
    specificity: float
    accuracy: float
    threshold: float
    n: int
    tp: int
    fn: int
    tn: int
    fp: int

    def as_dict(self) -> dict:
        return asdict(self)


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> BinaryMetrics:
    """AUC plus sensitivity/specificity/accuracy at ``threshold``."""
    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.shape[0]} labels for {scores.shape[0]} scores")
    flagged = scores >= threshold
    tp = int((flagged & labels).sum())
    fn = int((~flagged & labels).sum())
    tn = int((~flagged & ~labels).sum())
    fp = int((flagged & ~labels).sum())
    n = len(labels)
    return BinaryMetrics(
        auc=roc_auc(labels, scores),
        sensitivity=tp / (tp + fn) if tp + fn else float("nan"),
        specificity=tn / (tn + fp) if tn + fp else float("nan"),
        accuracy=(tp + tn) / n if n else float("nan"),
        threshold=float(threshold), n=n, tp=tp, fn=fn, tn=tn, fp=fp,
    )


def wilson_interval(successes: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion (NaNs when ``total`` is 0)."""
    if total <= 0:
        return float("nan"), float("nan")
    p = successes / total
    denom = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def auc_interval(labels: np.ndarray, scores: np.ndarray, z: float = 1.959964
                 ) -> tuple[float, float]:
    """DeLong 95% interval of the ROC AUC, computed on the logit scale (stays inside [0, 1])."""
    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    pos, neg = scores[labels], scores[~labels]
    if pos.size < 2 or neg.size < 2:
        return float("nan"), float("nan")
    # psi(x, y) = 1 if x > y, 0.5 if tied: the structural components of DeLong et al. (1988)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = float(v10.mean())
    var = v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size
    if auc <= 0.0 or auc >= 1.0 or var <= 0.0:
        return auc, auc
    logit = math.log(auc / (1 - auc))
    half = z * math.sqrt(var) / (auc * (1 - auc))
    return 1 / (1 + math.exp(-(logit - half))), 1 / (1 + math.exp(-(logit + half)))


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 10
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean predicted probability, observed positive rate, count) per equal-width bin."""
    labels = np.asarray(labels).reshape(-1).astype(np.float64)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    which = np.clip((probs * bins).astype(int), 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, probs, minlength=bins) / count
        rate = np.bincount(which, labels, minlength=bins) / count
    return mean_p, rate, count


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE of the positive-class probability: count-weighted |observed - predicted| over bins."""
    mean_p, rate, count = reliability_bins(labels, probs, bins)
    used = count > 0
    if not used.any():
        return float("nan")
    return float((np.abs(rate[used] - mean_p[used]) * count[used]).sum() / count.sum())


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """The mean over classes of the one-vs-rest AUC of ``probs[:, c]`` (``labels``: class
    indices, ``probs``: (N, C)); a two-class model gives its positive class's AUC."""
    labels, probs = np.asarray(labels).reshape(-1), np.asarray(probs)
    if probs.shape[1] == 2:
        return roc_auc(labels == 1, probs[:, 1])
    return float(np.mean([roc_auc(labels == c, probs[:, c]) for c in range(probs.shape[1])]))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels).reshape(-1), np.asarray(predicted).reshape(-1)), 1)
    return matrix


def top_label_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE of the predicted class's probability against whether it was right (a model with
    more than two classes: how far its confidence is from its accuracy)."""
    probs = np.asarray(probs)
    correct = probs.argmax(axis=1) == np.asarray(labels).reshape(-1)
    return expected_calibration_error(correct, probs.max(axis=1), bins)
