"""Clinical metrics on probabilities of the positive class (numpy only)."""

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
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
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
