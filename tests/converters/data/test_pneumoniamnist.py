"""The PneumoniaMNIST loader on the real npz, and its errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from converters.data import pneumoniamnist as loader
from converters.data.labelled import DATA_ENV_VAR, DatasetError
from converters.data.pneumoniamnist import load_pneumoniamnist


def test_real_npz_has_the_official_splits(pneumoniamnist):
    sizes = {s: len(pneumoniamnist.split(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 4708, "val": 524, "test": 624}
    assert pneumoniamnist.test.images.shape == (624, 28, 28)
    assert pneumoniamnist.test.images.dtype == np.uint8
    # label 1 = pneumonia; class counts as documented in shared/data/SOURCES.md
    assert int(pneumoniamnist.train.labels.sum()) == 3494
    assert int(pneumoniamnist.test.labels.sum()) == 390
    assert set(np.unique(pneumoniamnist.val.labels)) == {0, 1}


def test_rebuilt_copy_is_accepted_with_a_warning(data_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="converters.data.pneumoniamnist"):
        data = load_pneumoniamnist(data_dir)
    assert data.md5 != loader.OFFICIAL_MD5
    assert "not the official release" in caplog.text


def test_environment_variable_is_used(data_dir, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(data_dir))
    assert loader.find_npz() == data_dir / loader.FILENAME


def test_missing_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(loader, "MEDMNIST_DEFAULT_DIR", tmp_path / "medmnist")
    with pytest.raises(DatasetError) as err:
        load_pneumoniamnist()
    message = str(err.value)
    assert str(tmp_path / "medmnist" / loader.FILENAME) in message
    assert "--data" in message and DATA_ENV_VAR in message


def test_explicit_missing_path_is_not_replaced(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(data_dir))
    with pytest.raises(DatasetError, match="nope.npz"):
        load_pneumoniamnist(tmp_path / "nope.npz")


def _write(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _good_arrays(pneumoniamnist) -> dict:
    out = {}
    for s in ("train", "val", "test"):
        split = pneumoniamnist.split(s)
        out[f"{s}_images"] = split.images[:10]
        out[f"{s}_labels"] = split.labels[:10].reshape(-1, 1).astype(np.uint8)
    return out


def test_wrong_keys(tmp_path, pneumoniamnist):
    arrays = _good_arrays(pneumoniamnist)
    arrays["validation_images"] = arrays.pop("val_images")
    with pytest.raises(DatasetError, match="missing key.*val_images"):
        load_pneumoniamnist(_write(tmp_path / "bad.npz", **arrays))


def test_wrong_shapes(tmp_path, pneumoniamnist):
    arrays = _good_arrays(pneumoniamnist)
    arrays["test_images"] = np.zeros((10, 64, 64), np.uint8)
    with pytest.raises(DatasetError, match=r"test_images has shape \(10, 64, 64\)"):
        load_pneumoniamnist(_write(tmp_path / "bad.npz", **arrays))


def test_label_count_mismatch(tmp_path, pneumoniamnist):
    arrays = _good_arrays(pneumoniamnist)
    arrays["train_labels"] = arrays["train_labels"][:5]
    with pytest.raises(DatasetError, match="5 labels for 10 images"):
        load_pneumoniamnist(_write(tmp_path / "bad.npz", **arrays))


def test_not_an_npz(tmp_path):
    path = tmp_path / loader.FILENAME
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(DatasetError, match="not a readable npz"):
        load_pneumoniamnist(path)
