"""The pneumonia-type model (NORMAL / BACTERIAL / VIRAL): its labels read right from both Kermany
folders (the training manifest's finding column, the test folder's file names), the same patient
split as the clinical model, the shipped checkpoint's probabilities on real X-rays, its card's
figures re-measured, and its model.toml."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from converters.data.kermany import (
    PNEUMONIA,
    PNEUMONIA_TYPE,
    TEST_FOLDER,
    TRAIN_FOLDER,
    finding_from_name,
    patient_split,
    read_manifest,
    type_label,
)
from converters.data.labelled import DatasetError

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "pneumonia_type"
CHECKPOINT = MODEL_DIR / "pneumonia_type.safetensors"
CARD = MODEL_DIR / "pneumonia_type.json"


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_finding_from_name():
    assert finding_from_name("PNEUMONIA/person100_bacteria_475.jpeg") == "bacteria"
    assert finding_from_name("PNEUMONIA/person1_virus_6.jpeg") == "virus"
    assert finding_from_name("PNEUMONIA/person447_virus_921_1.jpeg") == "virus"
    assert finding_from_name("NORMAL/IM-0001-0001.jpeg") == "normal"
    assert finding_from_name("NORMAL/NORMAL2-IM-0427-0001.jpeg") == "normal"
    assert finding_from_name("person1_virus_6.jpeg") == "virus"  # no folder: the name says it
    for path in ("PNEUMONIA/IM-0001-0001.jpeg", "NORMAL/person1_virus_6.jpeg", "IM-0001-0001.jpeg",
                 "PNEUMONIA/person1_fungus_6.jpeg"):
        with pytest.raises(DatasetError, match="does not say normal"):
            finding_from_name(path)


def test_a_finding_that_contradicts_the_label_is_refused():
    assert type_label({"path": "NORMAL/IM-1.jpeg", "label": "NORMAL", "finding": ""}) == "NORMAL"
    with pytest.raises(DatasetError, match="finding 'virus' contradicts label 'NORMAL'"):
        type_label({"path": "NORMAL/IM-1.jpeg", "label": "NORMAL", "finding": "virus"})
    with pytest.raises(DatasetError, match="finding 'fungus' is not one of normal"):
        type_label({"path": "PNEUMONIA/x.jpeg", "label": "PNEUMONIA", "finding": "fungus"})


def test_training_labels_are_the_manifest_finding_and_agree_with_the_file_names(data_dir):
    folder = data_dir / TRAIN_FOLDER
    rows = _rows(folder)
    manifest = read_manifest(folder, PNEUMONIA_TYPE)
    want = {"normal": "NORMAL", "bacteria": "BACTERIAL", "virus": "VIRAL"}
    assert [manifest.classes[i] for i in manifest.labels] == [want[r["finding"]] for r in rows]
    # the file names say the same finding as the column, for every one of the 5,216 images
    assert [finding_from_name(r["path"]) for r in rows] == [r["finding"] for r in rows]
    assert Counter(manifest.classes[i] for i in manifest.labels) == {
        "NORMAL": 1341, "BACTERIAL": 2530, "VIRAL": 1345}


def test_test_labels_come_from_the_file_names(data_dir):
    folder = data_dir / TEST_FOLDER
    rows = _rows(folder)
    assert "finding" not in rows[0]
    manifest = read_manifest(folder, PNEUMONIA_TYPE)
    got = [manifest.classes[i] for i in manifest.labels]
    assert Counter(got) == {"NORMAL": 234, "BACTERIAL": 242, "VIRAL": 148}
    for row, label in zip(rows, got):
        name = Path(row["path"]).name
        assert (label == "NORMAL") == (row["label"] == "NORMAL")
        assert label != "BACTERIAL" or "_bacteria_" in name
        assert label != "VIRAL" or "_virus_" in name


def test_same_patient_split_as_the_clinical_model(data_dir):
    binary = read_manifest(data_dir / TRAIN_FOLDER, PNEUMONIA)
    three = read_manifest(data_dir / TRAIN_FOLDER, PNEUMONIA_TYPE)
    for a, b in zip(patient_split(binary), patient_split(three)):
        assert np.array_equal(a, b)


def test_shipped_csvs_are_the_split_with_three_class_labels(data_dir):
    """models/pneumonia_type/{train,val}.csv hold the clinical model's split, row for row, with
    the finding as the label; test.csv is the whole test folder."""
    three = read_manifest(data_dir / TRAIN_FOLDER, PNEUMONIA_TYPE)
    for name in ("train", "val"):
        clinical = list(csv.DictReader((REPO / "models" / "clinical" / f"{name}.csv").open()))
        ours = list(csv.DictReader((MODEL_DIR / f"{name}.csv").open()))
        assert [(r["path"], r["patient"]) for r in ours] == \
               [(r["path"], r["patient"]) for r in clinical]
        index = {p: i for i, p in enumerate(three.paths)}
        assert [r["label"] for r in ours] == \
               [three.classes[three.labels[index[r["path"]]]] for r in ours]
    test = list(csv.DictReader((MODEL_DIR / "test.csv").open()))
    assert Counter(r["label"] for r in test) == {"NORMAL": 234, "BACTERIAL": 242, "VIRAL": 148}


def test_stratified_sample_keeps_every_class():
    from converters.data.labelled import stratified_sample

    labels = np.array([0] * 50 + [1] * 100 + [2] * 50)
    picked = stratified_sample(labels, 40, seed=0)
    assert Counter(labels[picked].tolist()) == {0: 10, 1: 20, 2: 10}


def test_multiclass_metrics():
    from evaluation.metrics import confusion_matrix, macro_auc

    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[.8, .1, .1], [.5, .3, .2], [.2, .7, .1], [.4, .5, .1], [.1, .2, .7],
                      [.3, .3, .4]])
    assert macro_auc(labels, probs) == pytest.approx(1.0)
    assert macro_auc(labels, probs[:, ::-1]) == pytest.approx((0.375 + 1.0 + 0.125) / 3)
    assert confusion_matrix(labels, np.array([0, 1, 1, 1, 2, 0]), 3).tolist() == \
           [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


@pytest.fixture(scope="module")
def loaded():
    from converters.checkpoint import load_checkpoint

    return load_checkpoint(CHECKPOINT)


def test_checkpoint_gives_three_probabilities_on_real_xrays(loaded, data_dir):
    """The shipped checkpoint on full-size X-rays through the runtime's decode, and on the 224 px
    test files: three probabilities per image, each row summing to one."""
    from converters.train import predict_probabilities
    from runtime.imaging.decode import decode_file
    from runtime.preprocess.cpu import to_model_pixels

    spec = loaded.spec
    assert spec.classes == ("NORMAL", "BACTERIAL", "VIRAL") and spec.dataset == "kermany"
    paths = sorted((data_dir / "cxr_samples").rglob("*.jpeg"))[::25]
    paths += sorted((data_dir / TEST_FOLDER).rglob("*.jpeg"))[::40]
    images = np.stack([to_model_pixels(decode_file(p).pixels, spec.preprocessing)
                       for p in paths])
    probs = predict_probabilities(loaded.model, images, spec)
    assert probs.shape == (len(paths), 3) and np.isfinite(probs).all()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert len(set(probs.argmax(axis=1).tolist())) > 1  # not one answer for every X-ray


def test_card_figures_reproduce_on_the_real_test_images(loaded, data_dir):
    from converters.classes_card import split_metrics
    from converters.data.folder import load_images
    from converters.train import predict_probabilities

    card = json.loads(CARD.read_text())
    assert card["checkpoint"]["sha256"] == loaded.sha256
    assert card["thresholds"]["chosen_on"] == "val" and card["data"]["split"]["by"] == "patient"
    assert card["findings"] == ["BACTERIAL", "VIRAL"]
    manifest = read_manifest(data_dir / TEST_FOLDER, PNEUMONIA_TYPE)
    probs = predict_probabilities(loaded.model, load_images(manifest, loaded.spec.preprocessing),
                                  loaded.spec)
    got = split_metrics(manifest.labels, probs, loaded.spec, card["thresholds"]["values"])
    want = card["metrics"]["test"]
    assert got["confusion"]["matrix"] == want["confusion"]["matrix"]
    for name in ("NORMAL", "BACTERIAL", "VIRAL"):
        assert got["per_class"][name]["auc"] == pytest.approx(want["per_class"][name]["auc"],
                                                              abs=1e-6)
    for name in ("BACTERIAL", "VIRAL"):
        for key in ("tp", "fn", "tn", "fp"):
            assert got["per_class"][name][key] == want["per_class"][name][key], (name, key)
    assert {k: got["any_finding"][k] for k in ("tp", "fn", "tn", "fp")} == \
           {k: want["any_finding"][k] for k in ("tp", "fn", "tn", "fp")}
    for name in card["figures"].values():
        assert (MODEL_DIR / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_model_toml_describes_the_checkpoint(loaded, data_dir, monkeypatch, capsys):
    from converters.__main__ import main
    from converters.config.model import load_config

    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    config = load_config(MODEL_DIR / "model.toml")
    kwargs = dict(config.network.kwargs)
    assert kwargs.pop("name") == loaded.spec.architecture
    assert kwargs == loaded.spec.config
    assert config.network.weights == CHECKPOINT
    assert config.output.labels == loaded.spec.classes
    assert config.output.findings == ("BACTERIAL", "VIRAL")
    assert main(["config", "--check", str(MODEL_DIR / "model.toml")]) == 0
    out = capsys.readouterr().out
    assert "1048 images (NORMAL 265, BACTERIAL 525, VIRAL 258)" in out
    assert "624 images (NORMAL 234, BACTERIAL 242, VIRAL 148)" in out


def test_docs_block_carries_the_cards_table():
    """docs/reference-models.md's pneumonia-type block is generated from the card: its per-class
    test AUCs and the test confusion matrix's rows are there."""
    from benchmarks.readme import GENERATORS, Sources

    card = json.loads(CARD.read_text())
    text = GENERATORS["pneumonia-type-model"](Sources(report={}, card={}, type_card=card))
    test = card["metrics"]["test"]
    for name in ("NORMAL", "BACTERIAL", "VIRAL"):
        assert f"{test['per_class'][name]['auc']:.4f} [" in text, name
    for name, row in zip(test["confusion"]["classes"], test["confusion"]["matrix"]):
        assert f"| **test** | {name.lower()} | " + " | ".join(f"{v:,}" for v in row) in text
    assert "pneumonia-type-model" in (REPO / "docs" / "reference-models.md").read_text()
