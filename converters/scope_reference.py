"""Builds the feature-space scope guard of a bundle (see :mod:`runtime.judging.feature_guard`).

- The reference: class means and a shared covariance of the model's scope features (the pooled
  output of every conv block, :mod:`converters.architectures`) on the TRAINING split, computed
  once per build with the PyTorch FP32 model. Each block gets its own covariance, shrunk towards
  a scaled identity with the Ledoit-Wolf estimate of the shrinkage (data-driven: nothing is tuned
  by hand), inverted, and divided by the block's width, so that every block weighs the same (an
  in-distribution image's squared distance in a block of width d is about d); the blocks make one
  block-diagonal precision matrix. The distance is then Lee et al.'s feature ensemble with equal
  weights: the square root of the mean, over blocks, of each block's squared distance per
  feature (about 1 for a training-like image, whatever the widths).
- Other renderings: when the build knows other files of the same training X-rays (the tiny
  model: ``kermany_train_224``, squashed 224 px copies of the X-rays MedMNIST centre-cropped;
  :class:`converters.data.sets.Rendering`), their training side joins the reference and their
  validation side the limit, so that a known rendering is not taken for an unfamiliar image.
- The limit, per artifact: the distance that holds :data:`SHARE` of the VALIDATION images, with
  that artifact's own features (INT8 and FP16 features move; each artifact keeps the stated share
  on validation). The test split is only measured: its in-scope rate is recorded, never used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from runtime.contract import manifest as contract
from runtime.engines.base import FEATURES_OUTPUT
from runtime.judging.feature_guard import MAHALANOBIS, FeatureReference

#: the share of validation images the limit keeps in scope
SHARE = 0.99
DESCRIPTION = ("class-conditional Mahalanobis distance on the pooled output of every conv block "
               "(Lee et al. 2018's feature ensemble, equal weights: each block's shared "
               "covariance with Ledoit-Wolf shrinkage, scaled by its width); limit = the "
               "distance that holds the stated share of the validation images, per artifact")


def describe(features: str = "") -> str:
    """The manifest's description of the guard; ``features``: what the features are when they
    are not every conv block's pooled output (a config's network: its classifier's input)."""
    if not features:
        return DESCRIPTION
    return (f"class-conditional Mahalanobis distance on {features} (one shared covariance "
            "with Ledoit-Wolf shrinkage); limit = the distance that holds the stated share of "
            "the validation images, per artifact")


@dataclass(frozen=True)
class FittedReference:
    reference: FeatureReference
    shrinkage: float  # the mean over blocks
    n: int
    widths: tuple[int, ...] = ()
    renderings: tuple[str, ...] = ()  # other renderings of the training X-rays it covers
    #: what the features are, in words ("": every conv block's pooled output)
    source: str = ""
    #: what computed the training features
    computed_by: str = "PyTorch FP32"


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


def fit_reference(features: np.ndarray, labels: np.ndarray,
                  widths: list[int] | tuple[int, ...] | None = None,
                  renderings: list[str] | tuple[str, ...] = (), source: str = "",
                  computed_by: str = "PyTorch FP32") -> FittedReference:
    """Class means and the block-diagonal precision (each block: the inverse of its shrunk shared
    covariance, divided by its width), from (N, D) training features whose columns are blocks of
    ``widths`` (default: one block of all D)."""
    x = np.asarray(features, np.float64)
    widths = tuple(int(w) for w in (widths or (x.shape[1],)))
    if sum(widths) != x.shape[1] or min(widths) < 1:
        raise ValueError(f"block widths {list(widths)} do not add up to the {x.shape[1]} features")
    labels = np.asarray(labels).astype(int).ravel()
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, labels)]
    precision = np.zeros((x.shape[1], x.shape[1]))
    shrinkages, start = [], 0
    for width in widths:
        block = slice(start, start + width)
        covariance, shrinkage = ledoit_wolf(centred[:, block])
        precision[block, block] = np.linalg.inv(covariance) / (width * len(widths))
        shrinkages.append(shrinkage)
        start += width
    # the bundle stores the precision in float32 (half the bytes: 4 MB at D = 1024); the limits
    # are measured with the very values the runtime reads
    precision = precision.astype(np.float32).astype(np.float64)
    return FittedReference(FeatureReference(means, precision), float(np.mean(shrinkages)),
                           int(len(x)), widths, tuple(renderings), source, computed_by)


def limit_for(distances: np.ndarray, share: float = SHARE) -> float:
    """The smallest distance that holds at least ``share`` of ``distances``."""
    return float(np.quantile(distances, share, method="higher"))


def artifact_rates(reference: FeatureReference, val_features: np.ndarray,
                   test_features: np.ndarray, share: float = SHARE) -> contract.GuardRates:
    """One artifact's limit (on validation) and the in-scope rates of both splits."""
    val = reference.distances(val_features)
    test = reference.distances(test_features)
    limit = math.ceil(limit_for(val, share) * 1e4) / 1e4  # as written (4 decimals), never lower
    return contract.GuardRates(limit=limit, val_in_scope=float(np.mean(val <= limit)),
                               test_in_scope=float(np.mean(test <= limit)),
                               val_n=int(len(val)), test_n=int(len(test)))


def torch_features(model, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, D) scope features of the PyTorch model (eval mode, no grad)."""
    import torch

    model = model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            out.append(model.logits_and_features(
                torch.from_numpy(inputs[start:start + batch_size]))[1].numpy())
    return np.concatenate(out).astype(np.float64)


def guard_block(fitted: FittedReference, rates: dict[str, contract.GuardRates],
                patient_grouped: bool) -> contract.ScopeGuard:
    """The manifest's ``scope_guard`` (file fields are filled in by the bundle writer);
    ``patient_grouped``: the validation split was split from training by patient."""
    by = " (patient-grouped)" if patient_grouped else ""
    also = "".join(f" + the same side of the patient-grouped split of {name} (the same X-rays "
                   "rendered as those files)" for name in fitted.renderings)
    return contract.ScopeGuard(
        method=MAHALANOBIS, description=describe(fitted.source), path=contract.SCOPE_REFERENCE, sha256="",
        bytes=0, output=FEATURES_OUTPUT, dim=fitted.reference.dim, share=SHARE,
        fitted_on=f"train split{also}, {fitted.n} images, {fitted.computed_by} features",
        limit_set_on=f"val split{by}{also}, each artifact's own features through its engine",
        shrinkage=round(fitted.shrinkage, 6), artifacts=rates, blocks=list(fitted.widths))
