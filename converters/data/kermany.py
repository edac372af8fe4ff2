"""The Kermany chest X-ray folders (224x224 squashed JPEGs) and patient-grouped splits.

``kermany_train_224/`` and ``kermany_test_224/`` are labelled folders with a manifest
(:mod:`converters.data.folder`; path, label, patient, finding, md5). The training folder is split
into train/validation BY PATIENT (no child on both sides), stratified by class, with a fixed
seed; :func:`patient_folds` gives the patient-grouped k folds for cross-validation.

Lookup follows the PneumoniaMNIST convention: an explicit ``--data`` folder, else
``$CXR_DATA_DIR``; each may be the folder that holds ``kermany_train_224/`` or that folder itself.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.data.folder import MANIFEST, Manifest, folder_images, read_folder_manifest
from converters.data.labelled import DATA_ENV_VAR, DatasetError, LabelledImages
from runtime.contract.manifest import Preprocessing

TRAIN_FOLDER = "kermany_train_224"
TEST_FOLDER = "kermany_test_224"
DATASET_NAME = "kermany"
VAL_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True, eq=False)
class KermanySplits:
    """train / val (patient-grouped split of the training folder) / test, at one model size."""

    train: LabelledImages
    val: LabelledImages
    test: LabelledImages
    train_patients: frozenset[str]  # of the whole split (a subsample keeps them)
    val_patients: frozenset[str]
    manifest_md5: dict[str, str]

    def split(self, name: str) -> LabelledImages:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def candidate_roots(data: str | os.PathLike | None = None) -> list[Path]:
    """Folders that may hold ``kermany_train_224/``, in lookup order."""
    if data is not None:
        base = Path(data)
    elif os.environ.get(DATA_ENV_VAR):
        base = Path(os.environ[DATA_ENV_VAR])
    else:
        base = Path(__file__).resolve().parents[3] / "shared" / "data"
    roots = [base]
    if base.name in (TRAIN_FOLDER, TEST_FOLDER):
        roots.insert(0, base.parent)
    return roots


def find_root(data: str | os.PathLike | None = None) -> Path:
    """The folder holding both Kermany folders, or a DatasetError naming where it looked."""
    roots = candidate_roots(data)
    for root in roots:
        if (root / TRAIN_FOLDER / MANIFEST).is_file() and (root / TEST_FOLDER / MANIFEST).is_file():
            return root
    tried = "\n  ".join(f"{r / TRAIN_FOLDER / MANIFEST} and {r / TEST_FOLDER / MANIFEST}"
                        for r in roots)
    raise DatasetError(
        f"Kermany chest X-ray folders not found. Looked for:\n  {tried}\n"
        f"Pass --data FOLDER (the folder holding {TRAIN_FOLDER}/ and {TEST_FOLDER}/) or set "
        f"${DATA_ENV_VAR} to it.")


def patient_from_name(path: str) -> str:
    """The patient a Kermany file name carries (``person12_virus_3`` -> ``person12``,
    ``IM-0115-0001`` -> ``IM-0115``, ``NORMAL2-IM-0427-0001`` -> ``NORMAL2-IM-0427``)."""
    stem = Path(path).stem
    if stem.startswith("person"):
        return stem.split("_")[0]
    match = re.match(r"(?:NORMAL2-)?IM-\d+", stem)
    return match.group(0) if match else stem


def read_manifest(path: Path) -> Manifest:
    """A Kermany folder's manifest; without a ``patient`` column (the test folder's), the
    patient is read from the file name."""
    return read_folder_manifest(path, patient_of=patient_from_name)


def patient_labels(manifest: Manifest) -> dict[str, int]:
    """Each patient's label; a patient whose images disagree is a data error."""
    out: dict[str, int] = {}
    for patient, label in zip(manifest.patients, manifest.labels.tolist()):
        if out.setdefault(patient, label) != label:
            raise DatasetError(f"{manifest.folder / MANIFEST}: patient {patient} has images of "
                               "both classes; cannot stratify by patient")
    return out


def _shuffled_patients_by_class(manifest: Manifest, seed: int) -> list[list[str]]:
    labels = patient_labels(manifest)
    rng = np.random.default_rng(seed)
    groups = []
    for label in (0, 1):
        patients = sorted(p for p, y in labels.items() if y == label)
        groups.append([patients[i] for i in rng.permutation(len(patients))])
    return groups


def patient_split(manifest: Manifest, val_fraction: float = VAL_FRACTION,
                  seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train_index, val_index) of images: ``val_fraction`` of each class's PATIENTS go to val."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    val_patients: set[str] = set()
    for patients in _shuffled_patients_by_class(manifest, seed):
        val_patients.update(patients[:round(len(patients) * val_fraction)])
    in_val = np.array([p in val_patients for p in manifest.patients])
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def patient_folds(manifest: Manifest, folds: int = 5, seed: int = SPLIT_SEED
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train_index, val_index) pairs; each class's patients dealt round-robin."""
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    fold_of: dict[str, int] = {}
    for patients in _shuffled_patients_by_class(manifest, seed):
        fold_of.update({p: i % folds for i, p in enumerate(patients)})
    fold = np.array([fold_of[p] for p in manifest.patients])
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(folds)]


@dataclass(frozen=True, eq=False)
class KermanyFolders:
    """The two folders' manifests (each read once); images are decoded on first use."""

    train: Manifest
    test: Manifest
    train_name = TRAIN_FOLDER

    @property
    def folder(self) -> Path:
        return self.train.folder.parent

    @property
    def location(self) -> str:
        return str(self.folder)

    @property
    def md5(self) -> str:
        """md5 of the two manifest files one after the other: the file lists with checksums."""
        return hashlib.md5(self.train.raw + self.test.raw).hexdigest()

    def patient_sides(self, spec: Preprocessing, val_fraction: float = VAL_FRACTION,
                      seed: int = SPLIT_SEED, fold: tuple[int, int] | None = None
                      ) -> tuple[LabelledImages, LabelledImages]:
        """The training folder's patient-grouped (train, val) split (or fold ``(k, folds)``)."""
        if fold is None:
            index = patient_split(self.train, val_fraction, seed)
        else:
            index = patient_folds(self.train, fold[1], seed)[fold[0]]
        whole = folder_images(self.train, spec)
        return tuple(whole.take(i, f"{whole.source}, {side} side of the patient-grouped split")
                     for i, side in zip(index, ("train", "val")))

    def split_at(self, which: str, spec: Preprocessing) -> LabelledImages:
        """``test``: the whole test folder (no training image decoded); ``train``/``val``: the
        sides of the patient-grouped split."""
        if which == "test":
            return folder_images(self.test, spec)
        return self.patient_sides(spec)[("train", "val").index(which)]


def open_kermany(data: str | os.PathLike | None = None) -> KermanyFolders:
    """The training and test folders' manifests (see :func:`find_root`)."""
    root = find_root(data)
    return KermanyFolders(read_manifest(root / TRAIN_FOLDER), read_manifest(root / TEST_FOLDER))


def beside(place: Path) -> KermanyFolders | None:
    """The Kermany folders when they sit in ``place`` (e.g. beside the PneumoniaMNIST npz: the
    shared data), else None. PneumoniaMNIST's X-rays are Kermany's, centre-cropped and resized
    by MedMNIST; these folders hold the same X-rays squashed to 224 px, which the runtime crops
    and resizes differently. Folders that are there but cannot be read (a manifest damaged or
    unreadable, one of the two missing) are a DatasetError naming them: the build must not go on
    quietly without them (its scope guard would be fitted without the 224 px rendering)."""
    present = [root / folder / MANIFEST for root in candidate_roots(place)
               for folder in (TRAIN_FOLDER, TEST_FOLDER) if (root / folder).exists()]
    if not present:
        return None
    try:
        return open_kermany(place)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"the Kermany folders in {place} cannot be read ({exc}); fix them (or "
                           "move them away to build without the 224 px rendering)") from exc


def load_kermany(data: str | os.PathLike | None, spec: Preprocessing,
                 val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED,
                 fold: tuple[int, int] | None = None) -> KermanySplits:
    """The patient-grouped train/val split (or fold ``(k, folds)``) and the test folder."""
    folders = open_kermany(data)
    train, val = folders.patient_sides(spec, val_fraction, seed, fold)
    return KermanySplits(train=train, val=val, test=folders.split_at("test", spec),
                         train_patients=frozenset(train.groups), val_patients=frozenset(val.groups),
                         manifest_md5={TRAIN_FOLDER: folders.train.md5,
                                       TEST_FOLDER: folders.test.md5})
