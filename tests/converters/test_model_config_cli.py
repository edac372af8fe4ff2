"""``python -m converters config --check``: what the kit understood, exit 0; a bad config's
plain error, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.__main__ import build_parser, main
from tests.converters.model_configs import REPO, base, changed, write


@pytest.fixture(autouse=True)
def data_env(monkeypatch, data_dir: Path) -> Path:
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    return data_dir


def test_reference_models_pass_and_say_what_was_understood(capsys):
    assert main(["config", "--check", str(REPO / "models" / "clinical" / "model.toml"),
                 "--load"]) == 0
    out = capsys.readouterr().out
    for line in ("name        clinical-cnn-128px",
                 "network     factory converters.architectures:build_model(name='clinical_cnn'",
                 "            weights clinical_cnn.safetensors (state_dict)",
                 "input       1 channel (gray), 128x128 px (height x width), whole image resized, "
                 "area interpolation",
                 "mean [0.5], std [0.5]",
                 "output      2 value(s) per image, multiclass: logits; the kit applies the "
                 "softmax",
                 "finding PNEUMONIA: threshold = the highest with validation sensitivity >= 0.98",
                 "population  children aged 1–5 (Kermany et al. 2018, Guangzhou); ages 1-5 years",
                 "data val    val.csv (images in ",
                 "1048 images (NORMAL 265, PNEUMONIA 783); decides threshold, gate",
                 "kermany_test_224 (one folder per label): 624 images (NORMAL 234, PNEUMONIA 390); "
                 "only reported",
                 "loaded      factory network; a blank 1x128x128 image gives (1, 2)"):
        assert line in out
    assert main(["config", "--check", str(REPO / "models" / "reference" / "model.toml")]) == 0
    out = capsys.readouterr().out
    assert "split val: 524 images (NORMAL 135, PNEUMONIA 389)" in out
    assert "members=<list of 3>" in out


def test_a_bad_config_exits_2_with_the_key_and_the_fix(tmp_path, capsys):
    path = write(tmp_path, changed(base(), network__torchvision="densenet121",
                                   network__timm="efficientnet_b0"))
    assert main(["config", "--check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {path}: [network]: give exactly one of torchvision, timm, factory, "
                   "torchscript, exported, onnx; found torchvision, timm and factory\n")


def test_labels_without_folders_and_an_output_count_that_does_not_fit(tmp_path, capsys):
    three = changed(base(), output__labels=["NORMAL", "PNEUMONIA", "TUBERCULOSIS"],
                    output__findings=["PNEUMONIA", "TUBERCULOSIS"])
    path = write(tmp_path, three)
    assert main(["config", "--check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: [data] val: ")
    assert "has no folder 'TUBERCULOSIS'; make one folder per label" in err
    csv = changed(three, data__val="${CXR_DATA_DIR}/kermany_test_224/manifest.csv",
                  data__test="${CXR_DATA_DIR}/kermany_test_224/manifest.csv")
    path = write(tmp_path, csv)
    assert main(["config", "--check", str(path)]) == 0
    assert main(["config", "--check", str(path), "--load"]) == 2
    assert "[output] labels: the network returns shape (1, 2) per batch of one; a multiclass " \
           "model with 3 labels must return (1, 3)" in capsys.readouterr().err


def test_help_names_the_options():
    text = build_parser().parse_args(["config", "--check", "x"])
    assert text.check == Path("x") and not text.load and not text.trust_pickle
    helps = [a for a in build_parser()._subparsers._group_actions[0].choices["config"]._actions]
    assert {"--check", "--load", "--trust-pickle"} <= {o for a in helps for o in a.option_strings}
