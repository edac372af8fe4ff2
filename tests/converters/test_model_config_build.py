"""What ``build --config`` makes of a config before any conversion: the probability head for each
declared output, the warning for logits that look like probabilities, an ONNX file prepared as the
FP32 graph, and the refusals (what the bundle contract cannot carry yet, a batch-1 ONNX graph, a
network that gives NaN). Real X-rays from cxr_samples; small networks, nothing is built."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from converters.config.for_build import (
    ProbabilityHead,
    build_inputs,
    check_buildable,
    classifier_of,
    preprocessing_of,
    warn_if_probabilities,
)
from converters.config.model import Output, load_config
from converters.config.tables import ConfigError
from converters.data.labelled import DatasetError
from tests.converters.model_configs import DELETE, base, changed, write

XRAYS = ("NORMAL/IM-0172-0001.jpeg", "PNEUMONIA/person1031_virus_1723.jpeg")


class Tiny(nn.Module):
    """A small network with ``outputs`` values, optionally ending in softmax."""

    def __init__(self, outputs: int = 2, softmax: bool = False, channels: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(channels, 4, 3, stride=4), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, outputs))
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return torch.softmax(y, dim=1) if self.softmax else y


@pytest.fixture()
def xrays(data_dir) -> torch.Tensor:
    """Two real X-rays as a (2, 1, 64, 64) batch in [-1, 1]."""
    from runtime.contract.manifest import Preprocessing
    from runtime.imaging.decode import decode_file
    from runtime.preprocess.cpu import normalize, to_model_pixels

    spec = Preprocessing(size=64, crop="none", interpolation="area")
    pixels = np.stack([to_model_pixels(decode_file(data_dir / "cxr_samples" / x).pixels, spec)
                       for x in XRAYS])
    return torch.from_numpy(normalize(pixels, spec))


def _config(tmp_path: Path, **changes):
    return load_config(write(tmp_path, changed(base(), **changes)))


def test_heads_turn_each_declared_output_into_probabilities(tmp_path, xrays, monkeypatch,
                                                            data_dir):
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    logits = Tiny(2)
    with torch.no_grad():
        raw = logits(xrays)
        multiclass = classifier_of(logits, _config(tmp_path).output)
        assert multiclass is logits  # the kit's own softmax follows (and keeps scope features)
        ends_in_softmax = Tiny(2, softmax=True)
        head = classifier_of(ends_in_softmax, _config(tmp_path, output__kind="probabilities")
                             .output)
        torch.testing.assert_close(head(xrays), torch.softmax(raw, 1))  # not softmax twice
        one = Tiny(1)
        binary = classifier_of(one, _config(tmp_path, output__task="binary").output)
        p = torch.sigmoid(one(xrays))[:, 0]
        torch.testing.assert_close(binary(xrays), torch.stack([1 - p, p], dim=1))
    assert isinstance(head, ProbabilityHead) and head.returns_probabilities


def _multilabel(kind: str = "logits", labels: tuple[str, ...] = ("Effusion", "Pneumonia",
                                                                  "Mass")) -> Output:
    return Output(kind=kind, task="multilabel", labels=labels, findings=labels,
                  sensitivity={label: 0.9 for label in labels})


def test_a_multilabel_head_gives_one_sigmoid_per_label(xrays):
    logits = Tiny(3)
    with torch.no_grad():
        raw = logits(xrays)
        head = classifier_of(logits, _multilabel())
        torch.testing.assert_close(head(xrays), torch.sigmoid(raw))  # columns independent
        assert not torch.allclose(head(xrays).sum(1), torch.ones(2))
        given = classifier_of(logits, _multilabel("probabilities"))
        torch.testing.assert_close(given(xrays), raw)  # passed through: no second sigmoid


def test_multilabel_outputs_already_in_0_1_get_a_warning(xrays):
    config = SimpleNamespace(output=_multilabel(labels=("A", "B")))

    class Sigmoid(Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(super().forward(x))

    inputs = xrays.numpy()
    warning = warn_if_probabilities(classifier_of(Sigmoid(2), config.output), config, inputs)
    assert warning and 'set kind = "probabilities"' in warning and "second sigmoid" in warning
    scaled = Tiny(2)
    with torch.no_grad():
        scaled.net[4].weight.mul_(100)  # logits well outside [0, 1]
    assert warn_if_probabilities(classifier_of(scaled, config.output), config, inputs) is None


def test_logits_that_look_like_probabilities_get_a_warning(tmp_path, xrays, monkeypatch,
                                                           data_dir):
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    config = _config(tmp_path)
    inputs = xrays.numpy()
    warning = warn_if_probabilities(Tiny(2, softmax=True), config, inputs)
    assert warning and 'set kind = "probabilities"' in warning and "second softmax" in warning
    assert warn_if_probabilities(Tiny(2), config, inputs) is None


def test_a_non_square_center_crop_is_carried_into_the_bundles_preprocessing(tmp_path,
                                                                            monkeypatch,
                                                                            data_dir):
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    config = _config(tmp_path, input__size=[128, 96], input__crop="center",
                     input__crop_fraction=0.875)
    check_buildable(config)
    spec = preprocessing_of(config)
    assert (spec.shape, spec.crop, spec.crop_fraction) == ((128, 96), "center", 0.875)


@pytest.mark.parametrize(("changes", "message"), [
    ({"input__size": [128, 96], "input__crop": "center-square"},
     r"\[input\] crop: \"center-square\" would stretch a square into the 128x96 input"),
    ({"population__age_years": DELETE}, r"\[population\] age_years: needed to build"),
])
def test_what_a_bundle_cannot_carry_yet_is_refused_by_key(tmp_path, monkeypatch, data_dir,
                                                           changes, message):
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    with pytest.raises(ConfigError, match=message):
        check_buildable(_config(tmp_path, **changes))


def test_a_missing_training_split_is_named_when_int8_needs_it(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    loaded, sets = build_inputs(_config(tmp_path), tmp_path / "work")
    assert len(sets.val) == 350 and set(np.unique(sets.val.labels)) == {0, 1}
    with pytest.raises(DatasetError, match=r"\[data\] train: not given .*INT8 calibration"):
        sets.calibration  # noqa: B018


def _export(module: nn.Module, path: Path, dynamic: bool) -> Path:
    torch.onnx.export(module.eval(), (torch.zeros(1, 1, 128, 128),), str(path),
                      input_names=["x"], output_names=["y"], dynamo=False,
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}} if dynamic else None)
    return path


def test_an_onnx_file_becomes_the_fp32_graph_with_the_kits_head(tmp_path, xrays, monkeypatch,
                                                                data_dir):
    from converters.config.onnx_source import OnnxClassifier, prepare_onnx

    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    module = Tiny(2)
    _export(module, tmp_path / "net.onnx", dynamic=True)
    config = _config(tmp_path, network={"onnx": "net.onnx"})
    batch = nn.functional.interpolate(xrays, size=128)
    prepared = OnnxClassifier(prepare_onnx(config, tmp_path / "prepared.onnx"))
    with torch.no_grad():
        torch.testing.assert_close(prepared(batch), torch.softmax(module(batch), 1),
                                   atol=1e-6, rtol=1e-5)


def test_an_onnx_file_for_batch_one_only_is_refused_with_the_export_fix(tmp_path, monkeypatch,
                                                                        data_dir):
    from converters.config.onnx_source import prepare_onnx

    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))

    class Flat(Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net[4](self.net[:4](x).reshape(1, 4))  # batch 1 baked in

    _export(Flat(2), tmp_path / "net.onnx", dynamic=False)
    config = _config(tmp_path, network={"onnx": "net.onnx"})
    with pytest.raises(ConfigError, match=r"does not run on a batch of two images .*dynamic_axes"):
        prepare_onnx(config, tmp_path / "prepared.onnx")


def test_a_network_that_gives_nan_on_real_xrays_fails_the_build(tmp_path, monkeypatch, data_dir):
    from converters.reference import reference_evaluation

    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))

    class NanOnBright(Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = super().forward(x)
            return torch.where(x.mean((1, 2, 3))[:, None] > 0, torch.nan, y)

    loaded, sets = build_inputs(_config(tmp_path), tmp_path / "work")
    with pytest.raises(ValueError, match=r"non-finite outputs \(NaN or infinity\) for \d+ of 350 "
                                         r"validation images"):
        reference_evaluation(NanOnBright(2), sets.val, sets.val, loaded.spec.scored_findings,
                             (0.98,), with_speed=False)


def tiny_four(outputs: int = 4) -> nn.Module:
    """A factory for the multilabel config below (seeded random layers, no weights file)."""
    return Tiny(outputs)


def test_a_multilabel_config_keeps_every_label_and_gets_a_threshold_per_finding(
        tmp_path, monkeypatch, data_dir):
    import csv

    from converters.findings import MULTILABEL
    from converters.reference import reference_evaluation, torch_probs
    from evaluation.metrics import decision_threshold

    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    labels = ["Effusion", "Atelectasis", "Infiltration", "Cardiomegaly"]
    with (data_dir / "adult_cxr" / "manifest.csv").open(newline="") as handle:
        nih = [r for r in csv.DictReader(handle) if r["path"].startswith("nih/")][:80]
    for split, rows in (("val", nih[:50]), ("test", nih[50:])):
        with (tmp_path / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            writer.writerows([r["path"], "|".join(f for f in r["finding"].split("|")
                                                  if f in labels)] for r in rows)
    images = str(data_dir / "adult_cxr")
    config = _config(tmp_path, network={"factory": f"{__name__}:tiny_four"},
                     output__task="multilabel", output__labels=labels,
                     output__findings=labels[:3], output__sensitivity=0.9,
                     data={"val": {"csv": "val.csv", "images": images},
                           "test": {"csv": "test.csv", "images": images}})
    loaded, sets = build_inputs(config, tmp_path / "work")
    assert (loaded.spec.task, loaded.spec.finding_labels) == (MULTILABEL, tuple(labels[:3]))
    truth = np.array([[f in r["finding"].split("|") for f in labels] for r in nih[:50]])
    assert sets.val.labels.shape == (50, 4) and np.array_equal(sets.val.labels, truth)
    assert truth[:, :3].any(axis=1).sum() > truth[:, 0].sum()  # several findings, not one
    findings = loaded.spec.scored_findings
    reference = reference_evaluation(loaded.model, sets.val, sets.test, findings,
                                     (0.9, 0.9, 0.9), with_speed=False)
    probs = torch_probs(loaded.model, sets.val.inputs)
    assert not np.allclose(probs.sum(axis=1), 1)  # a sigmoid per label, not a softmax
    for k, finding in enumerate(labels[:3]):
        expected = decision_threshold(truth[:, k], probs[:, k], 0.9)
        assert reference.thresholds[k] == pytest.approx(expected)
        assert reference.finding_val[k].tp + reference.finding_val[k].fn == truth[:, k].sum()
        assert reference.finding_test[k].n == 30
