"""A config's data sources read into file lists and labels: class folders, CSV and npz, on the
real X-rays; the clinical model's committed CSVs are its patient-grouped split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from converters.config.data import read_source
from converters.config.model import DataSource, load_config
from converters.config.tables import ConfigError
from tests.converters.model_configs import DELETE, REPO, base, changed, write

LABELS = ("NORMAL", "PNEUMONIA")


@pytest.fixture(autouse=True)
def data_env(monkeypatch, data_dir: Path) -> Path:
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    return data_dir


def output(labels=LABELS, task="multiclass", findings=("PNEUMONIA",)):
    """A config with these outputs (its own data is not what the tests read)."""
    return changed(base(), output__labels=list(labels), output__task=task,
                   output__findings=list(findings), data__test=DELETE,
                   data__val="${CXR_DATA_DIR}/kermany_test_224/manifest.csv")


def read(tmp_path: Path, source: DataSource, **kwargs):
    config = load_config(write(tmp_path / "cfg", output(**kwargs)))
    return read_source(source, config.output, "[data] val")


def test_class_folders_of_real_xrays(tmp_path, data_dir):
    listing = read(tmp_path, DataSource("folders", data_dir / "cxr_samples"))
    assert listing.counts() == {"NORMAL": 100, "PNEUMONIA": 250}
    assert all(p.is_file() and p.parent.name == LABELS[t]
               for p, t in zip(listing.paths, listing.targets))
    assert listing.patients is None


def copy_images(src: Path, dest: Path, count: int) -> None:
    dest.mkdir(parents=True)
    for path in sorted(src.iterdir())[:count]:
        (dest / path.name).write_bytes(path.read_bytes())


def test_folder_refusals(tmp_path, data_dir):
    root = tmp_path / "val"
    copy_images(data_dir / "kermany_test_224" / "NORMAL", root / "NORMAL", 3)
    with pytest.raises(ConfigError, match=r"\[data\] val: .*val has no folder 'PNEUMONIA'; make "
                                          r"one folder per label"):
        read(tmp_path, DataSource("folders", root))
    (root / "PNEUMONIA").mkdir()
    with pytest.raises(ConfigError, match=r"PNEUMONIA holds no images"):
        read(tmp_path, DataSource("folders", root))
    copy_images(data_dir / "kermany_test_224" / "PNEUMONIA", root / "VIRAL", 2)
    with pytest.raises(ConfigError, match=r"has a subfolder 'VIRAL' that is not a label"):
        read(tmp_path, DataSource("folders", root))


def test_csv_with_an_images_folder_and_patients(tmp_path, data_dir):
    images = data_dir / "kermany_train_224"
    listing = read(tmp_path, DataSource("csv", REPO / "models" / "clinical" / "val.csv", images))
    assert len(listing) == 1048 and listing.counts() == {"NORMAL": 265, "PNEUMONIA": 783}
    assert listing.patients[0] == "IM-0119"
    table = tmp_path / "t.csv"
    table.write_text("path,label,finding\nNORMAL/IM-0115-0001.jpeg,NORMAL,x\n"
                     "PNEUMONIA/person1000_bacteria_2931.jpeg,PNEUMONIA,y\n")
    listing = read(tmp_path, DataSource("csv", table, images))
    assert listing.targets.tolist() == [0, 1] and listing.patients is None


@pytest.mark.parametrize("text, expected", [
    ("path,label\nNORMAL/IM-0115-0001.jpeg,TB\n", r"line 2: label 'TB' is not one of"),
    ("path,label\nNORMAL/IM-0115-0001.jpeg,NORMAL\nNORMAL/nope.jpeg,NORMAL\n",
     r"line 3: image .*nope.jpeg not found \(paths are relative to"),
    ("file,class\nNORMAL/IM-0115-0001.jpeg,NORMAL\n", r"needs a header with path and label"),
    ("path,label\n", r"needs a header with path and label columns .* at least one row"),
])
def test_csv_refusals(tmp_path, data_dir, text, expected):
    table = tmp_path / "t.csv"
    table.write_text(text)
    with pytest.raises(ConfigError, match=r"\[data\] val: .*" + expected):
        read(tmp_path, DataSource("csv", table, data_dir / "kermany_train_224"))


def test_multilabel_csv(tmp_path, data_dir):
    table = tmp_path / "t.csv"
    table.write_text("path,label\nNORMAL/IM-0115-0001.jpeg,\n"
                     "PNEUMONIA/person1000_bacteria_2931.jpeg,Pneumonia|Effusion\n")
    labels = ("Effusion", "Pneumonia")
    listing = read(tmp_path, DataSource("csv", table, data_dir / "kermany_train_224"),
                   labels=labels, task="multilabel", findings=labels)
    assert listing.targets.tolist() == [[0, 0], [1, 1]]
    assert listing.counts() == {"Effusion": 1, "Pneumonia": 1}


def test_npz_splits(tmp_path, data_dir):
    npz = data_dir / "pneumoniamnist.npz"
    assert read(tmp_path, DataSource("npz", npz, split="val")).counts() == {
        "NORMAL": 135, "PNEUMONIA": 389}
    bad = tmp_path / "bad.npz"
    np.savez(bad, val_images=np.zeros((2, 28, 28), np.uint8), val_labels=np.array([0, 2]))
    with pytest.raises(ConfigError, match=r"val_labels should hold 2 label indices 0..1"):
        read(tmp_path, DataSource("npz", bad, split="val"))
    with pytest.raises(ConfigError, match=r"has no test_images; it holds val_images, val_labels"):
        read(tmp_path, DataSource("npz", bad, split="test"))


def test_clinical_csvs_are_its_patient_grouped_split(data_dir):
    """models/clinical/{val,train}.csv list the same images, in the same order, as the split the
    clinical model was trained and thresholded on (converters.data.kermany.patient_split)."""
    from converters.data.kermany import open_kermany, patient_split

    manifest = open_kermany(data_dir).train
    for name, index in zip(("train", "val"), patient_split(manifest)):
        with (REPO / "models" / "clinical" / f"{name}.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["path"] for r in rows] == [manifest.paths[i] for i in index]
        assert [r["label"] for r in rows] == [manifest.classes[manifest.labels[i]] for i in index]
        assert [r["patient"] for r in rows] == [manifest.patients[i] for i in index]
