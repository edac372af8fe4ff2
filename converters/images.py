"""Real images for calibration, parity and clinical metrics, through the runtime's preprocessing.

PneumoniaMNIST ships 28x28 images. A model whose checkpoint declares another input size gets the
same images through :func:`runtime.preprocess.to_model_pixels` (centre crop, then the declared
interpolation to its size) and :func:`runtime.preprocess.normalize`: the contract the runtime
applies to full-size files, so every place sees the same pixels for a given checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from converters.datasets import PneumoniaMNIST
from runtime.preprocess import Preprocessing, prepare_batch

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


def evaluation_data(spec: Preprocessing, data: str | None = None, calibration_count: int = 512,
                    seed: int = 0) -> EvaluationData:
    """THE entry point for a build's images, for a checkpoint's preprocessing ``spec``.

    Today PneumoniaMNIST (``data``: its npz or folder, see converters.datasets); another dataset
    plugs in here, returning the same :class:`EvaluationData`.
    """
    from converters.datasets import load_pneumoniamnist

    source = load_pneumoniamnist(data)
    return EvaluationData(
        source=str(source.path), md5=source.md5, val=eval_set(source, "val", spec),
        test=eval_set(source, "test", spec),
        make_calibration=lambda: calibration_inputs(source, spec, calibration_count, seed),
        calibration_seed=seed)
