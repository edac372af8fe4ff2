"""The Kermany loader and its patient-grouped splits, on the real manifest."""

from __future__ import annotations

import numpy as np
import pytest

from converters.data.kermany import (
    TRAIN_FOLDER,
    find_root,
    patient_folds,
    patient_from_name,
    patient_split,
    read_manifest,
)
from converters.data.labelled import DatasetError


@pytest.fixture(scope="module")
def manifest(data_dir):
    return read_manifest(data_dir / TRAIN_FOLDER)


def _patients(manifest, index) -> set[str]:
    return {manifest.patients[i] for i in index}


def test_manifest_is_the_whole_training_folder(manifest):
    assert len(manifest) == 5216 and int(manifest.labels.sum()) == 3875
    assert len(set(manifest.patients)) == 2846


def test_patient_parsed_from_file_name_matches_manifest(manifest):
    assert all(patient_from_name(p) == q for p, q in zip(manifest.paths, manifest.patients))


def test_no_patient_on_both_sides(manifest):
    train, val = patient_split(manifest)
    assert len(train) + len(val) == len(manifest)
    assert not set(train) & set(val)
    assert not _patients(manifest, train) & _patients(manifest, val)


def test_split_is_stratified(manifest):
    train, val = patient_split(manifest, val_fraction=0.2)
    for label in (0, 1):
        everyone = {p for p, y in zip(manifest.patients, manifest.labels) if y == label}
        in_val = {manifest.patients[i] for i in val if manifest.labels[i] == label}
        assert abs(len(in_val) / len(everyone) - 0.2) < 0.005
    rate_train, rate_val = manifest.labels[train].mean(), manifest.labels[val].mean()
    assert abs(rate_train - rate_val) < 0.03
    assert 0.17 < len(val) / len(manifest) < 0.23


def test_split_is_deterministic_for_a_seed(manifest):
    a, b = patient_split(manifest, seed=0), patient_split(manifest, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(patient_split(manifest, seed=1)[1], a[1])


def test_folds_partition_patients(manifest):
    folds = patient_folds(manifest, 5)
    seen = np.concatenate([val for _, val in folds])
    assert np.array_equal(np.sort(seen), np.arange(len(manifest)))  # each image validated once
    groups = [_patients(manifest, val) for _, val in folds]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not groups[i] & groups[j]
        train, val = folds[i]
        assert not _patients(manifest, train) & groups[i]
    for label in (0, 1):  # stratified: each fold gets the same share of each class's patients
        counts = [len({manifest.patients[k] for k in val if manifest.labels[k] == label})
                  for _, val in folds]
        assert max(counts) - min(counts) <= 1


def test_missing_folder_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetError) as info:
        find_root(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / TRAIN_FOLDER / "manifest.csv") in message
    assert "--data" in message and "CXR_DATA_DIR" in message


def test_data_env_var_is_honoured(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    assert find_root(None) == data_dir
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetError, match=str(tmp_path)):
        find_root(None)


def test_folders_beside_the_data_are_read_or_refused_never_skipped(data_dir, tmp_path):
    """The build looks for the 224 px rendering beside the training data: absent is None, but
    folders that are there and cannot be read stop the build (they were quietly skipped, and the
    scope guard fitted without them)."""
    from converters.data.kermany import TEST_FOLDER, TRAIN_FOLDER, beside

    assert beside(tmp_path) is None
    assert beside(data_dir) is not None
    (tmp_path / TRAIN_FOLDER).mkdir()
    (tmp_path / TRAIN_FOLDER / "manifest.csv").write_text("path,label\nx.jpeg,PNEUMONIA\n")
    with pytest.raises(DatasetError, match="not found"):  # the test folder is missing
        beside(tmp_path)
    (tmp_path / TEST_FOLDER).mkdir()
    (tmp_path / TEST_FOLDER / "manifest.csv").write_bytes(b"\x00\xff not a manifest\n")
    with pytest.raises(DatasetError, match=f"{TRAIN_FOLDER}.*missing"):  # its manifest, named
        beside(tmp_path)
