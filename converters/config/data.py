"""A config's data sources read into file lists and labels (no image is decoded here).

A source is class folders (one subfolder per label, every file in it an image), a CSV
(``path,label[,patient]``; other columns ignored; a multilabel image's labels joined by ``|``,
empty for none) or a MedMNIST-layout npz (``<split>_images``, ``<split>_labels``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.config.model import DataSource, Output
from converters.config.tables import ConfigError, quoted

MULTILABEL_SEPARATOR = "|"


@dataclass(frozen=True, eq=False)
class Listing:
    """The labelled images of one source: ``targets`` is (N,) label indices, or (N, L) 0/1 for
    a multilabel model; ``paths`` the image files (None for an npz, whose images are arrays)."""

    source: DataSource
    labels: tuple[str, ...]
    targets: np.ndarray
    paths: tuple[Path, ...] | None
    patients: tuple[str, ...] | None

    def __len__(self) -> int:
        return len(self.targets)

    def counts(self) -> dict[str, int]:
        """Images per label (multilabel: images carrying that label)."""
        if self.targets.ndim == 2:
            return {label: int(n) for label, n in zip(self.labels, self.targets.sum(0))}
        return {label: int((self.targets == i).sum()) for i, label in enumerate(self.labels)}


def split_labels(cell: str | None) -> list[str]:
    """The labels one CSV ``label`` cell gives a multilabel image: joined by ``|``, blanks
    dropped (an empty cell: the image carries none). The one parser of that syntax (the build's
    ``[data]`` CSV and the site calibration's labelled CSV)."""
    return [v.strip() for v in (cell or "").split(MULTILABEL_SEPARATOR) if v.strip()]


def read_source(source: DataSource, output: Output, name: str = "[data]") -> Listing:
    """The images and labels of ``source`` for a model with ``output``'s labels; a
    :class:`ConfigError` names ``name`` (e.g. ``[data] val``), the file and the fix."""
    labels = output.labels
    if source.kind == "folders":
        return _folders(source, labels, name)
    if source.kind == "csv":
        return _csv(source, labels, output.task == "multilabel", name)
    return _npz(source, labels, output.task == "multilabel", name)


def _folders(source: DataSource, labels: tuple[str, ...], name: str) -> Listing:
    folders = sorted(p.name for p in source.path.iterdir()
                     if p.is_dir() and not p.name.startswith("."))
    unknown = [f for f in folders if f not in labels]
    if unknown:
        raise ConfigError(f"{name}: {source.path} has a subfolder {unknown[0]!r} that is not a "
                          f"label ({quoted(labels)}); rename or move it")
    paths, targets = [], []
    for index, label in enumerate(labels):
        folder = source.path / label
        if not folder.is_dir():
            raise ConfigError(f"{name}: {source.path} has no folder {label!r}; make one folder "
                              f"per label ({quoted(labels)}) holding that label's images")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ConfigError(f"{name}: {folder} holds no images")
        paths += files
        targets += [index] * len(files)
    return Listing(source, labels, np.array(targets, dtype=np.int64), tuple(paths), None)


def _csv(source: DataSource, labels: tuple[str, ...], multilabel: bool, name: str) -> Listing:
    try:
        with source.path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{name}: {source.path}: unreadable CSV ({exc})") from exc
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise ConfigError(f"{name}: {source.path}: needs a header with path and label columns "
                          "(and optionally patient) and at least one row")
    targets = np.zeros((len(rows), len(labels)) if multilabel else len(rows), dtype=np.int64)
    paths = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{name}: {source.path} line {number}"
        given = split_labels(row["label"]) if multilabel else [(row["label"] or "").strip()]
        unknown = [v for v in given if v not in labels]
        if unknown:
            raise ConfigError(f"{where}: label {unknown[0]!r} is not one of {quoted(labels)}")
        if multilabel:
            targets[number - 2, [labels.index(v) for v in given]] = 1
        else:
            targets[number - 2] = labels.index(given[0])
        path = source.images / (row["path"] or "")
        if not row["path"] or not path.is_file():
            raise ConfigError(f"{where}: image {path} not found (paths are relative to "
                              f"{source.images})")
        paths.append(path)
    patients = tuple(r.get("patient") or r["path"] for r in rows) if "patient" in rows[0] \
        else None
    return Listing(source, labels, targets, tuple(paths), patients)


def _npz(source: DataSource, labels: tuple[str, ...], multilabel: bool, name: str) -> Listing:
    keys = (f"{source.split}_images", f"{source.split}_labels")
    try:
        with np.load(source.path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise ConfigError(f"{name}: {source.path} has no {missing[0]}; it holds "
                                  f"{', '.join(sorted(npz.files))}")
            count, targets = len(npz[keys[0]]), np.asarray(npz[keys[1]])
    except ConfigError:
        raise
    except Exception as exc:  # zip/npy errors
        raise ConfigError(f"{name}: {source.path}: not a readable npz ({exc})") from exc
    if multilabel:
        if targets.shape != (count, len(labels)) or not np.isin(targets, (0, 1)).all():
            raise ConfigError(f"{name}: {source.path} {keys[1]} should be ({count}, "
                              f"{len(labels)}) zeros and ones, one column per label")
    else:
        targets = targets.reshape(-1)
        if len(targets) != count or not np.isin(targets, np.arange(len(labels))).all():
            raise ConfigError(f"{name}: {source.path} {keys[1]} should hold {count} label "
                              f"indices 0..{len(labels) - 1} ({quoted(labels)} in that order)")
    return Listing(source, labels, targets.astype(np.int64), None, None)
