"""Real images for calibration, parity and clinical metrics, through the runtime's preprocessing.

:func:`evaluation_data` picks the images from the dataset the checkpoint declares
(PneumoniaMNIST or the Kermany 224 JPEGs, see :mod:`converters.kermany`).

PneumoniaMNIST ships 28x28 images. A model whose checkpoint declares another input size gets the
same images through :func:`runtime.preprocess.to_model_pixels` (centre crop, then the declared
interpolation to its size) and :func:`runtime.preprocess.normalize`: the contract the runtime
applies to full-size files, so every place sees the same pixels for a given checkpoint.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from converters.datasets import DatasetError, PneumoniaMNIST, Split, stratified_sample
from runtime.contract import DATASETS
from runtime.preprocess import Preprocessing, normalize, prepare_batch

if TYPE_CHECKING:
    from converters.kermany import Manifest

MIN_CALIBRATION_IMAGES = 300


@dataclass(frozen=True)
class EvalSet:
    """Model-ready inputs (N, 1, S, S) float32 and labels (N,) of one split."""

    split: str
    inputs: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def eval_set(data: PneumoniaMNIST, split: str, spec: Preprocessing) -> EvalSet:
    """A whole split, ready for a model."""
    part = data.split(split)
    return EvalSet(split, prepare_batch(part.images, spec), part.labels)


def calibration_inputs(data: PneumoniaMNIST, spec: Preprocessing, count: int = 512,
                       seed: int = 0) -> np.ndarray:
    """``count`` TRAINING images (stratified by class, fixed seed), ready for a model."""
    train = data.train
    return prepare_batch(train.images[calibration_index(train.labels, count, seed)], spec)


def calibration_index(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Which training images calibrate INT8: ``count`` (at least MIN_CALIBRATION_IMAGES, at most
    all) by :func:`converters.datasets.stratified_sample`."""
    if len(labels) < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"the training split has {len(labels)} images; INT8 calibration needs "
                         f"at least {MIN_CALIBRATION_IMAGES}")
    count = max(MIN_CALIBRATION_IMAGES, min(count, len(labels)))
    return stratified_sample(labels, count, seed)


class TrainedOn(Protocol):
    """What :func:`evaluation_data` needs to know of a model: a checkpoint's
    :class:`~converters.checkpoint.ModelSpec`, or a bundle's facts (:class:`DataSpec`)."""

    name: str
    dataset: str
    preprocessing: Preprocessing


@dataclass(frozen=True)
class DataSpec:
    """A model's data facts without its checkpoint (e.g. a bundle's manifest: the benchmarks)."""

    name: str
    dataset: str
    preprocessing: Preprocessing


@dataclass(frozen=True)
class Rendering:
    """The model's own training and validation X-rays as the runtime sees them in another
    rendering (other files of the same X-rays): the scope guard's reference and limit cover it
    too, so that the rendering is not mistaken for unfamiliar images. The test split is never
    among them."""

    name: str
    train: EvalSet
    val: EvalSet


@dataclass(frozen=True)
class TestFiles:
    """The test split's X-rays as image files, decoded and preprocessed exactly as
    ``runtime triage`` does (``source`` names the folder and its manifest's md5)."""

    source: str
    images: EvalSet


class EvaluationData:
    """The real images a build needs for one checkpoint: calibration (training split),
    validation (parity, threshold, reference set), test (clinical metrics), the whole training
    split (the scope guard's reference) and other renderings of the training X-rays (the guard
    too), each made on first use (the benchmarks read only ``test``)."""

    def __init__(self, source: str, md5: str, make_val: Callable[[], EvalSet],
                 make_test: Callable[[], EvalSet], make_calibration: Callable[[], np.ndarray],
                 calibration_seed: int = 0, make_train: Callable[[], EvalSet] | None = None,
                 make_renderings: Callable[[], list[Rendering]] | None = None,
                 make_test_files: Callable[[], TestFiles | None] | None = None):
        self.source = source  # where the images came from (recorded in the manifest)
        self.md5 = md5
        self.calibration_seed = calibration_seed
        self._make = {"val": make_val, "test": make_test, "calibration": make_calibration,
                      "train": make_train}
        self._make_renderings = make_renderings
        self._make_test_files = make_test_files

    @functools.cached_property
    def val(self) -> EvalSet:
        return self._make["val"]()

    @functools.cached_property
    def test(self) -> EvalSet:
        return self._make["test"]()

    @functools.cached_property
    def calibration(self) -> np.ndarray:
        return self._make["calibration"]()

    @functools.cached_property
    def train(self) -> EvalSet:
        if self._make["train"] is None:
            raise ValueError(f"{self.source}: no training split to fit the scope guard on")
        return self._make["train"]()

    @functools.cached_property
    def renderings(self) -> list[Rendering]:
        return [] if self._make_renderings is None else self._make_renderings()

    @functools.cached_property
    def test_files(self) -> TestFiles | None:
        """The test X-rays as the image files a clinic would triage, when ``test`` is another
        rendering of them (None when ``test`` already is those files, or they are not here)."""
        return None if self._make_test_files is None else self._make_test_files()


def evaluation_data(spec: TrainedOn, data: str | None = None, calibration_count: int = 512,
                    seed: int = 0) -> EvaluationData:
    """THE entry point for a model's evaluation images, for a checkpoint's :class:`ModelSpec`
    (or any :class:`TrainedOn`) ``spec``.

    Dispatches on ``spec.dataset``, the data the model was trained on: ``pneumoniamnist``
    (``data``: its npz or folder, see converters.datasets) or ``kermany`` (``data``: the folder
    holding ``kermany_train_224/`` and ``kermany_test_224/``, see converters.kermany). Every
    dataset returns the same :class:`EvaluationData`, at the model's preprocessing.
    """
    if spec.dataset == "pneumoniamnist":
        return _pneumoniamnist_data(spec.preprocessing, data, calibration_count, seed)
    if spec.dataset == "kermany":
        return _kermany_data(spec.preprocessing, data, calibration_count, seed)
    raise DatasetError(f"model {spec.name!r} declares dataset {spec.dataset!r}; the kit "
                       f"has evaluation images for {', '.join(DATASETS)} only. Re-save the "
                       f"checkpoint with one of those in its 'dataset' metadata.")


def _pneumoniamnist_data(spec: Preprocessing, data: str | None, calibration_count: int,
                         seed: int) -> EvaluationData:
    from converters.datasets import load_pneumoniamnist

    source = load_pneumoniamnist(data)
    beside = functools.cache(lambda: _kermany_beside(source.path.parent))  # read once, if used
    return EvaluationData(
        source=str(source.path), md5=source.md5,
        make_val=lambda: eval_set(source, "val", spec),
        make_test=lambda: eval_set(source, "test", spec),
        make_calibration=lambda: calibration_inputs(source, spec, calibration_count, seed),
        calibration_seed=seed, make_train=lambda: eval_set(source, "train", spec),
        make_renderings=lambda: _kermany_rendering(spec, beside()),
        make_test_files=lambda: _kermany_test_files(spec, beside()))


def _kermany_beside(folder: Path) -> tuple[Manifest, Manifest] | None:
    """The Kermany 224 folders' manifests when they sit in ``folder``, the npz's (the shared
    data), else None. PneumoniaMNIST's X-rays are Kermany's, centre-cropped and resized by
    MedMNIST; those folders hold the same X-rays squashed to 224 px, which the runtime crops and
    resizes differently."""
    from converters import kermany

    try:
        return kermany.read_manifests(folder)
    except (DatasetError, OSError, ValueError):
        return None


def _kermany_rendering(spec: Preprocessing, manifests: tuple[Manifest, Manifest] | None
                       ) -> list[Rendering]:
    """``kermany_train_224``'s patient-grouped train/val split at the model's preprocessing: the
    other rendering of the training X-rays (its test folder is not read for it). None when the
    folders are not beside the npz (``manifests`` None)."""
    from converters import kermany

    if manifests is None:
        return []
    splits = kermany.load_kermany(None, spec, manifests=manifests)
    return [Rendering(kermany.TRAIN_FOLDER,
                      EvalSet("train", normalize(splits.train.images, spec), splits.train.labels),
                      EvalSet("val", normalize(splits.val.images, spec), splits.val.labels))]


def _kermany_test_files(spec: Preprocessing, manifests: tuple[Manifest, Manifest] | None
                        ) -> TestFiles | None:
    """PneumoniaMNIST's 624 test X-rays as ``kermany_test_224``'s JPEGs through the runtime's
    own decoding and preprocessing: what ``runtime triage`` of that folder computes. None when
    the folders are not beside the npz (``manifests`` None)."""
    from converters import kermany

    if manifests is None:
        return None
    test = kermany.load_test_split(manifests[1], spec)
    return TestFiles(f"{kermany.TEST_FOLDER} (manifest md5 {manifests[1].md5})",
                     EvalSet("test", normalize(test.images, spec), test.labels))


def _kermany_data(spec: Preprocessing, data: str | None, calibration_count: int,
                  seed: int) -> EvaluationData:
    """Kermany 224 JPEGs: validation = the patient-grouped split of the training folder,
    test = the test folder; calibration = the training side of the patient split. The two
    manifests are read once; ``md5`` is theirs (file lists with checksums). The training folder
    is decoded only when validation or calibration images are asked for."""
    from converters import kermany

    manifests = kermany.read_manifests(data)
    splits = functools.cache(lambda: kermany.load_kermany(None, spec, manifests=manifests))

    def calibration() -> np.ndarray:
        train = splits().train
        return normalize(train.images[calibration_index(train.labels, calibration_count, seed)],
                         spec)

    def ready(split: Split) -> EvalSet:
        return EvalSet(split.name, normalize(split.images, spec), split.labels)

    return EvaluationData(
        source=str(manifests[0].folder.parent), md5=kermany.manifests_md5(*manifests),
        make_val=lambda: ready(splits().val),
        make_test=lambda: ready(kermany.load_test_split(manifests[1], spec)),
        make_calibration=calibration, calibration_seed=seed,
        make_train=lambda: ready(splits().train))
