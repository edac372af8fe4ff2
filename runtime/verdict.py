"""The one place that decides a result: model probability + scope verdict -> the row's verdict.

Every path that scores images (the folder runner, the REST service, archive triage on Ray) calls
:func:`score_batch` on a normalised batch, so the flag rule is written once: an image is flagged
when its probability reaches the threshold in force, or when it is out of scope (an out-of-scope
image is scored but never cleared by the model: its prediction is ``OUT-OF-SCOPE`` and a person
reads it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from runtime.bundle import Bundle
from runtime.scope import OUT_OF_SCOPE, Scope

#: the verdict of an image whose scope was never judged (should not happen: load_one judges it)
NOT_JUDGED = Scope(False, "scope not judged")


@dataclass(frozen=True)
class Verdict:
    """What a scored image's row says."""

    probability: float  # of the bundle's positive class
    flagged: bool  # sent to a person: probability >= threshold, or out of scope
    prediction: str  # the positive class, the other class, or OUT-OF-SCOPE
    scope: Scope
    threshold: float  # the threshold in force when it was decided


def predicted_class(bundle: Bundle, flagged: bool) -> str:
    """The class name written for a flagged / not flagged in-scope image."""
    if flagged:
        return bundle.positive_class
    others = [c for c in bundle.classes if c != bundle.positive_class]
    return others[0] if len(others) == 1 else "not-" + bundle.positive_class


def decide(bundle: Bundle, probability: float, scope: Scope | None) -> Verdict:
    """The verdict on one image scored by ``bundle``."""
    scope = scope or NOT_JUDGED
    threshold = bundle.threshold
    flagged = probability >= threshold or not scope.inside
    prediction = predicted_class(bundle, flagged) if scope.inside else OUT_OF_SCOPE
    return Verdict(probability, flagged, prediction, scope, threshold)


def score_batch(bundle: Bundle, inputs: np.ndarray,
                scopes: Sequence[Scope | None]) -> list[Verdict]:
    """Run the model on one normalised (N, 1, S, S) batch and decide every image in it."""
    if len(inputs) != len(scopes):
        raise ValueError(f"{len(inputs)} images but {len(scopes)} scope verdicts")
    probabilities = bundle.predict(inputs)
    return [decide(bundle, float(p), scope) for p, scope in zip(probabilities, scopes)]
