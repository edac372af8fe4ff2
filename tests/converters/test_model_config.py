"""model.toml parsing: every key read into its typed value, every refusal in plain words naming
the key and the fix; data sources and paths are real files (../shared/data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from converters.config.model import SOURCES, load_config
from converters.config.tables import ConfigError
from tests.converters.model_configs import DELETE, REPO, base, changed, write


@pytest.fixture(autouse=True)
def data_env(monkeypatch, data_dir: Path) -> Path:
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    return data_dir


def refused(tmp_path: Path, config: dict | None = None, text: str | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, config or {}, text))
    return str(error.value)


def test_reference_models_read_as_their_checkpoints_declare(data_dir):
    tiny = load_config(REPO / "models" / "reference" / "model.toml")
    assert tiny.name == "pneumonia-cnn-x3"
    assert (tiny.network.source, tiny.network.target) == (
        "factory", "converters.architectures:build_model")
    assert tiny.network.kwargs["name"] == "ensemble" and len(tiny.network.kwargs["members"]) == 3
    assert tiny.network.weights == REPO / "models" / "reference" / "pneumonia_cnn.safetensors"
    assert (tiny.input.channels, tiny.input.size, tiny.input.crop) == (1, (28, 28),
                                                                       "center-square")
    assert (tiny.input.mean, tiny.input.std) == ((0.5,), (0.5,))
    assert tiny.output.sensitivity == {"PNEUMONIA": 0.98}
    assert tiny.population.age_years == (1.0, 5.0)
    assert (tiny.data.val.kind, tiny.data.val.split, tiny.data.val.path) == (
        "npz", "val", data_dir / "pneumoniamnist.npz")
    clinical = load_config(REPO / "models" / "clinical" / "model.toml")
    assert clinical.input.size == (128, 128) and clinical.input.crop == "none"
    assert clinical.network.kwargs["temperature"] == 0.508119
    assert clinical.data.val.kind == "csv"
    assert clinical.data.val.images == data_dir / "kermany_train_224"
    assert clinical.data.test.kind == "folders"


def test_the_issue_example_densenet121(tmp_path):
    folder = tmp_path / "densenet121"
    folder.mkdir()
    shutil.copy(REPO / "examples" / "densenet121" / "model.toml", folder)
    (folder / "densenet121.pt").write_bytes(b"")  # only its existence is checked here
    config = load_config(folder / "model.toml")
    assert (config.network.source, config.network.target) == ("torchvision", "densenet121")
    assert config.network.kwargs == {"num_classes": 2}
    assert config.input.shape == (3, 224, 224)
    assert config.input.mean == (0.485, 0.456, 0.406)
    assert config.input.std == (0.229, 0.224, 0.225)
    assert config.input.interpolation == "linear-antialias"  # torchvision's Resize
    assert config.output.count == 2
    assert config.population.views == ("PA", "AP")


def test_defaults_and_other_forms(tmp_path):
    config = load_config(write(tmp_path, changed(
        base(), input__channels=DELETE, input__crop=DELETE, input__interpolation=DELETE,
        input__scale=DELETE, population=DELETE, data__test=DELETE)))
    i = config.input
    assert (i.channels, i.crop, i.crop_fraction, i.interpolation, i.scale) == (
        1, "none", None, "area", 1 / 255)
    assert config.population.age_years is None and config.data.test is None
    config = load_config(write(tmp_path, changed(
        base(), input__channels=3, input__size=[256, 224], input__crop="center",
        input__crop_fraction=0.875, input__mean=0.5, input__std=[0.2, 0.3, 0.4],
        output__labels=["NORMAL", "BACTERIAL", "VIRAL"], output__findings=["BACTERIAL", "VIRAL"],
        output__sensitivity={"BACTERIAL": 0.95, "VIRAL": 0.9},
        population__modalities=["CR", "DX"], population__description="adults")))
    assert config.input.size == (256, 224) and config.input.shape == (3, 256, 224)
    assert config.input.crop_fraction == 0.875
    assert config.input.mean == (0.5, 0.5, 0.5) and config.input.std == (0.2, 0.3, 0.4)
    assert config.output.sensitivity == {"BACTERIAL": 0.95, "VIRAL": 0.9}
    assert config.population.modalities == ("CR", "DX")
    assert config.population.description == "adults"


def test_binary_and_multilabel_outputs(tmp_path):
    binary = load_config(write(tmp_path, changed(base(), output__task="binary")))
    assert binary.output.count == 1
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nNORMAL/IM-0001-0001.jpeg,\n")
    multi = load_config(write(tmp_path, changed(
        base(), output__task="multilabel", output__kind="probabilities",
        output__labels=["Effusion", "Lung Opacity", "Pneumonia"],
        output__findings=["Effusion", "Lung Opacity", "Pneumonia"],
        data__val={"csv": str(csv), "images": "${CXR_DATA_DIR}/kermany_test_224"},
        data__test=DELETE)))
    assert multi.output.count == 3 and multi.output.kind == "probabilities"


def test_paths_are_relative_to_the_config(tmp_path):
    shutil.copy(base()["network"]["weights"], tmp_path / "w.safetensors")
    config = load_config(write(tmp_path / "sub",
                               changed(base(), network__weights="../w.safetensors")))
    assert config.network.weights.resolve() == (tmp_path / "w.safetensors").resolve()


def test_every_network_source_is_named_in_the_refusal(tmp_path):
    message = refused(tmp_path, changed(base(), network__torchvision="densenet121",
                                        network__timm="efficientnet_b0",
                                        network__factory=DELETE))
    assert message.endswith("[network]: give exactly one of torchvision, timm, factory, "
                            "torchscript, exported, onnx; found torchvision and timm")
    assert "found none" in refused(tmp_path, changed(base(), network__factory=DELETE))
    assert len(SOURCES) == 6


@pytest.mark.parametrize("changes, expected", [
    ({"nmae": "x"}, "top level: unknown key 'nmae' (did you mean 'name'?); known keys: name, "
                    "network, input, output, population, data"),
    ({"input__sise": 3}, "[input]: unknown key 'sise' (did you mean 'size'?); known keys: "
                         "channels, size, crop"),
    ({"output__threshold": 0.5}, "[output]: unknown key 'threshold'"),
    ({"name": DELETE}, "name: missing; name the model"),
    ({"name": "my model!"}, "name: 'my model!' must be letters, digits"),
    ({"name": 3}, "name: expected a non-empty string, found an integer (3)"),
    ({"input": DELETE}, "[input]: missing; add [input] with size, mean and std"),
    ({"data": DELETE}, "[data]: missing; add [data] with val"),
    ({"network__factory": "my_pkg.nets.build"}, "[network] factory: 'my_pkg.nets.build' should "
                                                "be \"package.module:function\""),
    ({"network__kwargs": 3}, "[network] kwargs: expected a table"),
    ({"network__weights": "nowhere.pt"}, "[network] weights: "),
    ({"network__weights": "${NO_SUCH_VARIABLE_HERE}/w.pt"},
     "uses ${NO_SUCH_VARIABLE_HERE}, which is not set; set it"),
    ({"network__weights": str(REPO / "README.md")}, "[network] weights: README.md should be a "
                                                     "state_dict"),
    ({"input__channels": 2}, "[input] channels: expected 1 (gray) or 3"),
    ({"input__channels": True}, "[input] channels: expected 1 (gray) or 3"),
    ({"input__size": DELETE}, "[input] size: missing; the network's input size"),
    ({"input__size": 0}, "[input] size: expected an integer or [height, width]"),
    ({"input__size": [224, 224, 3]}, "[input] size: expected an integer or [height, width]"),
    ({"input__size": "224"}, "[input] size: expected an integer"),
    ({"input__crop": "centre"}, "[input] crop: 'centre' is not one of \"none\", "
                                "\"center-square\", \"center\""),
    ({"input__crop": "center"}, "[input] crop_fraction: missing; crop = \"center\" keeps"),
    ({"input__crop": "center", "input__crop_fraction": 1.5}, "[input] crop_fraction: 1.5 must "
                                                             "be in (0, 1]"),
    ({"input__crop_fraction": 0.875}, "[input] crop_fraction: applies to crop = \"center\" "
                                      "only"),
    ({"input__interpolation": "nearest"}, "[input] interpolation: 'nearest' is not one of"),
    ({"input__scale": 0}, "[input] scale: 0.0 must be > 0"),
    ({"input__scale": "1/255"}, "[input] scale: expected a number, found a string"),
    ({"input__mean": DELETE}, "[input] mean: missing; give one value, or one per channel"),
    ({"input__channels": 3, "input__mean": [0.4, 0.5]}, "[input] mean: expected 1 or 3 numbers "
                                                       "(channels = 3)"),
    ({"input__std": [0]}, "[input] std: every value must be > 0"),
    ({"output__kind": "softmax"}, "[output] kind: 'softmax' is not one of \"logits\", "
                                  "\"probabilities\""),
    ({"output__kind": DELETE}, "[output] kind: missing; give one of \"logits\""),
    ({"output__task": "regression"}, "[output] task: 'regression' is not one of \"binary\""),
    ({"output__labels": ["NORMAL", "NORMAL"]}, "[output] labels: 'NORMAL' is listed twice"),
    ({"output__labels": ["NORMAL", "normal"]}, "differ only in upper/lower case"),
    ({"output__labels": ["NORMAL", "PNEUMONIA,VIRAL"]}, "[output] labels: 'PNEUMONIA,VIRAL' "
                                                         "must start with a letter"),
    ({"output__labels": ["PNEUMONIA"]}, "[output] labels: a multiclass model needs at least 2 "
                                        "labels; found 1"),
    ({"output__task": "binary", "output__labels": ["A", "B", "PNEUMONIA"]},
     "[output] labels: a binary model needs exactly 2 labels, [negative, positive]"),
    ({"output__findings": ["TUBERCULOSIS"]}, "[output] findings: 'TUBERCULOSIS' is not a label"),
    ({"output__findings": []}, "[output] findings: empty"),
    ({"output__findings": DELETE}, "[output] findings: missing; name the labels that send a "
                                   "case to a doctor"),
    ({"output__findings": ["NORMAL", "PNEUMONIA"]}, "[output] findings: every label is a "
                                                    "finding"),
    ({"output__task": "binary", "output__findings": ["NORMAL"]},
     "[output] findings: a binary model's one output scores its second label"),
    ({"output__sensitivity": DELETE}, "[output] sensitivity: missing; give the validation "
                                      "sensitivity"),
    ({"output__sensitivity": 1.5}, "[output] sensitivity: PNEUMONIA: expected a number in "
                                   "(0, 1]"),
    ({"output__sensitivity": "high"}, "[output] sensitivity: expected a number, or a table"),
    ({"output__sensitivity": {"VIRAL": 0.9}}, "[output] sensitivity: 'VIRAL' is not a finding"),
    ({"output__labels": ["NORMAL", "BACTERIAL", "VIRAL"],
      "output__findings": ["BACTERIAL", "VIRAL"], "output__sensitivity": {"VIRAL": 0.9}},
     "[output] sensitivity: no value for finding 'BACTERIAL'"),
    ({"population__age_years": [5, 1]}, "[population] age_years: expected [youngest, oldest]"),
    ({"population__age_years": 5}, "[population] age_years: expected [youngest, oldest]"),
    ({"population__views": ["TOP"]}, "[population] views: 'TOP' is not one of the DICOM values"),
    ({"population__modalities": ["CT"]}, "[population] modalities: 'CT' is not one of"),
    ({"population__sex": "F"}, "[population]: unknown key 'sex'"),
    ({"data__val": DELETE}, "[data] val: missing; give the validation images"),
    ({"data__val": "${CXR_DATA_DIR}/no_such_folder"}, "no_such_folder does not exist (paths are "
                                                      "relative to the config file's folder"),
    ({"data__val": "${CXR_DATA_DIR}/pneumoniamnist.npz"},
     "[data] val: an npz holds several splits; write { npz = \"pneumoniamnist.npz\", split = "
     "\"val\" }"),
    ({"data__val": "${CXR_DATA_DIR}/SOURCES.md"}, "is neither a folder (one subfolder per "
                                                  "label) nor a .csv file"),
    ({"data__val": {"npz": "${CXR_DATA_DIR}/pneumoniamnist.npz", "split": "holdout"}},
     "[data] val split: 'holdout' is not one of \"val\", \"test\", \"train\""),
    ({"data__val": {"npz": "${CXR_DATA_DIR}/pneumoniamnist.npz", "csv": "x.csv"}},
     "[data] val: a table gives csv (with optional images) or npz (with split)"),
    ({"data__val": {"csv": "${CXR_DATA_DIR}/kermany_test_224/manifest.csv", "root": "x"}},
     "[data] val: unknown key 'root'; known keys: csv, images"),
    ({"data__holdout": "x"}, "[data]: unknown key 'holdout'; known keys: val, test, train"),
    ({"output__task": "multilabel", "output__findings": ["PNEUMONIA"]},
     "[data] val: a multilabel model's images need a CSV"),
])
def test_refusals_name_the_key_and_the_fix(tmp_path, changes, expected):
    assert expected in refused(tmp_path, changed(base(), **changes))


@pytest.mark.parametrize("source, suffix, expected", [
    ("onnx", ".pt", "[network] onnx: model.pt should end in .onnx"),
    ("exported", ".pt", "[network] exported: model.pt should end in .pt2"),
])
def test_network_files_are_checked(tmp_path, source, suffix, expected):
    (tmp_path / f"model{suffix}").write_bytes(b"")
    config = changed(base(), network={source: f"model{suffix}"})
    assert expected in refused(tmp_path, config)


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_builders_need_weights_and_never_download(tmp_path, source):
    message = refused(tmp_path, changed(base(), network={source: "resnet18"}))
    assert f"[network] weights: missing; {source} builds 'resnet18' with random weights " \
           "(nothing is downloaded)" in message
    config = changed(base(), network={source: "resnet18", "weights": base()["network"]["weights"],
                                      "kwargs": {"pretrained": True}})
    assert "[network] kwargs: pretrained would download weights; the kit never downloads" \
        in refused(tmp_path, config)


def test_files_hold_their_own_weights(tmp_path):
    (tmp_path / "net.onnx").write_bytes(b"")
    config = changed(base(), network={"onnx": "net.onnx", "weights": "w.pt"})
    assert "[network] weights: the onnx file holds the whole network with its weights; remove " \
           "weights" in refused(tmp_path, config)


def test_bad_toml_and_missing_file(tmp_path):
    assert "not valid TOML" in refused(tmp_path, text="name = \n")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing" / "model.toml")
    assert "[network]: expected a table, found an integer (3)" in refused(
        tmp_path, changed(base(), network=3))
