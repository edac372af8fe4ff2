"""The device self-check compares every output column and decides over every finding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.bundle.selfcheck import ReferenceData, compare, decisions
from runtime.contract.manifest import manifest_from_dict
from tests.runtime.helpers import minimal_manifest_data


def _three_class():
    data = minimal_manifest_data({"size": 28})
    data["model"].update(classes=["NORMAL", "BACTERIAL", "VIRAL"], positive_class="BACTERIAL",
                         findings=["BACTERIAL", "VIRAL"],
                         output={"name": "probabilities", "shape": [-1, 3], "dtype": "float32"})
    data["finding_thresholds"] = {"BACTERIAL": 0.5, "VIRAL": 0.2}
    return manifest_from_dict(data)


@dataclass
class Answers:
    """An engine that answers fixed probabilities (what the device gave)."""

    out: np.ndarray
    name: str = "onnxruntime"
    active: tuple = ("CPUExecutionProvider",)

    def run(self, batch):
        return self.out[:len(batch)]


BUILD = np.array([[0.70, 0.20, 0.10], [0.30, 0.60, 0.10], [0.50, 0.10, 0.40]], np.float32)


def test_a_difference_in_a_column_that_is_not_the_first_finding_fails():
    manifest = _three_class()
    ref = ReferenceData(np.zeros((3, 1, 28, 28), np.float32), {"model.onnx": BUILD})
    same = compare(manifest.artifacts[0], Answers(BUILD.copy()), manifest, ref)
    assert same.passed and same.max_abs_diff == 0.0 and same.agreement == 1.0
    moved = BUILD.copy()
    moved[2] = [0.75, 0.10, 0.15]  # BACTERIAL unchanged, NORMAL and VIRAL moved by 0.25
    check = compare(manifest.artifacts[0], Answers(moved), manifest, ref)
    assert abs(check.max_abs_diff - 0.25) < 1e-6 and not check.passed
    assert abs(check.agreement - 2 / 3) < 1e-9  # image 3 no longer reaches VIRAL's threshold


def test_decisions_are_per_finding_and_one_finding_is_the_flag():
    manifest = _three_class()
    assert decisions(BUILD, manifest).tolist() == [0, 1, 2]  # none; BACTERIAL; VIRAL
    one = manifest_from_dict(minimal_manifest_data({"size": 28}))
    assert decisions(np.array([[0.6, 0.4], [0.4, 0.6]]), one).tolist() == [0, 1]
