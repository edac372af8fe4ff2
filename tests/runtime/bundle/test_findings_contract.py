"""The manifest's findings: several labels may send a case to a doctor, each with its threshold."""

from __future__ import annotations

import pytest

from runtime.contract.manifest import ContractError, manifest_from_dict
from tests.runtime.helpers import minimal_manifest_data


def _three_class(**model: object) -> dict:
    data = minimal_manifest_data({"size": 28})
    data["model"].update(classes=["NORMAL", "BACTERIAL", "VIRAL"], positive_class="BACTERIAL",
                         findings=["BACTERIAL", "VIRAL"],
                         output={"name": "probabilities", "shape": [-1, 3], "dtype": "float32"})
    data["model"].update(model)
    data["finding_thresholds"] = {"BACTERIAL": 0.5, "VIRAL": 0.2}
    return data


def test_a_bundle_built_before_findings_has_its_one_finding():
    manifest = manifest_from_dict(minimal_manifest_data({"size": 28}))
    assert manifest.model.finding_labels == ["PNEUMONIA"] and manifest.model.finding_indices == [1]
    assert manifest.thresholds() == {"PNEUMONIA": 0.5} and manifest.model.task == "multiclass"


def test_every_finding_has_its_threshold_in_the_models_order():
    manifest = manifest_from_dict(_three_class())
    assert manifest.model.finding_indices == [1, 2]
    assert list(manifest.thresholds().items()) == [("BACTERIAL", 0.5), ("VIRAL", 0.2)]


@pytest.mark.parametrize("change, words", [
    ({"findings": ["BACTERIAL", "FUNGAL"]}, "must be distinct labels of model.classes"),
    ({"findings": ["VIRAL", "BACTERIAL"]}, "must be the first of model.findings"),
    ({"task": "regression"}, "expected one of multiclass, multilabel"),
])
def test_findings_that_disagree_with_the_labels_are_refused(change, words):
    with pytest.raises(ContractError, match=words):
        manifest_from_dict(_three_class(**change))


def test_a_missing_or_stray_threshold_is_refused():
    data = _three_class()
    data["finding_thresholds"] = {"BACTERIAL": 0.5}
    with pytest.raises(ContractError, match="the model's findings are"):
        manifest_from_dict(data)
    data["finding_thresholds"] = {"BACTERIAL": 0.4, "VIRAL": 0.2}  # threshold says 0.5
    with pytest.raises(ContractError, match="differs from threshold"):
        manifest_from_dict(data)
