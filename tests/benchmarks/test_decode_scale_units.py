"""The decode-scale choice (benchmarks.decode_scale) and the new benchmark commands' --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.decode_scale import BOUND, compare, reduce_to, smallest_within
from runtime.judging.scope import Scope
from runtime.judging.verdict import Verdict

REPO = Path(__file__).resolve().parents[2]


def _verdicts(probabilities, inside=None):
    inside = inside or [True] * len(probabilities)
    return [Verdict(float(p), False, "", Scope(i, ""), 0.5) for p, i in zip(probabilities, inside)]


def _row(p99, changed=0, images=1000):
    return {"images": images, "mean": p99 / 10, "p99": p99, "max": p99,
            "decisions_changed": changed, "scope_changed": 0}


def test_compare_counts_changed_decisions_and_scopes():
    exact = _verdicts([0.1, 0.49, 0.9, 0.7], [True, True, True, True])
    scaled = _verdicts([0.1, 0.51, 0.9, 0.7], [True, True, False, True])
    row = compare(exact, scaled, 0.5)
    assert row["decisions_changed"] == 1 and row["scope_changed"] == 1
    assert row["max"] == pytest.approx(0.02) and row["farthest_changed"] == pytest.approx(0.01)


def test_smallest_scale_within_the_bound_is_chosen():
    result = {"sets": {"a": {"1.0": _row(0.08), "2.0": _row(0.02, changed=20), "3.0": _row(0.02),
                             "8.0": _row(0.001)},
                       "b": {"1.0": _row(0.0), "2.0": _row(0.0), "3.0": _row(0.029),
                             "8.0": _row(0.0)}}}
    assert smallest_within(result) == 3.0
    assert not BOUND.holds(_row(0.031)) and BOUND.holds(_row(0.03, changed=10))
    assert reduce_to(28, 3.0) == 84 and reduce_to(128, 1.5) == 192 and np.isfinite(BOUND.p99)


@pytest.mark.parametrize("module", ["benchmarks.decode_scale", "benchmarks.ceiling",
                                    "benchmarks.naive"])
def test_commands_have_help(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "usage:" in proc.stdout
