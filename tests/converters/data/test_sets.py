"""The build's evaluation sets: the checkpoint's declared dataset picks them, nothing else."""

from __future__ import annotations

import pytest

from converters.checkpoint import load_checkpoint
from converters.data.kermany import TEST_FOLDER, read_manifest
from converters.data.labelled import DatasetError
from converters.data.sets import DATASETS, evaluation_sets
from runtime.contract import manifest as contract


def test_every_dataset_the_contract_accepts_has_a_loader():
    assert tuple(DATASETS) == contract.DATASETS


def test_an_unknown_dataset_is_named_instead_of_replaced(data_dir):
    with pytest.raises(DatasetError, match="'chexpert'.*pneumoniamnist, kermany"):
        evaluation_sets("other", "chexpert", contract.Preprocessing(), str(data_dir))


def test_the_tiny_model_gets_its_npz_and_the_test_x_rays_as_files(data_dir, reference_checkpoint):
    spec = load_checkpoint(reference_checkpoint).spec
    sets = evaluation_sets(spec.name, spec.dataset, spec.preprocessing, str(data_dir))
    assert sets.source == str(data_dir / "pneumoniamnist.npz")
    assert (len(sets.val), len(sets.test)) == (524, 624) and sets.val.groups is None
    assert sets.calibration.shape == (512, 1, 28, 28)
    files, md5 = sets.test_files, read_manifest(data_dir / TEST_FOLDER).md5
    assert files.source == f"{TEST_FOLDER} (manifest md5 {md5})"
    assert len(files) == 624 and int(files.labels.sum()) == int(sets.test.labels.sum()) == 390
    assert files.inputs.shape == sets.test.inputs.shape


def test_a_kermany_checkpoint_gets_patient_grouped_sets_at_its_size(data_dir):
    from converters.clinical import CLINICAL_CHECKPOINT

    spec = load_checkpoint(CLINICAL_CHECKPOINT).spec
    sets = evaluation_sets(spec.name, spec.dataset, spec.preprocessing, str(data_dir))
    assert sets.source == str(data_dir)
    assert len(sets.test) == 624 and int(sets.test.labels.sum()) == 390
    assert len(sets.val) == 1048 and sets.val.inputs.shape[1:] == (1, 128, 128)
    assert not set(sets.val.groups) & set(sets.train.groups)  # no child on both sides
    assert sets.calibration.shape[1:] == (1, 128, 128) and len(sets.calibration) >= 300
    assert sets.renderings == [] and sets.test_files is None  # its test split is the files
