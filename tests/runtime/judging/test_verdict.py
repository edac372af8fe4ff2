"""The one flag rule with several findings: any finding at its threshold flags; the row names it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from runtime.judging.scope import OUT_OF_SCOPE, Scope
from runtime.judging.verdict import NO_FINDING, NO_VALID_ANSWER, decide

INSIDE = Scope(True, "a chest X-ray")
OUTSIDE = Scope(False, "out of scope: looks like an adult chest X-ray")


@dataclass
class Model:
    """The parts of a loaded bundle the verdict reads (no engine: the rule alone)."""

    classes: list[str]
    findings: list[str]
    thresholds: dict[str, float]
    guard: None = None
    artifact: object = field(default=None)


THREE = Model(["NORMAL", "BACTERIAL", "VIRAL"], ["BACTERIAL", "VIRAL"],
              {"BACTERIAL": 0.30, "VIRAL": 0.20})


@pytest.mark.parametrize("row, flagged, prediction, finding", [
    ([0.90, 0.05, 0.05], False, "NORMAL", "BACTERIAL"),  # cleared: the likeliest finding reported
    ([0.50, 0.10, 0.40], True, "VIRAL", "VIRAL"),  # the second finding alone flags it
    ([0.10, 0.50, 0.40], True, "BACTERIAL", "BACTERIAL"),  # both reached: the likelier named
    ([0.55, 0.25, 0.20], True, "VIRAL", "VIRAL"),  # VIRAL exactly at its threshold
])
def test_any_finding_at_its_threshold_flags(row, flagged, prediction, finding):
    verdict = decide(THREE, np.array(row), INSIDE)
    assert (verdict.flagged, verdict.prediction, verdict.finding) == (flagged, prediction, finding)
    assert verdict.probability == pytest.approx(row[THREE.classes.index(finding)])
    assert verdict.threshold == THREE.thresholds[finding]
    assert verdict.by_label(THREE.classes) == pytest.approx(dict(zip(THREE.classes, row)))


def test_out_of_scope_is_flagged_and_never_cleared():
    verdict = decide(THREE, np.array([0.98, 0.01, 0.01]), OUTSIDE)
    assert verdict.flagged and verdict.prediction == OUT_OF_SCOPE


def test_multilabel_without_other_labels_says_no_finding():
    model = Model(["Pneumonia", "Effusion"], ["Pneumonia", "Effusion"],
                  {"Pneumonia": 0.6, "Effusion": 0.6})
    cleared = decide(model, np.array([0.4, 0.5]), INSIDE)
    assert (cleared.flagged, cleared.prediction, cleared.finding) == (False, NO_FINDING, "Effusion")
    both = decide(model, np.array([0.9, 0.7]), INSIDE)
    assert (both.flagged, both.prediction) == (True, "Pneumonia")


def test_one_finding_is_the_reference_models_rule():
    model = Model(["NORMAL", "PNEUMONIA"], ["PNEUMONIA"], {"PNEUMONIA": 0.25})
    assert decide(model, np.array([0.76, 0.24]), INSIDE).prediction == "NORMAL"
    verdict = decide(model, np.array([0.75, 0.25]), INSIDE)
    assert (verdict.flagged, verdict.prediction, verdict.probability) == (True, "PNEUMONIA", 0.25)


def test_a_non_finite_answer_is_an_error_verdict():
    verdict = decide(THREE, np.array([np.nan, np.nan, np.nan]), INSIDE)
    assert verdict.error == NO_VALID_ANSWER and not verdict.flagged and not verdict.ok
    assert verdict.by_label(THREE.classes) == {}
