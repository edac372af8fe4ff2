"""A folder of labelled image files with a ``manifest.csv``: the loader behind the Kermany folders.

``manifest.csv`` has ``path`` (relative to the folder) and ``label`` (a class name) columns and,
optionally, ``patient``. Images go through :mod:`runtime.imaging.decode` and
:func:`runtime.preprocess.cpu.to_model_pixels`, exactly what the runtime does to a file, and are
decoded once per process (kept in memory).
"""

from __future__ import annotations

import csv
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.data.labelled import CLASSES, DatasetError, LabelledImages
from runtime.contract.manifest import Preprocessing
from runtime.imaging.decode import decode_file
from runtime.preprocess.cpu import to_model_pixels

MANIFEST = "manifest.csv"


@dataclass(frozen=True, eq=False)
class Manifest:
    """One folder's manifest: relative paths, labels (index into ``classes``) and patient ids."""

    folder: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    patients: tuple[str, ...] | None
    raw: bytes = field(repr=False)  # manifest.csv as read: the file list with every checksum
    classes: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def md5(self) -> str:
        """md5 of manifest.csv: identifies the file list and every file's checksum."""
        return hashlib.md5(self.raw).hexdigest()


def read_folder_manifest(folder: Path, classes: tuple[str, ...] = CLASSES,
                         patient_of: Callable[[str], str] | None = None,
                         label_of: Callable[[dict[str, str]], str] | None = None) -> Manifest:
    """Parse ``folder/manifest.csv``; every listed file must exist. Without a ``patient`` value,
    the patient is ``patient_of(path)`` (None: the manifest then has no patients). Each row's
    class is ``label_of(row)`` (None: its ``label`` column)."""
    path = folder / MANIFEST
    try:
        raw = path.read_bytes()
        rows = list(csv.DictReader(raw.decode("utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: unreadable manifest ({exc})") from exc
    needed = {"path", "label"}
    if not rows or not needed <= set(rows[0]):
        raise DatasetError(f"{path}: expected columns {sorted(needed)} and at least one row")
    try:
        names = [label_of(r) if label_of else r["label"] for r in rows]
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    bad = [name for name in names if name not in classes]
    if bad:
        raise DatasetError(f"{path}: unknown label {bad[0]!r}; expected one of {classes}")
    missing = [r["path"] for r in rows if not (folder / r["path"]).is_file()]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} listed file(s) missing, e.g. "
                           f"{folder / missing[0]}")
    labels = np.array([classes.index(name) for name in names], dtype=np.int64)
    patients = None
    if "patient" in rows[0] or patient_of is not None:
        of = patient_of or (lambda rel: rel)  # a blank patient: the image is its own group
        patients = tuple(r.get("patient") or of(r["path"]) for r in rows)
    return Manifest(folder, tuple(r["path"] for r in rows), labels, patients, raw, classes)


@functools.lru_cache(maxsize=4)
def _decoded(paths: tuple[str, ...], spec: Preprocessing) -> np.ndarray:
    out = np.empty((len(paths), *spec.shape), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = to_model_pixels(decode_file(Path(path)).pixels, spec)
    out.setflags(write=False)
    return out


def decode_images(paths: tuple[Path, ...], spec: Preprocessing) -> np.ndarray:
    """(N, height, width) uint8 model pixels of ``paths``, decoded as ``runtime triage``
    decodes (once per process: the last few lists are kept; the pixels depend on the geometry
    only, so scale, mean, std and channels share one entry)."""
    geometry = Preprocessing(size=spec.size, crop=spec.crop, interpolation=spec.interpolation,
                             crop_fraction=spec.crop_fraction)
    return _decoded(tuple(str(p) for p in paths), geometry)


def load_images(manifest: Manifest, spec: Preprocessing) -> np.ndarray:
    """(N, height, width) uint8 model pixels of every manifest file (decoded once per process)."""
    return decode_images(tuple(manifest.folder / rel for rel in manifest.paths), spec)


def folder_images(manifest: Manifest, spec: Preprocessing) -> LabelledImages:
    """Every file of the manifest at ``spec``'s model pixels; the source names the folder and
    its manifest's md5."""
    return LabelledImages(load_images(manifest, spec), manifest.labels,
                          f"{manifest.folder.name} (manifest md5 {manifest.md5})",
                          manifest.classes, manifest.patients, spec)
