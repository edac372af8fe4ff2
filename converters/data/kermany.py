"""The Kermany chest X-ray folders (224x224 squashed JPEGs) and patient-grouped splits.

``kermany_train_224/`` and ``kermany_test_224/`` are labelled folders with a manifest
(:mod:`converters.data.folder`; path, label, patient, finding, md5). The training folder is split
into train/validation BY PATIENT (no child on both sides), stratified by normal vs. pneumonia,
with a fixed seed; :func:`patient_folds` gives the patient-grouped k folds for cross-validation.

A :class:`Labelling` says what an image's class is: :data:`PNEUMONIA` (the ``label`` column:
NORMAL / PNEUMONIA, the reference models) or :data:`PNEUMONIA_TYPE` (NORMAL / BACTERIAL / VIRAL:
the training folder's ``finding`` column; the test folder has none, so its file names, read by
:func:`finding_from_name`). Every labelling gets the same patient split: the split is stratified
by class 0 (NORMAL) against the rest.

Lookup follows the PneumoniaMNIST convention: an explicit ``--data`` folder, else
``$CXR_DATA_DIR``; each may be the folder that holds ``kermany_train_224/`` or that folder itself.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from converters.data.folder import MANIFEST, Manifest, folder_images, read_folder_manifest
from converters.data.labelled import CLASSES, DATA_ENV_VAR, DatasetError, LabelledImages
from runtime.contract.manifest import Preprocessing

TRAIN_FOLDER = "kermany_train_224"
TEST_FOLDER = "kermany_test_224"
DATASET_NAME = "kermany"
VAL_FRACTION = 0.2
SPLIT_SEED = 0
#: the pneumonia-type classes, and the finding (manifest column or file name) of each
TYPE_CLASSES = ("NORMAL", "BACTERIAL", "VIRAL")
FINDING_CLASS = {"normal": "NORMAL", "bacteria": "BACTERIAL", "virus": "VIRAL"}


@dataclass(frozen=True)
class Labelling:
    """What a Kermany image's class is: the class names (class 0 is NORMAL) and the class of
    one manifest row (None: its ``label`` column)."""

    name: str
    classes: tuple[str, ...]
    label_of: Callable[[dict[str, str]], str] | None = None


def finding_from_name(path: str) -> str:
    """The finding a Kermany file's path says: ``PNEUMONIA/person100_bacteria_475.jpeg`` ->
    ``bacteria``, ``PNEUMONIA/person1_virus_6.jpeg`` -> ``virus``, any file in ``NORMAL/`` ->
    ``normal``; a DatasetError for a path that says neither (or both)."""
    rel = PurePosixPath(path)
    match = re.match(r"person\d+_(bacteria|virus)_", rel.name)
    folder = rel.parts[0] if len(rel.parts) > 1 else ""
    if folder == "NORMAL" and match is None:
        return "normal"
    if folder != "NORMAL" and match is not None:
        return match.group(1)
    raise DatasetError(f"{path}: the file name does not say normal (a file in NORMAL/), "
                       "bacteria (personN_bacteria_M) or virus (personN_virus_M); add a "
                       "finding column (normal, bacteria or virus) to the manifest")


def type_label(row: dict[str, str]) -> str:
    """NORMAL, BACTERIAL or VIRAL for one manifest row: its ``finding`` column, else the finding
    its file name says (:func:`finding_from_name`); it must agree with the row's ``label``."""
    finding = (row.get("finding") or "").strip() or finding_from_name(row["path"])
    if finding not in FINDING_CLASS:
        raise DatasetError(f"{row['path']}: finding {finding!r} is not one of "
                           f"{', '.join(FINDING_CLASS)}")
    if (finding == "normal") != (row["label"] == "NORMAL"):
        raise DatasetError(f"{row['path']}: finding {finding!r} contradicts label "
                           f"{row['label']!r}; fix one of them in the manifest")
    return FINDING_CLASS[finding]


#: normal / pneumonia (the reference models)
PNEUMONIA = Labelling("pneumonia", CLASSES)
#: normal / bacterial / viral pneumonia (the pneumonia-type model)
PNEUMONIA_TYPE = Labelling("pneumonia_type", TYPE_CLASSES, type_label)
LABELLINGS = {labelling.name: labelling for labelling in (PNEUMONIA, PNEUMONIA_TYPE)}


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


def read_manifest(path: Path, labelling: Labelling = PNEUMONIA) -> Manifest:
    """A Kermany folder's manifest with ``labelling``'s classes; without a ``patient`` column
    (the test folder's), the patient is read from the file name."""
    return read_folder_manifest(path, labelling.classes, patient_from_name, labelling.label_of)


def patient_labels(manifest: Manifest) -> dict[str, int]:
    """Each patient's stratum: 0 (class 0, NORMAL) or 1 (any other class), so that every
    labelling stratifies alike; a patient with images of both is a data error."""
    out: dict[str, int] = {}
    for patient, label in zip(manifest.patients, manifest.labels.tolist()):
        if out.setdefault(patient, min(label, 1)) != min(label, 1):
            raise DatasetError(f"{manifest.folder / MANIFEST}: patient {patient} has normal "
                               "and abnormal images; cannot stratify by patient")
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


def open_kermany(data: str | os.PathLike | None = None, labelling: Labelling = PNEUMONIA
                 ) -> KermanyFolders:
    """The training and test folders' manifests (see :func:`find_root`), labelled by
    ``labelling``."""
    root = find_root(data)
    return KermanyFolders(read_manifest(root / TRAIN_FOLDER, labelling),
                          read_manifest(root / TEST_FOLDER, labelling))


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
                 fold: tuple[int, int] | None = None, labelling: Labelling = PNEUMONIA
                 ) -> KermanySplits:
    """The patient-grouped train/val split (or fold ``(k, folds)``) and the test folder, with
    ``labelling``'s classes (the split is the same for every labelling)."""
    folders = open_kermany(data, labelling)
    train, val = folders.patient_sides(spec, val_fraction, seed, fold)
    return KermanySplits(train=train, val=val, test=folders.split_at("test", spec),
                         train_patients=frozenset(train.groups), val_patients=frozenset(val.groups),
                         manifest_md5={TRAIN_FOLDER: folders.train.md5,
                                       TEST_FOLDER: folders.test.md5})


def labelling_of(classes: tuple[str, ...] | list[str]) -> Labelling:
    """The labelling whose classes a checkpoint declares, or a DatasetError naming them."""
    for labelling in LABELLINGS.values():
        if tuple(classes) == labelling.classes:
            return labelling
    raise DatasetError(f"no Kermany labelling has the classes {list(classes)}; known: "
                       + "; ".join(f"{n} {list(lab.classes)}" for n, lab in LABELLINGS.items()))


def write_split_csvs(folders: KermanyFolders, out_dir: Path, val_fraction: float = VAL_FRACTION,
                     seed: int = SPLIT_SEED) -> list[Path]:
    """``train.csv`` and ``val.csv`` (the patient split, paths relative to the training folder)
    and ``test.csv`` (relative to the test folder), each ``path,label,patient`` with the
    folders' labelling: what a model.toml's ``[data]`` reads (docs/model-config.md)."""
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    sides = zip(("train", "val", "test"), (folders.train, folders.train, folders.test),
                (*patient_split(folders.train, val_fraction, seed), np.arange(len(folders.test))))
    written = []
    for name, manifest, index in sides:
        path = out_dir / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(("path", "label", "patient"))
            writer.writerows((manifest.paths[i], manifest.classes[manifest.labels[i]],
                              manifest.patients[i]) for i in index.tolist())
        written.append(path)
    return written
