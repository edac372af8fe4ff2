"""The build's use of a fitted population check: copied only when it fits the build's images."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.population import PopulationFitError, bundle_check, folder_images
from runtime.contract.manifest import CHILDREN_1_TO_5, POPULATION_CHECK
from tests.runtime.judging.test_population import MODELS, _adults, _thumbs


def test_a_check_is_refused_when_it_does_not_fit_the_builds_validation_images(data_dir, tmp_path):
    checkpoint = MODELS / "reference" / "pneumonia_cnn.safetensors"
    # the validation side of the patient split: the images the check's limit was set on
    folder = data_dir / "kermany_train_224"
    with (MODELS / "clinical" / "val.csv").open(newline="") as handle:
        children = _thumbs([folder / row["path"] for row in csv.DictReader(handle)])
    block, graph = bundle_check(checkpoint, children, CHILDREN_1_TO_5.description)
    assert graph.name == POPULATION_CHECK and block.val_n == 1048 and block.val_in_scope >= 0.98
    with pytest.raises(PopulationFitError, match="refit with `python -m converters population fit`"):
        bundle_check(checkpoint, _thumbs(_adults(data_dir, "nih", 20)), CHILDREN_1_TO_5.description)
    bare = tmp_path / "model"
    bare.mkdir()
    shutil.copy2(checkpoint, bare / checkpoint.name)
    assert bundle_check(bare / checkpoint.name, children, "") is None  # no check beside it


def test_out_of_population_folders_hold_the_young_apart(data_dir):
    adults, young = folder_images(Path(data_dir) / "adult_cxr" / "nih", younger_than=18)
    assert len(adults.thumbs) == 581 and len(young.thumbs) == 19
    assert adults.thumbs.dtype == np.uint8 and adults.thumbs.shape[1:] == (64, 64)
