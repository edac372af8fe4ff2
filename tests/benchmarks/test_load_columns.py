"""The load test's correctness check compares every label's probability the service answers with
the triage row of the same file (results.csv's p_<label>), not only the row's probability."""

from __future__ import annotations

from benchmarks.load_test import Sent, _checked

ROW = {"path": "a.jpeg", "status": "ok", "probability": "0.200000", "flagged": "0",
       "p_NORMAL": "0.750000", "p_BACTERIAL": "0.200000", "p_VIRAL": "0.050000"}


def _answer(viral: float) -> Sent:
    return Sent(0, 200, 0.01, {"probability": 0.2, "flagged": False,
                               "probabilities": {"NORMAL": 0.8 - viral, "BACTERIAL": 0.2,
                                                 "VIRAL": viral}})


def test_a_difference_in_another_label_is_caught():
    assert _checked([_answer(0.05)], [ROW], 1)["agree"]
    moved = _checked([_answer(0.09)], [ROW], 1)
    assert not moved["agree"] and abs(moved["max_abs_diff"] - 0.04) < 1e-9
