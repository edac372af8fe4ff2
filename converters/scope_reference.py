"""Builds the feature-space scope guard of a bundle (see :mod:`runtime.feature_guard`).

- The reference: class means and a shared covariance of the model's penultimate features on the
  TRAINING split, computed once per build with the PyTorch FP32 model; the covariance is shrunk
  towards a scaled identity with the Ledoit-Wolf estimate of the shrinkage (data-driven: nothing
  is tuned by hand), and stored inverted (the precision matrix).
- The limit, per artifact: the distance that holds :data:`SHARE` of the VALIDATION images, with
  that artifact's own features (INT8 and FP16 features move; each artifact keeps the stated share
  on validation). The test split is only measured: its in-scope rate is recorded, never used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime import contract
from runtime.engines.base import FEATURES_OUTPUT
from runtime.feature_guard import MAHALANOBIS, FeatureReference

#: the share of validation images the limit keeps in scope
SHARE = 0.99
DESCRIPTION = ("class-conditional Mahalanobis distance on the penultimate features (Lee et al. "
               "2018), shared covariance with Ledoit-Wolf shrinkage; limit = the distance that "
               "holds the stated share of the validation images, per artifact")


@dataclass(frozen=True)
class FittedReference:
    reference: FeatureReference
    shrinkage: float
    n: int


def ledoit_wolf(centred: np.ndarray) -> tuple[np.ndarray, float]:
    """The Ledoit-Wolf (2004) shrunk covariance of centred (N, D) samples, and its shrinkage
    towards ``mu * I`` (``mu`` the mean variance); the same estimate as scikit-learn's
    ``ledoit_wolf(X, assume_centered=True)``."""
    x = np.asarray(centred, np.float64)
    n, d = x.shape
    covariance = x.T @ x / n
    mu = np.trace(covariance) / d
    squared = x ** 2
    beta = (np.sum(squared.T @ squared) / n - np.sum(covariance ** 2)) / (d * n)
    delta = (np.sum(covariance ** 2) - 2 * mu * np.trace(covariance) + d * mu ** 2) / d
    shrinkage = 0.0 if beta <= 0 else float(min(beta, delta) / delta)
    return (1 - shrinkage) * covariance + shrinkage * mu * np.eye(d), shrinkage


def fit_reference(features: np.ndarray, labels: np.ndarray) -> FittedReference:
    """Class means and the shrunk shared covariance's inverse, from (N, D) training features."""
    x = np.asarray(features, np.float64)
    labels = np.asarray(labels).astype(int).ravel()
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    covariance, shrinkage = ledoit_wolf(x - means[np.searchsorted(classes, labels)])
    return FittedReference(FeatureReference(means, np.linalg.inv(covariance)), shrinkage,
                           int(len(x)))


def limit_for(distances: np.ndarray, share: float = SHARE) -> float:
    """The smallest distance that holds at least ``share`` of ``distances``."""
    return float(np.quantile(distances, share, method="higher"))


def artifact_rates(reference: FeatureReference, val_features: np.ndarray,
                   test_features: np.ndarray, share: float = SHARE) -> contract.GuardRates:
    """One artifact's limit (on validation) and the in-scope rates of both splits."""
    val = reference.distances(val_features)
    test = reference.distances(test_features)
    limit = limit_for(val, share)
    return contract.GuardRates(limit=round(limit, 4), val_in_scope=float(np.mean(val <= limit)),
                               test_in_scope=float(np.mean(test <= limit)),
                               val_n=int(len(val)), test_n=int(len(test)))


def torch_features(model, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, D) penultimate features of the PyTorch model (eval mode, no grad)."""
    import torch

    model = model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            out.append(model.logits_and_embedding(
                torch.from_numpy(inputs[start:start + batch_size]))[1].numpy())
    return np.concatenate(out).astype(np.float64)


def guard_block(fitted: FittedReference, rates: dict[str, contract.GuardRates],
                dataset: str) -> contract.ScopeGuard:
    """The manifest's ``scope_guard`` (file fields are filled in by the bundle writer)."""
    by = " (patient-grouped)" if dataset == "kermany" else ""
    return contract.ScopeGuard(
        method=MAHALANOBIS, description=DESCRIPTION, path=contract.SCOPE_REFERENCE, sha256="",
        bytes=0, output=FEATURES_OUTPUT, dim=fitted.reference.dim, share=SHARE,
        fitted_on=f"train split, {fitted.n} images, PyTorch FP32 features",
        limit_set_on=f"val split{by}, each artifact's own features through its engine",
        shrinkage=round(fitted.shrinkage, 6), artifacts=rates)
