"""benchmarks.population_work's counting: labels read from the real manifests, the rows of a
results.csv counted, the sets a check was fitted on named."""

from __future__ import annotations

from benchmarks.population_work import (
    adult_labels,
    counts,
    in_sample,
    kermany_labels,
    wrong_calls,
)


def test_labels_come_from_the_manifests(data_dir):
    adults = adult_labels(data_dir / "adult_cxr")
    assert sum(v == "PNEUMONIA" for v in adults.values()) == 243 + 17  # Hannover + NIH Pneumonia
    assert sum(v == "NORMAL" for v in adults.values()) == 100  # NIH's No Finding
    children = kermany_labels(data_dir / "kermany_test_224")
    assert len(children) == 624 and children["NORMAL/IM-0001-0001.jpeg"] == "NORMAL"


def _row(path, flagged, scope, reason="", probability=0.5, prediction="PNEUMONIA"):
    return {"path": path, "status": "ok", "flagged": str(flagged), "scope": scope,
            "scope_reason": reason, "probability": str(probability), "prediction": prediction}


def test_counts_and_wrong_calls():
    labels = {"a": "NORMAL", "b": "PNEUMONIA", "c": "NORMAL"}
    check = "read without the model: ... (population check 3.10 > limit -0.82)"
    rows = [_row("a", 1, "out", check, 0.9), _row("b", 0, "in", probability=0.1,
                                                   prediction="NORMAL"),
            _row("c", 0, "in", probability=0.1, prediction="NORMAL"), _row("d", 1, "in"),
            {"path": "manifest.csv", "status": "error", "flagged": "", "scope": "",
             "scope_reason": "", "probability": "", "prediction": ""}]
    got = counts(rows, labels)
    assert got == {"images": 4, "errors": 1, "sent_to_doctor": 2, "cleared": 2, "in_scope": 3,
                   "out_of_scope": 1, "out_by_population_check": 1, "labelled": 3,
                   "normal_sent": 1, "pneumonia_cleared": 1}
    # a (NORMAL at 0.9) and b (PNEUMONIA at 0.1) are wrong at 0.5; only a is out, by the check
    assert wrong_calls(rows, labels, 0.5, "PNEUMONIA") == {"wrong": 2, "marked_out": 1,
                                                           "marked_out_by_check": 1}


def test_the_sets_a_check_was_fitted_on_are_named(data_dir):
    fitted = "in population: train: x (4168); out of population: nih (581), hannover (243)"
    assert in_sample(fitted, data_dir) == ["adult_cxr/hannover", "adult_cxr/nih"]
    assert in_sample("in population: nih (3); out of population: other (5)", data_dir) == []
