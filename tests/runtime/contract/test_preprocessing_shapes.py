"""The manifest's preprocessing block: old manifests (``size: int``, crop none/center-square)
load and mean what they meant; a non-square size and the ``center`` crop round-trip."""

from __future__ import annotations

import json

import pytest

from runtime.contract.manifest import (
    ContractError,
    Preprocessing,
    manifest_from_dict,
    to_dict,
)
from tests.runtime.helpers import minimal_manifest_data

#: a preprocessing block as kits before this change wrote it
OLD = {"size": 28, "crop": "center-square", "interpolation": "area",
       "scale": 0.00392156862745098, "mean": [0.5], "std": [0.5], "channels": 1}


def _with_input(preprocessing: dict, height: int, width: int) -> dict:
    data = minimal_manifest_data(preprocessing)
    data["model"]["input"]["shape"] = [-1, 1, height, width]
    return data


def test_an_old_block_loads_with_the_same_meaning_and_writes_back_unchanged():
    manifest = manifest_from_dict(minimal_manifest_data(OLD))
    spec = manifest.preprocessing
    assert spec == Preprocessing() and spec.size == 28 and spec.shape == (28, 28)
    assert spec.crop_fraction is None
    assert spec.crop_box(100, 60) == (20, 0, 60, 60)  # the centre square, as before
    assert to_dict(manifest)["preprocessing"] == OLD  # no new key for an old reader
    none = manifest_from_dict(minimal_manifest_data({**OLD, "crop": "none"})).preprocessing
    assert none.crop_box(100, 60) == (0, 0, 100, 60)


def test_a_non_square_center_crop_round_trips():
    block = {**OLD, "size": [192, 256], "crop": "center", "crop_fraction": 0.875}
    manifest = manifest_from_dict(_with_input(block, 192, 256))
    spec = manifest.preprocessing
    assert spec.size == (192, 256) and (spec.height, spec.width) == (192, 256)
    assert spec.crop == "center" and spec.crop_fraction == 0.875
    again = manifest_from_dict(json.loads(json.dumps(to_dict(manifest))))
    assert again.preprocessing == spec
    assert to_dict(again)["preprocessing"]["size"] == [192, 256]


def test_a_square_given_as_a_pair_is_written_as_one_int():
    spec = Preprocessing(size=(64, 64), crop="center", crop_fraction=0.875)
    assert spec.size == 64 and spec == Preprocessing(size=64, crop="center", crop_fraction=0.875)
    assert spec.as_dict()["size"] == 64


@pytest.mark.parametrize("block, words", [
    ({"crop": "center"}, "crop_fraction"),
    ({"crop": "center", "crop_fraction": 0.0}, "(0, 1]"),
    ({"crop": "center", "crop_fraction": 1.5}, "(0, 1]"),
    ({"crop": "none", "crop_fraction": 0.875}, "applies to crop 'center' only"),
    ({"size": [192, 256]}, "needs a square size"),
    ({"size": [192, 256, 3], "crop": "none"}, "[height, width]"),
    ({"size": [0, 28], "crop": "none"}, "[height, width]"),
    ({"crop": "middle"}, "unknown crop"),
])
def test_bad_blocks_are_refused_naming_the_key(block, words):
    with pytest.raises(ContractError, match="preprocessing") as info:
        manifest_from_dict(minimal_manifest_data({**OLD, **block}))
    assert words in str(info.value)


def test_the_model_input_must_match_height_and_width():
    block = {**OLD, "size": [192, 256], "crop": "none"}
    with pytest.raises(ContractError, match="height x width 192x256"):
        manifest_from_dict(_with_input(block, 256, 192))
