"""Small labelled subsets of the real folders as the CSVs a model config's [data] reads."""

from __future__ import annotations

import csv
import random
from pathlib import Path


def manifest_rows(folder: Path) -> list[dict]:
    """The rows of a data folder's manifest.csv (path, label, ...)."""
    with (folder / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def subset(rows: list[dict], per_label: int, seed: int) -> list[dict]:
    """``per_label`` rows of NORMAL and of PNEUMONIA, drawn with ``seed``."""
    rng = random.Random(seed)
    return [r for label in ("NORMAL", "PNEUMONIA")
            for r in rng.sample([r for r in rows if r["label"] == label], per_label)]


def write_csv(path: Path, rows: list[dict]) -> Path:
    """``rows`` as a path,label CSV at ``path``."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([r["path"], r["label"]] for r in rows)
    return path
