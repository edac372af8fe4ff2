"""The one place that decides a result: model probability + scope verdict -> the row's verdict.

Every path that scores images (the folder runner, the REST service, archive triage on Ray) calls
:func:`score_batch` on a normalised batch, so the flag rule is written once: an image is flagged
when its probability reaches the threshold in force, or when it is out of scope (an out-of-scope
image is scored but never cleared by the model: its prediction is ``OUT-OF-SCOPE`` and a person
reads it).

Scope has two parts, combined here: the rules (:mod:`runtime.judging.scope`, judged when the image is
decoded) and, for bundles with a feature-space guard (:mod:`runtime.judging.feature_guard`), the distance
of the model's own features (its pooled conv blocks) from the training X-rays. An image beyond the
guard's limit is out of scope, whatever the rules said; every reason that applies is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from runtime.contract.manifest import ArtifactEntry
from runtime.judging.feature_guard import FeatureGuard
from runtime.judging.scope import OUT_OF_SCOPE, OUT_PREFIX, Scope

#: the verdict of an image whose scope was never judged (should not happen: load_one judges it)
NOT_JUDGED = Scope(False, "scope not judged")
#: the error of an image the model answered with NaN or infinity (that image only is not scored)
NO_VALID_ANSWER = ("the model gave no valid answer for this image (its output was NaN or "
                   "infinite): not scored; read it without the model")


class Scorer(Protocol):
    """What the verdict needs of a loaded model (``runtime.bundle.load.Bundle`` is one)."""

    @property
    def artifact(self) -> ArtifactEntry: ...
    @property
    def classes(self) -> list[str]: ...
    @property
    def positive_class(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    @property
    def guard(self) -> FeatureGuard | None: ...
    def predict(self, batch: np.ndarray, non_finite_rows_ok: bool = False) -> np.ndarray: ...
    def predict_with_features(self, batch: np.ndarray, non_finite_rows_ok: bool = False
                              ) -> tuple[np.ndarray, np.ndarray | None]: ...


@dataclass(frozen=True)
class Verdict:
    """What a scored image's row says."""

    probability: float  # of the bundle's positive class
    flagged: bool  # sent to a person: probability >= threshold, or out of scope
    prediction: str  # the positive class, the other class, or OUT-OF-SCOPE
    scope: Scope
    threshold: float  # the threshold in force when it was decided
    error: str = ""  # NO_VALID_ANSWER when the model's output for this image was not finite

    @property
    def ok(self) -> bool:
        """Whether the image was scored (False: write ``error`` as its error row)."""
        return not self.error


def predicted_class(bundle: Scorer, flagged: bool) -> str:
    """The class name written for a flagged / not flagged in-scope image."""
    if flagged:
        return bundle.positive_class
    others = [c for c in bundle.classes if c != bundle.positive_class]
    return others[0] if len(others) == 1 else "not-" + bundle.positive_class


def decide(bundle: Scorer, probability: float, scope: Scope | None) -> Verdict:
    """The verdict on one image scored by ``bundle`` (an error verdict for a non-finite answer)."""
    scope = scope or NOT_JUDGED
    if not np.isfinite(probability):
        return Verdict(probability, False, "", scope, bundle.threshold, NO_VALID_ANSWER)
    threshold = bundle.threshold
    flagged = probability >= threshold or not scope.inside
    prediction = predicted_class(bundle, flagged) if scope.inside else OUT_OF_SCOPE
    return Verdict(probability, flagged, prediction, scope, threshold)


def feature_scope(scope: Scope | None, distance: float, guard: FeatureGuard) -> Scope | None:
    """The rules' verdict ``scope`` combined with the feature distance of the same image."""
    if scope is None:
        return None
    limit = f"limit {guard.limit:.2f} holds {100 * guard.share:g}% of validation X-rays"
    if distance <= guard.limit:
        if not scope.inside:
            return scope
        return Scope(True, f"{scope.reason}; like the training X-rays in the model's own "
                           f"features (distance {distance:.2f}, {limit})")
    reason = f"unlike the training X-rays in the model's own features (distance {distance:.2f}, " \
             f"{limit})"
    if scope.inside:
        return Scope(False, f"{OUT_PREFIX}: {reason}")
    return Scope(False, f"{scope.reason}; {reason}")


def score_batch(bundle: Scorer, inputs: np.ndarray,
                scopes: Sequence[Scope | None]) -> list[Verdict]:
    """Run the model on one normalised (N, C, S, S) batch and decide every image in it.

    An image the model answers with NaN or infinity gets an error verdict (:data:`NO_VALID_ANSWER`);
    the other images of the batch are decided as usual.
    """
    if len(inputs) != len(scopes):
        raise ValueError(f"{len(inputs)} images but {len(scopes)} scope verdicts")
    if bundle.guard is None:
        probabilities = bundle.predict(inputs, non_finite_rows_ok=True)
    else:
        probabilities, features = bundle.predict_with_features(inputs, non_finite_rows_ok=True)
        if features is None:
            raise ValueError(f"{bundle.artifact.path} returned no features; its scope guard needs "
                             "them: rebuild the bundle with `python -m converters build`")
        distances = bundle.guard.distances(features)
        probabilities = np.where(np.isfinite(distances), probabilities, np.nan)
        scopes = [feature_scope(scope, float(d), bundle.guard)
                  for scope, d in zip(scopes, distances)]
    return [decide(bundle, float(p), scope) for p, scope in zip(probabilities, scopes)]
