"""PneumoniaMNIST (MedMNIST v2, 28x28): the tiny model's labelled images.

The npz holds ``{train,val,test}_images`` (N, 28, 28) uint8 and ``*_labels`` (N, 1);
label 1 is pneumonia. Lookup order: an explicit path, then ``$CXR_DATA_DIR``, then the
MedMNIST default location (``~/.medmnist``). Nothing is downloaded unless asked.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.data.labelled import DATA_ENV_VAR, DatasetError, LabelledImages
from runtime.bundle.hashing import md5_file
from runtime.contract.manifest import Preprocessing

log = logging.getLogger(__name__)

FILENAME = "pneumoniamnist.npz"
MEDMNIST_DEFAULT_DIR = Path.home() / ".medmnist"
OFFICIAL_URL = "https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1"
OFFICIAL_MD5 = "28209eda62fecd6e6a2d98b1501bb15f"
# The faithful rebuild shipped in ../shared/data (same images and splits, train order differs).
KNOWN_REBUILD_MD5 = {
    "b591286d75c096548ca78ab709b385da": "shared/data rebuild (train order differs)"}
SPLITS = ("train", "val", "test")
IMAGE_SHAPE = (28, 28)


@dataclass(frozen=True, eq=False)
class PneumoniaMNIST:
    """The three splits (28x28, as stored) plus where they came from."""

    path: Path
    md5: str
    train: LabelledImages
    val: LabelledImages
    test: LabelledImages

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def train_name(self) -> str:
        return self.path.name

    def split(self, name: str) -> LabelledImages:
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def split_at(self, which: str, spec: Preprocessing) -> LabelledImages:
        """Split ``which`` at ``spec``'s model pixels (the runtime's crop and resize)."""
        return self.split(which).at(spec)


def candidate_paths(data: str | os.PathLike | None = None) -> list[Path]:
    """Where the npz is looked for, in order (a directory means ``DIR/pneumoniamnist.npz``)."""
    raw: list[Path] = []
    if data is not None:
        raw.append(Path(data))
    elif os.environ.get(DATA_ENV_VAR):
        raw.append(Path(os.environ[DATA_ENV_VAR]))
    raw.append(MEDMNIST_DEFAULT_DIR)
    return [p / FILENAME if p.is_dir() or p.suffix != ".npz" else p for p in raw]


def find_npz(data: str | os.PathLike | None = None) -> Path:
    """The first existing candidate, or a DatasetError that says where to put the file."""
    candidates = candidate_paths(data)
    if data is not None:  # an explicit path is never silently replaced by another one
        candidates = candidates[:1]
    for path in candidates:
        if path.is_file():
            return path
    tried = "\n  ".join(str(p) for p in candidates)
    raise DatasetError(
        f"PneumoniaMNIST not found. Looked in:\n  {tried}\n"
        f"Put {FILENAME} (MedMNIST v2, 28x28) in one of those places, pass --data PATH, "
        f"set ${DATA_ENV_VAR} to the folder that holds it, or run "
        f"`python -m converters data --download` once while online."
    )


def _check_split(npz: np.lib.npyio.NpzFile, name: str, path: Path) -> LabelledImages:
    keys = (f"{name}_images", f"{name}_labels")
    missing = [k for k in keys if k not in npz.files]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {missing}; found {sorted(npz.files)}")
    images, labels = npz[keys[0]], npz[keys[1]]
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DatasetError(f"{path}: {keys[0]} has shape {images.shape}, expected (N, 28, 28)")
    if images.dtype != np.uint8:
        raise DatasetError(f"{path}: {keys[0]} has dtype {images.dtype}, expected uint8")
    labels = labels.reshape(-1)
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{path}: {keys[1]} has {labels.shape[0]} labels for {images.shape[0]} images"
        )
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise DatasetError(f"{path}: {keys[1]} holds values other than 0 and 1")
    return LabelledImages(np.ascontiguousarray(images), labels.astype(np.int64),
                          f"{path}, {name} split")


def load_pneumoniamnist(data: str | os.PathLike | None = None) -> PneumoniaMNIST:
    """Load and validate the npz; warn (never refuse) when it is not the official file."""
    path = find_npz(data)
    digest = md5_file(path)
    if digest != OFFICIAL_MD5:
        what = KNOWN_REBUILD_MD5.get(digest, "an unofficial copy")
        log.warning("%s: md5 %s is not the official release's (%s): %s; using it anyway",
                    path, digest, OFFICIAL_MD5, what)
    try:
        with np.load(path, allow_pickle=False) as npz:
            splits = {name: _check_split(npz, name, path) for name in SPLITS}
    except DatasetError:
        raise
    except Exception as exc:  # zip/npy errors
        raise DatasetError(f"{path}: not a readable npz file ({exc})") from exc
    return PneumoniaMNIST(path=path, md5=digest, **splits)


def download_pneumoniamnist(dest_dir: str | os.PathLike = MEDMNIST_DEFAULT_DIR,
                            url: str = OFFICIAL_URL, timeout: float = 30.0) -> Path:
    """Fetch the official file (online only); verify its md5; return where it was written."""
    dest = Path(dest_dir) / FILENAME
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"could not download {url} ({exc}); are you offline? "
                           f"Copy {FILENAME} into {dest.parent} by hand instead.") from exc
    if md5_file(tmp) != OFFICIAL_MD5:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"downloaded file from {url} failed its md5 check")
    tmp.replace(dest)
    return dest
