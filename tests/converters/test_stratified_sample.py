"""One stratified draw for the whole kit (converters.data.labelled.stratified_sample): INT8
calibration sets of both datasets and tiny-budget training subsets pick, for a seed, exactly the
images they picked before the three copies were merged into one."""

from __future__ import annotations

import hashlib

import numpy as np

from converters.data.kermany import TRAIN_FOLDER, patient_split, read_manifest
from converters.data.labelled import stratified_sample
from converters.data.sets import calibration_index

#: (count, sha256[:16] of the int64 indices) measured with the three separate implementations
#: (converters/images.py, converters/kermany.py, converters/clinical.py) before they were merged
PINNED = {
    "pneumoniamnist calibration 512": (512, "e17f13251b19a940"),
    "kermany calibration 512": (512, "52d55474913063c3"),
    "kermany subsample 96": (96, "3cf37b2ef3076e76"),
    "kermany subsample 64": (64, "7e6da55398889cf1"),
}


def _fingerprint(index: np.ndarray) -> tuple[int, str]:
    return len(index), hashlib.sha256(np.asarray(index, np.int64).tobytes()).hexdigest()[:16]


def test_the_same_images_are_picked_as_before(pneumoniamnist, data_dir):
    manifest = read_manifest(data_dir / TRAIN_FOLDER)
    kermany_train = manifest.labels[patient_split(manifest)[0]]
    got = {
        "pneumoniamnist calibration 512": calibration_index(pneumoniamnist.train.labels, 512, 0),
        "kermany calibration 512": calibration_index(kermany_train, 512, 0),
        "kermany subsample 96": stratified_sample(kermany_train, 96, 0),
        "kermany subsample 64": stratified_sample(kermany_train, 64, 0),
    }
    assert {name: _fingerprint(index) for name, index in got.items()} == PINNED


def test_draw_is_stratified_sorted_and_seeded(pneumoniamnist):
    labels = pneumoniamnist.train.labels
    index = stratified_sample(labels, 400, seed=3)
    assert np.all(np.diff(index) > 0)  # sorted, no repeats
    assert abs(labels[index].mean() - labels.mean()) < 0.01
    assert np.array_equal(index, stratified_sample(labels, 400, seed=3))
    assert not np.array_equal(index, stratified_sample(labels, 400, seed=4))


def test_a_rare_class_keeps_at_least_one_image():
    labels = np.array([1] * 999 + [0])
    index = stratified_sample(labels, 10, seed=0)
    assert 999 in index and len(index) == 11
