"""The shipped reference model: its card's metrics are reproduced on the real test split."""

from __future__ import annotations

import json

import pytest

from converters.architectures import count_flops, count_parameters
from converters.checkpoint import load_checkpoint
from converters.train import evaluate_model
from runtime.bundle.hashing import sha256_file


@pytest.fixture(scope="module")
def card(reference_card):
    return json.loads(reference_card.read_text())


@pytest.fixture(scope="module")
def loaded(reference_checkpoint):
    return load_checkpoint(reference_checkpoint)


def test_card_describes_the_shipped_file(card, loaded, reference_checkpoint):
    assert card["checkpoint"]["sha256"] == sha256_file(reference_checkpoint)
    assert card["checkpoint"]["bytes"] == reference_checkpoint.stat().st_size
    assert reference_checkpoint.stat().st_size < 5 * 2**20  # small enough to ship
    assert card["architecture"] == loaded.spec.architecture
    assert card["config"] == loaded.spec.config
    assert card["preprocessing"] == loaded.spec.preprocessing.as_dict()
    assert card["parameters"] == count_parameters(loaded.model)
    assert card["flops_per_image"] == count_flops(loaded.model, loaded.spec.input_shape)


def test_card_data_checksum_matches_the_real_file(card, pneumoniamnist):
    assert card["data"]["md5"] == pneumoniamnist.md5
    assert card["data"]["splits"] == {"train": 4708, "val": 524, "test": 624}


def test_card_metrics_are_reproduced(card, loaded, pneumoniamnist):
    target = card["threshold"]["target_sensitivity"]
    result = evaluate_model(loaded.model, loaded.spec, pneumoniamnist, target)
    assert result["threshold"] == pytest.approx(card["threshold"]["value"], abs=1e-5)
    for split in ("val", "test"):
        for key in ("auc", "sensitivity", "specificity", "accuracy"):
            assert result[split][key] == pytest.approx(card["metrics"][split][key], abs=1e-4), \
                (split, key)
        assert result[split]["n"] == card["metrics"][split]["n"]
    # the threshold was chosen on validation for the target sensitivity
    assert result["val"]["sensitivity"] >= target
