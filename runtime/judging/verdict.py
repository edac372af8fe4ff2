"""The one place that decides a result: model probability + scope verdict -> the row's verdict.

Every path that scores images (the folder runner, the REST service, archive triage on Ray) calls
:func:`score_batch` on a normalised batch, so the flag rule is written once: an image is flagged
when any of the model's findings reaches its threshold in force (one finding for the reference
models; several for a model such as normal / bacterial / viral), or when it is out of scope (an
out-of-scope image is scored but never cleared by the model: its prediction is ``OUT-OF-SCOPE``
and a person reads it).

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

#: the verdict of an image whose scope was never judged (should not happen: load_one or
#: conclude_scopes judges it)
NOT_JUDGED = Scope(False, "scope not judged")
#: the error of an image the model answered with NaN or infinity (that image only is not scored)
NO_VALID_ANSWER = ("the model gave no valid answer for this image (its output was NaN or "
                   "infinite): not scored; read it without the model")


#: the prediction of an in-scope image no finding reached, for a model whose every label is a
#: finding (a multi-label model); a model with other labels names the likeliest of them
NO_FINDING = "NORMAL"


class Scorer(Protocol):
    """What the verdict needs of a loaded model (``runtime.bundle.load.Bundle`` is one)."""

    @property
    def artifact(self) -> ArtifactEntry: ...
    @property
    def classes(self) -> list[str]: ...
    @property
    def findings(self) -> list[str]: ...
    @property
    def thresholds(self) -> dict[str, float]: ...
    @property
    def guard(self) -> FeatureGuard | None: ...
    def predict(self, batch: np.ndarray, non_finite_rows_ok: bool = False) -> np.ndarray: ...
    def predict_with_features(self, batch: np.ndarray, non_finite_rows_ok: bool = False
                              ) -> tuple[np.ndarray, np.ndarray | None]: ...


@dataclass(frozen=True)
class Verdict:
    """What a scored image's row says."""

    #: of the finding the row names: the likeliest finding that reached its threshold, else the
    #: likeliest finding (for a model with one finding: that finding's probability)
    probability: float
    flagged: bool  # sent to a person: a finding reached its threshold, or out of scope
    prediction: str  # the finding, the likeliest other label (or NO_FINDING), or OUT-OF-SCOPE
    scope: Scope
    threshold: float  # the threshold in force of the finding ``probability`` is of
    error: str = ""  # NO_VALID_ANSWER when the model's output for this image was not finite
    #: every label's probability, in the model's class order
    probabilities: tuple[float, ...] = ()
    finding: str = ""  # the finding ``probability`` and ``threshold`` are of

    @property
    def ok(self) -> bool:
        """Whether the image was scored (False: write ``error`` as its error row)."""
        return not self.error

    def by_label(self, classes: Sequence[str]) -> dict[str, float]:
        """Every label's probability by name (empty for an error verdict)."""
        return dict(zip(classes, self.probabilities)) if self.ok else {}


def cleared_label(bundle: Scorer, row: np.ndarray) -> str:
    """What an in-scope image no finding reached is called: the likeliest label that is not a
    finding (NORMAL for the reference models), or :data:`NO_FINDING` when every label is one."""
    others = [i for i, label in enumerate(bundle.classes) if label not in bundle.findings]
    if not others:
        return NO_FINDING
    return bundle.classes[max(others, key=lambda i: row[i])]


def decide(bundle: Scorer, row: np.ndarray, scope: Scope | None) -> Verdict:
    """The verdict on one image scored by ``bundle``: ``row`` is its probability of every label
    (an error verdict when any is not finite).

    Flagged when any finding reaches its threshold in force, or when the image is out of scope.
    """
    scope = scope or NOT_JUDGED
    row = np.asarray(row, dtype=np.float64)
    thresholds = bundle.thresholds
    first = bundle.findings[0]
    if not np.isfinite(row).all():
        return Verdict(float("nan"), False, "", scope, thresholds[first], NO_VALID_ANSWER,
                       finding=first)
    p = {label: float(row[bundle.classes.index(label)]) for label in bundle.findings}
    reached = [label for label in bundle.findings if p[label] >= thresholds[label]]
    finding = max(reached or bundle.findings, key=lambda label: p[label])
    flagged = bool(reached) or not scope.inside
    if not scope.inside:
        prediction = OUT_OF_SCOPE
    else:
        prediction = finding if reached else cleared_label(bundle, row)
    return Verdict(p[finding], flagged, prediction, scope, thresholds[finding],
                   probabilities=tuple(float(v) for v in row), finding=finding)


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
        probabilities = np.where(np.isfinite(distances)[:, None], probabilities, np.nan)
        scopes = [feature_scope(scope, float(d), bundle.guard)
                  for scope, d in zip(scopes, distances)]
    return [decide(bundle, row, scope) for row, scope in zip(probabilities, scopes)]
