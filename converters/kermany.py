"""The Kermany chest X-ray folders (224x224 squashed JPEGs) and patient-grouped splits.

``kermany_train_224/`` and ``kermany_test_224/`` each hold ``NORMAL/`` and ``PNEUMONIA/`` and a
``manifest.csv`` (path, label, patient, finding, md5). The training folder is split into
train/validation BY PATIENT (no child on both sides), stratified by class, with a fixed seed;
:func:`patient_folds` gives the patient-grouped k folds for cross-validation.

Lookup follows the PneumoniaMNIST convention: an explicit ``--data`` folder, else
``$CXR_DATA_DIR``; each may be the folder that holds ``kermany_train_224/`` or that folder itself.
Images go through :mod:`runtime.decode` and :func:`runtime.preprocess.to_model_pixels`, exactly
what the runtime does to a file, and are decoded once per process (kept in memory).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.datasets import DATA_ENV_VAR, DatasetError, Split
from runtime.decode import decode_file
from runtime.preprocess import Preprocessing, to_model_pixels

TRAIN_FOLDER = "kermany_train_224"
TEST_FOLDER = "kermany_test_224"
MANIFEST = "manifest.csv"
CLASSES = ("NORMAL", "PNEUMONIA")
DATASET_NAME = "kermany"
VAL_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class Manifest:
    """One folder's manifest: relative paths, labels (1 = pneumonia) and patient ids."""

    folder: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    patients: tuple[str, ...]
    raw: bytes = field(repr=False)  # manifest.csv as read: the file list with every checksum

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def md5(self) -> str:
        """md5 of manifest.csv: identifies the file list and every file's checksum."""
        return hashlib.md5(self.raw).hexdigest()


@dataclass(frozen=True)
class KermanySplits:
    """train / val (patient-grouped split of the training folder) / test, at one model size."""

    root: Path
    train: Split
    val: Split
    test: Split
    train_patients: frozenset[str]
    val_patients: frozenset[str]
    manifest_md5: dict[str, str]
    size: int

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def candidate_roots(data: str | os.PathLike | None = None) -> list[Path]:
    """Folders that may hold ``kermany_train_224/``, in lookup order."""
    if data is not None:
        base = Path(data)
    elif os.environ.get(DATA_ENV_VAR):
        base = Path(os.environ[DATA_ENV_VAR])
    else:
        base = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
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


def read_manifest(folder: Path) -> Manifest:
    """Parse ``folder/manifest.csv``; every listed file must exist. Without a ``patient``
    column (the test folder's manifest), the patient is read from the file name."""
    path = folder / MANIFEST
    try:
        raw = path.read_bytes()
        rows = list(csv.DictReader(raw.decode("utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: unreadable manifest ({exc})") from exc
    needed = {"path", "label"}
    if not rows or not needed <= set(rows[0]):
        raise DatasetError(f"{path}: expected columns {sorted(needed)} and at least one row")
    bad = [r["label"] for r in rows if r["label"] not in CLASSES]
    if bad:
        raise DatasetError(f"{path}: unknown label {bad[0]!r}; expected one of {CLASSES}")
    missing = [r["path"] for r in rows if not (folder / r["path"]).is_file()]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} listed file(s) missing, e.g. "
                           f"{folder / missing[0]}")
    labels = np.array([CLASSES.index(r["label"]) for r in rows], dtype=np.int64)
    return Manifest(folder, tuple(r["path"] for r in rows), labels,
                    tuple(r.get("patient") or patient_from_name(r["path"]) for r in rows), raw)


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


@functools.lru_cache(maxsize=4)
def _decoded(folder: str, paths: tuple[str, ...], size: int, crop: str, interpolation: str
             ) -> np.ndarray:
    spec = Preprocessing(size=size, crop=crop, interpolation=interpolation)
    out = np.empty((len(paths), size, size), dtype=np.uint8)
    for i, rel in enumerate(paths):
        out[i] = to_model_pixels(decode_file(Path(folder) / rel).pixels, spec)
    out.setflags(write=False)
    return out


def load_images(manifest: Manifest, spec: Preprocessing) -> np.ndarray:
    """(N, size, size) uint8 model pixels of every manifest file (decoded once per process)."""
    return _decoded(str(manifest.folder), manifest.paths, spec.size, spec.crop, spec.interpolation)


def read_manifests(data: str | os.PathLike | None = None) -> tuple[Manifest, Manifest]:
    """The training and test folders' manifests, each read once (see :func:`find_root`)."""
    root = find_root(data)
    return read_manifest(root / TRAIN_FOLDER), read_manifest(root / TEST_FOLDER)


def manifests_md5(train: Manifest, test: Manifest) -> str:
    """md5 of the two manifest files one after the other: names the file lists with checksums."""
    return hashlib.md5(train.raw + test.raw).hexdigest()


def load_test_split(test: Manifest, spec: Preprocessing) -> Split:
    """The whole test folder at the model size (no training image decoded)."""
    return Split("test", load_images(test, spec), test.labels)


def load_kermany(data: str | os.PathLike | None, spec: Preprocessing,
                 val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED,
                 fold: tuple[int, int] | None = None,
                 manifests: tuple[Manifest, Manifest] | None = None) -> KermanySplits:
    """The patient-grouped train/val split (or fold ``(k, folds)``) and the test folder.

    ``manifests``: the (train, test) manifests when the caller has read them already
    (:func:`read_manifests`); ``data`` is then not looked up again.
    """
    train_m, test_m = manifests if manifests is not None else read_manifests(data)
    if fold is None:
        train_idx, val_idx = patient_split(train_m, val_fraction, seed)
    else:
        train_idx, val_idx = patient_folds(train_m, fold[1], seed)[fold[0]]
    images = load_images(train_m, spec)
    return KermanySplits(
        root=train_m.folder.parent,
        train=Split("train", images[train_idx], train_m.labels[train_idx]),
        val=Split("val", images[val_idx], train_m.labels[val_idx]),
        test=load_test_split(test_m, spec),
        train_patients=frozenset(train_m.patients[i] for i in train_idx),
        val_patients=frozenset(train_m.patients[i] for i in val_idx),
        manifest_md5={TRAIN_FOLDER: train_m.md5, TEST_FOLDER: test_m.md5},
        size=spec.size)
