"""THE entry point for a model's evaluation images: :func:`evaluation_sets`.

The build asks for validation and test sets (and the training split, for INT8 calibration and
the scope guard) and never knows which dataset they came from: the dataset a checkpoint declares
picks its loader and its other facts in one table, :data:`DATASETS`. Every set is a
:class:`~converters.data.labelled.LabelledImages` at the model's preprocessing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from converters.data import kermany, pneumoniamnist
from converters.data.labelled import DatasetError, LabelledImages, Splits, stratified_sample
from runtime.contract import manifest as contract
from runtime.contract.manifest import Preprocessing

MIN_CALIBRATION_IMAGES = 300


@dataclass(frozen=True)
class Dataset:
    """What the kit knows of one training dataset."""

    open: Callable[[str | None], Splits]  # the loader: ``--data`` (or None) -> its splits
    population: contract.Population  # whom its images came from (manifest model.population)
    #: other renderings of the same X-rays that may sit in its folder (None: there are none)
    beside: Callable[[Path], Splits | None] | None = None


#: the datasets a checkpoint may declare (its ``dataset`` metadata); a new one adds its row here
DATASETS = {
    "pneumoniamnist": Dataset(pneumoniamnist.load_pneumoniamnist, contract.CHILDREN_1_TO_5,
                              beside=kermany.beside),
    kermany.DATASET_NAME: Dataset(kermany.open_kermany, contract.CHILDREN_1_TO_5),
}


@dataclass(frozen=True)
class Rendering:
    """The model's own training and validation X-rays as other files (another rendering): the
    scope guard's reference and limit cover it too, so that the rendering is not mistaken for
    unfamiliar images. The test split is never among them."""

    name: str
    train: LabelledImages
    val: LabelledImages


def calibration_index(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Which training images calibrate INT8: ``count`` (at least MIN_CALIBRATION_IMAGES, at most
    all) by :func:`~converters.data.labelled.stratified_sample`."""
    if len(labels) < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"the training split has {len(labels)} images; INT8 calibration needs "
                         f"at least {MIN_CALIBRATION_IMAGES}")
    count = max(MIN_CALIBRATION_IMAGES, min(count, len(labels)))
    return stratified_sample(labels, count, seed)


class EvaluationSets:
    """The labelled images a build needs for one model, each made on first use: validation
    (parity, threshold, reference set), test (clinical metrics), training (INT8 calibration, the
    scope guard's reference), other renderings of the training X-rays (the guard too) and the
    test X-rays as image files (the benchmarks read only ``test``)."""

    def __init__(self, dataset: Dataset, own: Splits, spec: Preprocessing,
                 calibration_count: int, calibration_seed: int):
        self.source, self.md5 = own.location, own.md5  # recorded in the manifest
        self.population = dataset.population
        self.calibration_seed = calibration_seed
        self._dataset, self._own, self._spec = dataset, own, spec
        self._calibration_count = calibration_count

    @functools.cached_property
    def val(self) -> LabelledImages:
        return self._own.split_at("val", self._spec)

    @functools.cached_property
    def test(self) -> LabelledImages:
        return self._own.split_at("test", self._spec)

    @functools.cached_property
    def train(self) -> LabelledImages:
        return self._own.split_at("train", self._spec)

    @functools.cached_property
    def calibration(self) -> np.ndarray:
        """Model inputs of the training images that calibrate INT8 (stratified, seeded)."""
        index = calibration_index(self.train.strata, self._calibration_count,
                                  self.calibration_seed)
        return self.train.take(index).inputs

    @functools.cached_property
    def _beside(self) -> Splits | None:
        """The other rendering's splits, when they sit in this dataset's folder (read once)."""
        find = self._dataset.beside
        return None if find is None else find(self._own.folder)

    @functools.cached_property
    def renderings(self) -> list[Rendering]:
        """Other renderings of the training X-rays (their test split is not read for them)."""
        other = self._beside
        return [] if other is None else [Rendering(other.train_name,
                                                   other.split_at("train", self._spec),
                                                   other.split_at("val", self._spec))]

    def image_files_at(self, spec: Preprocessing, sides: tuple[str, ...] = ("train", "val", "test")
                       ) -> dict[str, LabelledImages]:
        """The model's ``sides`` X-rays as image files at ``spec`` (the population check's
        thumbnails): the other rendering's when there is one (a model trained on arrays, e.g.
        PneumoniaMNIST's 28 px, has no files), else the model's own splits."""
        splits = self._beside or self._own
        return {side: splits.split_at(side, spec) for side in sides}

    @functools.cached_property
    def test_files(self) -> LabelledImages | None:
        """The test X-rays as the image files a clinic would triage, decoded and preprocessed
        as ``runtime triage`` does, when ``test`` is another rendering of them (None when it
        already is those files, or they are not here); ``source`` names them."""
        return None if self._beside is None else self._beside.split_at("test", self._spec)


def evaluation_sets(model: str, dataset: str, spec: Preprocessing, data: str | None = None,
                    calibration_count: int = 512, seed: int = 0) -> EvaluationSets:
    """The evaluation images of ``model``, trained on ``dataset`` (its checkpoint's metadata),
    at its preprocessing ``spec``; ``data``: the file or folder to look in (None: the loader's
    default places)."""
    if dataset not in DATASETS:
        raise DatasetError(f"model {model!r} declares dataset {dataset!r}; the kit has "
                           f"evaluation images for {', '.join(DATASETS)} only. Re-save the "
                           f"checkpoint with one of those in its 'dataset' metadata.")
    row = DATASETS[dataset]
    return EvaluationSets(row, row.open(data), spec, calibration_count, seed)
