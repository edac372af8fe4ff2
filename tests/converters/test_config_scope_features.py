"""The scope guard's features of a config's network, found without a build: the input of the last
``nn.Linear`` by a forward hook (PyTorch) or of the final Gemm/MatMul by the graph (ONNX), equal to
the network's own pooled features on real X-rays; and, where none can be taken, why in plain words
(the build prints it and judges scope by the rules only)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from converters.config import features as scope_features
from converters.config.features import FeatureTap, find_classifier, with_scope_features
from converters.config.for_build import build_inputs, classifier_of
from tests.converters.test_model_config_build import Tiny, _config, _export, xrays  # noqa: F401
from tests.converters.vision import vision


def _shaped(channels: int, size: int, count: int = 2) -> SimpleNamespace:
    """The two things the search reads of a config: the input shape and the output count."""
    return SimpleNamespace(input=SimpleNamespace(shape=(channels, size, size)),
                           output=SimpleNamespace(count=count))


class ConvClassifier(nn.Module):
    """Scores made by a 1x1 convolution and a global average (SqueezeNet's head): no Linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TwoHeads(Tiny):
    """Two linear heads on the same features, averaged."""

    def __init__(self):
        super().__init__(2)
        self.other = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.net[:4](x)
        return (self.net[4](pooled) + self.other(pooled)) / 2


def test_a_torchvision_resnet_gives_its_pooled_features_through_a_hook(xrays):  # noqa: F811
    models = vision("torchvision.models")
    network = models.resnet18(num_classes=1).eval()
    config = SimpleNamespace(input=SimpleNamespace(shape=(3, 64, 64)),
                             output=SimpleNamespace(count=1, task="binary", kind="logits"))
    tapped, why = with_scope_features(classifier_of(network, config.output), config)
    assert why is None and isinstance(tapped, FeatureTap)
    assert tapped.layer == "network.fc" and tapped.feature_widths == [512]
    assert tapped.returns_probabilities  # the binary head's probabilities: no second softmax
    batch = xrays.repeat(1, 3, 1, 1)
    with torch.inference_mode():
        probabilities, features = tapped.logits_and_features(batch)
        pooled = torch.flatten(network.avgpool(network.layer4(network.layer3(network.layer2(
            network.layer1(network.maxpool(network.relu(network.bn1(network.conv1(batch))))))))), 1)
        torch.testing.assert_close(features, pooled)
        torch.testing.assert_close(probabilities, tapped(batch))  # the same answers as unwrapped
    assert not any(module._forward_pre_hooks for module in network.modules())  # nothing left


def test_the_kits_own_architecture_keeps_every_conv_block(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    loaded, _sets = build_inputs(_config(tmp_path), tmp_path / "work")
    assert not isinstance(loaded.model, FeatureTap) and loaded.no_scope_features is None
    assert len(loaded.model.feature_widths) > 1


@pytest.mark.parametrize(("network", "why"), [
    (ConvClassifier(), r"calls no nn\.Linear in forward"),
    (TwoHeads(), r"several heads \(net\.4, other\)"),
    (torch.jit.trace(Tiny(2).eval(), torch.zeros(1, 1, 64, 64)), r"TorchScript .* compiled"),
])
def test_a_network_without_one_linear_classifier_gets_a_reason(network, why):
    found = find_classifier(network.eval(), _shaped(1, 64))
    assert isinstance(found, str)
    assert __import__("re").search(why, found), found


def test_features_wider_than_the_limit_are_refused_with_the_size(monkeypatch):
    monkeypatch.setattr(scope_features, "MAX_FEATURES", 3)
    network, why = with_scope_features(Tiny(2).eval(), _shaped(1, 64))
    assert not isinstance(network, FeatureTap)
    assert "reads 4 features" in why and "at most 3" in why


def test_a_config_without_a_linear_classifier_says_the_rules_judge_and_why(tmp_path, monkeypatch,
                                                                           data_dir):
    from converters.build import _scope_guard

    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    (tmp_path / "convnet.py").write_text(
        "from tests.converters.test_config_scope_features import ConvClassifier\n\n"
        "def build():\n    return ConvClassifier()\n")
    loaded, _sets = build_inputs(_config(tmp_path, network={"factory": "convnet:build"}),
                                 tmp_path / "work")
    assert "calls no nn.Linear" in loaded.no_scope_features
    said: list[str] = []
    workspace = SimpleNamespace(loaded=loaded, scope_reference=lambda: None, say=said.append)
    assert _scope_guard(workspace, SimpleNamespace(name="gpu"), {}) == (None, None)
    [line] = said
    assert "no feature-space scope guard (the network calls no nn.Linear" in line
    assert line.endswith("scope is judged by the rules only")


def test_an_onnx_graph_gives_the_input_of_its_final_gemm(tmp_path, xrays, monkeypatch,  # noqa: F811
                                                         data_dir):
    from converters.config.onnx_source import OnnxClassifier, prepare_onnx_network

    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    module = Tiny(2).eval()
    _export(module, tmp_path / "net.onnx", dynamic=True)
    prepared, why = prepare_onnx_network(_config(tmp_path, network={"onnx": "net.onnx"}),
                                         tmp_path / "prepared.onnx")
    classifier = OnnxClassifier(prepared, why)
    assert why is None and classifier.feature_widths == [4]
    batch = nn.functional.interpolate(xrays, size=128)
    probabilities, features = classifier.logits_and_features(batch)
    with torch.no_grad():
        torch.testing.assert_close(features, module.net[:4](batch), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(probabilities, torch.softmax(module(batch), 1), atol=1e-6,
                                   rtol=1e-5)


def test_an_onnx_graph_without_a_gemm_classifier_gets_a_reason(tmp_path, monkeypatch, data_dir):
    from converters.config.onnx_source import OnnxClassifier, prepare_onnx_network

    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    _export(ConvClassifier(), tmp_path / "net.onnx", dynamic=True)
    prepared, why = prepare_onnx_network(_config(tmp_path, network={"onnx": "net.onnx"}),
                                         tmp_path / "prepared.onnx")
    assert why.startswith("its scores come from a ") and "not from a Gemm or MatMul" in why
    classifier = OnnxClassifier(prepared, why)
    assert classifier.feature_widths == [] and classifier.no_scope_features == why
    out = classifier(torch.zeros(2, 1, 128, 128)).numpy()
    assert np.allclose(out.sum(axis=1), 1.0)  # still the probabilities, with no features output
    assert Path(prepared).is_file()
