"""One labelled image set: the one type every loader returns and every build step reads.

A :class:`LabelledImages` holds grayscale images (N, H, W) uint8, their labels (index into the
class names), optionally the patient of each image, and in plain words where they came from.
:meth:`LabelledImages.at` brings them to a model's pixels through the runtime's own contract
(:func:`runtime.preprocess.cpu.to_model_pixels`: centre crop, then the declared interpolation), so
every place sees the same pixels for a given checkpoint; :attr:`LabelledImages.inputs` is then
the model input. A loader (:class:`Splits`) opens one dataset's files and gives its ``train``,
``val`` and ``test`` sets at a model's preprocessing.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.contract.manifest import Preprocessing
from runtime.preprocess.cpu import is_model_pixels, normalize, to_model_pixels

#: the folder that holds the data files, when no ``--data`` is given (every loader honours it)
DATA_ENV_VAR = "CXR_DATA_DIR"
#: label 0 and label 1 of both reference datasets
CLASSES = ("NORMAL", "PNEUMONIA")


class DatasetError(RuntimeError):
    """Labelled images that are missing, unreadable or not shaped as their loader expects."""


@dataclass(frozen=True, eq=False)
class LabelledImages:
    """Images (N, H, W) uint8, labels (N,) int64 class indices into ``classes`` (the reference
    datasets: 1 = ``classes[1]``), or (N, len(classes)) 0/1 for a multilabel model (one column
    per label); optionally each image's patient (``groups``), where they came from
    (``source``, plain words), and the model preprocessing whose pixels they are (None: as
    stored). :class:`converters.findings.Findings` scores each finding against the rest."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    classes: tuple[str, ...] = CLASSES
    groups: tuple[str, ...] | None = None
    preprocessing: Preprocessing | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray, source: str | None = None) -> LabelledImages:
        """The images at ``index``, with their labels and patients (``source``: its words)."""
        groups = None if self.groups is None else tuple(self.groups[i] for i in index)
        return dataclasses.replace(self, images=self.images[index], labels=self.labels[index],
                                   groups=groups, source=source or self.source)

    def at(self, spec: Preprocessing) -> LabelledImages:
        """The same images as ``spec``'s model pixels (cropped and resized unless they already
        are: :func:`runtime.preprocess.cpu.is_model_pixels`)."""
        if self.preprocessing is not None:
            if self.preprocessing != spec:
                raise ValueError(f"{self.source}: already at {self.preprocessing}, not {spec}")
            return self
        images = self.images
        if not is_model_pixels(images.shape, spec):
            images = np.stack([to_model_pixels(image, spec) for image in images])
        return dataclasses.replace(self, images=images, preprocessing=spec)

    @property
    def strata(self) -> np.ndarray:
        """(N,) int64 the groups a stratified draw keeps in proportion: the class index; for
        multilabel labels, 1 + the first label an image carries (0: none)."""
        if self.labels.ndim == 1:
            return self.labels
        carries = self.labels.astype(bool)
        return np.where(carries.any(axis=1), carries.argmax(axis=1) + 1, 0).astype(np.int64)

    @functools.cached_property
    def inputs(self) -> np.ndarray:
        """(N, C, S, S) float32 model input (made once)."""
        if self.preprocessing is None:
            raise ValueError(f"{self.source}: not at a model's pixels (use .at(spec) first)")
        return normalize(self.images, self.preprocessing)


class Splits(Protocol):
    """One dataset's labelled images found on disk: what a loader opens."""

    location: str  # the file or folder they were read from (the manifest's provenance.data)
    md5: str  # of the file(s) that define the images and labels
    folder: Path  # the folder it lives in: other renderings of the same X-rays may sit beside it
    train_name: str  # the file or folder its train and val splits come from

    def split_at(self, which: str, spec: Preprocessing) -> LabelledImages:
        """Split ``which`` (``train``, ``val`` or ``test``) at ``spec``'s model pixels."""
        ...


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted indices of ``count`` items drawn without replacement, each class (0, 1 and any
    other index ``labels`` holds, in order) in proportion to its share of ``labels`` (at least
    one of each class present), fixed ``seed``.

    THE stratified draw of the kit: INT8 calibration sets (:mod:`converters.data.sets`) and
    tiny-budget training subsets (:func:`converters.clinical.subsample`) both use it, so a seed
    picks the same images everywhere.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for label in sorted({0, 1} | set(np.unique(labels).tolist())):
        members = np.flatnonzero(labels == label)
        share = max(1, round(count * len(members) / len(labels)))
        picked.append(rng.choice(members, size=min(share, len(members)), replace=False))
    return np.sort(np.concatenate(picked))
