"""The feature-space scope guard: is an image like the training X-rays in the model's own features?

Method: class-conditional Mahalanobis distance (Lee et al., NeurIPS 2018, "A simple unified
framework for detecting out-of-distribution samples") on the features every artifact returns as
its second output: the pooled output of each conv block (their feature ensemble, equal weights).
The build (:mod:`converters.scope_reference`) fits one mean per class and, per block, a shared
covariance (Ledoit-Wolf shrinkage) on the TRAINING split's features; the blocks make one
block-diagonal precision, each block scaled by its width. An image's distance is the smallest
Mahalanobis distance to a class mean. Each artifact's limit is the
distance that holds the manifest's share (e.g. 99%) of the VALIDATION images, measured with that
artifact's own engine. Beyond the limit, the image is out of scope (:mod:`runtime.judging.verdict`).

The reference is a small ``.npz`` (no pickle) in the bundle: ``means`` (classes, D) float64 and
``precision`` (D, D), the (block-diagonal) inverse of the shrunk covariance, float32 (older
bundles: float64); distances are computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: the method's name in the manifest
MAHALANOBIS = "mahalanobis"


class GuardError(ValueError):
    """A feature reference that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class FeatureReference:
    """Class means and the shared precision matrix of the training features."""

    means: np.ndarray  # (classes, D)
    precision: np.ndarray  # (D, D)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N,) smallest Mahalanobis distance to a class mean."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise GuardError(f"features of shape {tuple(x.shape)}; the scope reference expects "
                             f"(N, {self.dim})")
        squared = [((x - mu) @ self.precision * (x - mu)).sum(axis=1) for mu in self.means]
        return np.sqrt(np.maximum(np.min(squared, axis=0), 0.0))

    def arrays(self) -> dict[str, np.ndarray]:
        """What the reference file holds (written by converters.bundle_writer.write_npz)."""
        return {"means": self.means, "precision": self.precision.astype(np.float32)}


def load_reference(path: str | Path) -> FeatureReference:
    """Read a reference file (:meth:`FeatureReference.arrays`; no pickle allowed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            means = np.asarray(data["means"], np.float64)
            precision = np.asarray(data["precision"], np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise GuardError(f"scope reference {Path(path).name} cannot be read: {exc}") from None
    d = means.shape[-1] if means.ndim == 2 else -1
    if means.ndim != 2 or precision.shape != (d, d) or not np.isfinite(precision).all():
        raise GuardError(f"scope reference {Path(path).name} holds means {means.shape} and "
                         f"precision {precision.shape}; expected (classes, D) and (D, D)")
    return FeatureReference(means, precision)


@dataclass(frozen=True)
class FeatureGuard:
    """The reference and the limit in force for the artifact that runs."""

    reference: FeatureReference
    limit: float
    share: float  # of validation images within the limit, as the build set it

    def distances(self, features: np.ndarray) -> np.ndarray:
        return self.reference.distances(features)
