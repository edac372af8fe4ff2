"""Real images for calibration, parity and clinical metrics, through the runtime's preprocessing.

:func:`evaluation_data` picks the images from the dataset the checkpoint declares
(PneumoniaMNIST or the Kermany 224 JPEGs, see :mod:`converters.kermany`).

PneumoniaMNIST ships 28x28 images. A model whose checkpoint declares another input size gets the
same images through :func:`runtime.preprocess.to_model_pixels` (centre crop, then the declared
interpolation to its size) and :func:`runtime.preprocess.normalize`: the contract the runtime
applies to full-size files, so every place sees the same pixels for a given checkpoint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from converters.datasets import DatasetError, PneumoniaMNIST
from runtime.preprocess import Preprocessing, prepare_batch

if TYPE_CHECKING:
    from converters.checkpoint import ModelSpec

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
    if len(train) < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"the training split has {len(train)} images; INT8 calibration needs "
                         f"at least {MIN_CALIBRATION_IMAGES}")
    count = max(MIN_CALIBRATION_IMAGES, min(count, len(train)))
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for label in (0, 1):
        members = np.flatnonzero(train.labels == label)
        share = round(count * len(members) / len(train))
        picked.append(rng.choice(members, size=min(share, len(members)), replace=False))
    index = np.sort(np.concatenate(picked))
    return prepare_batch(train.images[index], spec)


@dataclass
class EvaluationData:
    """The real images a build needs for one checkpoint: calibration (training split, made on
    first use), validation (parity, threshold, reference set) and test (clinical metrics)."""

    source: str  # where the images came from (recorded in the manifest)
    md5: str
    val: EvalSet
    test: EvalSet
    make_calibration: "Callable[[], np.ndarray]"
    calibration_seed: int = 0
    _calibration: np.ndarray | None = None

    @property
    def calibration(self) -> np.ndarray:
        if self._calibration is None:
            self._calibration = self.make_calibration()
        return self._calibration


def evaluation_data(spec: "ModelSpec", data: str | None = None, calibration_count: int = 512,
                    seed: int = 0) -> EvaluationData:
    """THE entry point for a build's images, for a checkpoint's :class:`ModelSpec` ``spec``.

    Dispatches on ``spec.dataset``, the data the checkpoint was trained on: ``pneumoniamnist``
    (``data``: its npz or folder, see converters.datasets) or ``kermany`` (``data``: the folder
    holding ``kermany_train_224/`` and ``kermany_test_224/``, see converters.kermany). Every
    dataset returns the same :class:`EvaluationData`, at the checkpoint's preprocessing.
    """
    if spec.dataset == "pneumoniamnist":
        return _pneumoniamnist_data(spec.preprocessing, data, calibration_count, seed)
    if spec.dataset == "kermany":
        return _kermany_data(spec, data, calibration_count, seed)
    raise DatasetError(f"checkpoint {spec.name!r} declares dataset {spec.dataset!r}; the build "
                       f"has evaluation images for {', '.join(DATASETS)} only. Re-save the "
                       f"checkpoint with one of those in its 'dataset' metadata.")


DATASETS = ("pneumoniamnist", "kermany")


def _pneumoniamnist_data(spec: Preprocessing, data: str | None, calibration_count: int,
                         seed: int) -> EvaluationData:
    from converters.datasets import load_pneumoniamnist

    source = load_pneumoniamnist(data)
    return EvaluationData(
        source=str(source.path), md5=source.md5, val=eval_set(source, "val", spec),
        test=eval_set(source, "test", spec),
        make_calibration=lambda: calibration_inputs(source, spec, calibration_count, seed),
        calibration_seed=seed)


def _kermany_data(spec: "ModelSpec", data: str | None, calibration_count: int,
                  seed: int) -> EvaluationData:
    """Kermany 224 JPEGs: validation = the patient-grouped split of the training folder,
    test = the test folder; ``md5`` is that of the two manifests (file lists with checksums)."""
    from converters import kermany

    root = kermany.find_root(data)
    calibration, val, test = kermany.kermany_build_inputs(spec, root, calibration_count, seed)
    manifests = b"".join((root / folder / kermany.MANIFEST).read_bytes()
                         for folder in (kermany.TRAIN_FOLDER, kermany.TEST_FOLDER))
    return EvaluationData(source=str(root), md5=hashlib.md5(manifests).hexdigest(), val=val,
                          test=test, make_calibration=lambda: calibration, calibration_seed=seed)
