"""Loading a config's network from every source kind this machine can install, checked on real
X-rays against the network it came from; weights that need unpickling are refused unless
trusted. torchvision and timm tests run where those libraries are installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from converters.config.model import load_config
from converters.config.network import OnnxNetwork, load_network, run_once
from converters.config.tables import ConfigError
from runtime.contract.manifest import Preprocessing
from runtime.imaging.decode import decode_file
from runtime.preprocess.cpu import normalize, to_model_pixels
from tests.converters.model_configs import CLINICAL_WEIGHTS, REPO, base, changed, write
from tests.converters.vision import vision

XRAYS = ("NORMAL/IM-0001-0001.jpeg", "PNEUMONIA/person1_virus_6.jpeg")
FACTORY_MODULE = '''
from torch import nn


class TwoLayer(nn.Module):
    def __init__(self, width=4, channels=1, classes=2):
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def build(width=4, channels=1, classes=2):
    return TwoLayer(width, channels, classes)


def not_a_network():
    return "a string"
'''


@pytest.fixture(autouse=True)
def data_env(monkeypatch, data_dir: Path) -> Path:
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture(scope="module")
def xrays(data_dir: Path) -> torch.Tensor:
    """Two real X-rays (a normal, a viral pneumonia) as the clinical model's input."""
    spec = Preprocessing(size=128, crop="none")
    pixels = np.stack([to_model_pixels(decode_file(data_dir / "kermany_test_224" / x).pixels,
                                       spec) for x in XRAYS])
    return torch.from_numpy(normalize(pixels, spec))


@pytest.fixture(scope="module")
def clinical() -> nn.Module:
    """The shipped clinical network, through the kit's checkpoint loader."""
    from converters.checkpoint import load_checkpoint

    return load_checkpoint(CLINICAL_WEIGHTS).model


def config_with(folder: Path, **changes):
    return load_config(write(folder, changed(base(), **changes)))


def outputs(network: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return network(x).numpy()


def test_factory_with_safetensors_weights_is_the_shipped_model(tmp_path, xrays, clinical):
    network = load_network(config_with(tmp_path))
    assert not network.training
    expected = outputs(clinical, xrays)
    np.testing.assert_array_equal(outputs(network, xrays), expected)
    assert expected[0].argmax() == 0 and expected[1].argmax() == 1  # it reads the X-rays


def test_the_reference_configs_load_their_checkpoints(xrays):
    network = load_network(load_config(REPO / "models" / "clinical" / "model.toml"))
    assert outputs(network, xrays).shape == (2, 2)
    assert run_once(load_config(REPO / "models" / "reference" / "model.toml")) == (1, 2)


def factory_config(folder: Path, **changes):
    (folder / "my_nets.py").parent.mkdir(parents=True, exist_ok=True)
    (folder / "my_nets.py").write_text(FACTORY_MODULE)
    return config_with(folder, network={"factory": "my_nets:build", "kwargs": {"width": 3},
                                        **changes})


def test_factory_beside_the_config_with_weights_in_every_form(tmp_path, xrays):
    sys.modules.pop("my_nets", None)
    random = load_network(factory_config(tmp_path))
    assert str(tmp_path) not in sys.path  # the import path is left as it was
    assert run_once(factory_config(tmp_path)) == (1, 2)
    state = random.state_dict()
    forms = {"plain.pt": state, "nested.pth": {"state_dict": state, "epoch": 7, "lr": 0.1}}
    for name, content in forms.items():
        torch.save(content, tmp_path / name)
        loaded = load_network(factory_config(tmp_path, weights=name))
        np.testing.assert_array_equal(outputs(loaded, xrays), outputs(random, xrays))
    from safetensors.torch import save_file

    save_file(state, tmp_path / "w.safetensors")
    loaded = load_network(factory_config(tmp_path, weights="w.safetensors"))
    np.testing.assert_array_equal(outputs(loaded, xrays), outputs(random, xrays))


def test_pickled_weights_load_only_when_trusted(tmp_path, xrays):
    sys.modules.pop("my_nets", None)
    module = load_network(factory_config(tmp_path))
    torch.save(module, tmp_path / "whole.pt")  # a full pickled module
    config = factory_config(tmp_path, weights="whole.pt")
    with pytest.raises(ConfigError) as error:
        load_network(config)
    message = str(error.value)
    assert message.startswith(f"[network] weights: {tmp_path / 'whole.pt'} holds Python objects "
                              "beyond tensors (torch.load with weights_only=True refused it")
    assert "runs whatever code it carries" in message and "pass --trust-pickle" in message
    trusted = load_network(config, trust_pickle=True)
    np.testing.assert_array_equal(outputs(trusted, xrays), outputs(module, xrays))


def test_factory_refusals(tmp_path):
    sys.modules.pop("my_nets", None)
    with pytest.raises(ConfigError, match=r"\[network\] factory: my_nets has no function 'nope'"):
        load_network(factory_config(tmp_path, factory="my_nets:nope"))
    with pytest.raises(ConfigError, match=r"my_nets:not_a_network returned str, not a "
                                          r"torch.nn.Module"):
        load_network(factory_config(tmp_path, factory="my_nets:not_a_network", kwargs={}))
    with pytest.raises(ConfigError, match=r"\[network\] factory: cannot import no_such_pkg.nets "
                                          r".* install its package or put it beside the config"):
        load_network(factory_config(tmp_path, factory="no_such_pkg.nets:build"))
    with pytest.raises(ConfigError, match=r"\[network\] kwargs: factory my_nets:build\(depth=3\) "
                                          r"failed: .*depth"):
        load_network(factory_config(tmp_path, kwargs={"depth": 3}))


def test_weights_that_do_not_fit_or_are_not_weights(tmp_path):
    with pytest.raises(ConfigError, match=r"\[network\] weights: clinical_cnn.safetensors does "
                                          r"not fit factory .*build_model\(.*width=16.*\): .*check "
                                          r"that kwargs"):
        load_network(config_with(tmp_path, network__kwargs={**base()["network"]["kwargs"],
                                                             "width": 16}))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"junk.pt is not a file torch.save wrote"):
        load_network(config_with(tmp_path, network__weights="junk.pt"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ConfigError, match=r"junk.safetensors is not a readable safetensors"):
        load_network(config_with(tmp_path, network__weights="junk.safetensors"))
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pt")
    with pytest.raises(ConfigError, match=r"no_tensors.pt holds dict, not a state_dict"):
        load_network(config_with(tmp_path, network__weights="no_tensors.pt"))


def test_torchscript(tmp_path, xrays, clinical):
    torch.jit.save(torch.jit.trace(clinical, xrays), tmp_path / "net.pt")
    network = load_network(config_with(tmp_path, network={"torchscript": "net.pt"}))
    np.testing.assert_allclose(outputs(network, xrays), outputs(clinical, xrays), atol=1e-5)
    torch.save(clinical.state_dict(), tmp_path / "state.pt")
    with pytest.raises(ConfigError, match=r"\[network\] torchscript: .*state.pt is not a "
                                          r"TorchScript file"):
        load_network(config_with(tmp_path, network={"torchscript": "state.pt"}))


def test_exported_program(tmp_path, xrays, clinical):
    program = torch.export.export(clinical, (xrays,))
    torch.export.save(program, tmp_path / "net.pt2")
    network = load_network(config_with(tmp_path, network={"exported": "net.pt2"}))
    np.testing.assert_allclose(outputs(network, xrays), outputs(clinical, xrays), atol=1e-5)
    clinical.train()
    try:
        torch.export.save(torch.export.export(clinical, (xrays,)), tmp_path / "training.pt2")
    finally:
        clinical.eval()
    with pytest.raises(ConfigError, match=r"training.pt2 was exported in training mode .* "
                                          r"export it again after model.eval\(\)"):
        load_network(config_with(tmp_path, network={"exported": "training.pt2"}))
    (tmp_path / "bad.pt2").write_bytes(b"nothing")
    with pytest.raises(ConfigError, match=r"\[network\] exported: .*bad.pt2 is not a "
                                          r"torch.export archive"):
        load_network(config_with(tmp_path, network={"exported": "bad.pt2"}))


def test_onnx_needs_no_torch(tmp_path, xrays, clinical):
    torch.onnx.export(clinical, (xrays,), str(tmp_path / "net.onnx"), input_names=["image"],
                      dynamic_axes={"image": {0: "batch"}}, dynamo=False)
    config = config_with(tmp_path, network={"onnx": "net.onnx"})
    assert load_network(config) == OnnxNetwork(tmp_path / "net.onnx")
    blocked = ("import sys; sys.modules['torch'] = None\n"
               "from converters.config.model import load_config\n"
               "from converters.config.network import run_once\n"
               f"print(run_once(load_config({str(config.path)!r})))\n"
               "print('torch' in sys.modules and sys.modules['torch'] is not None)")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(1,", "2)", "False"]


def test_run_once_checks_the_input_and_the_output_count(tmp_path):
    config = config_with(tmp_path, output__labels=["NORMAL", "BACTERIAL", "VIRAL"],
                         output__findings=["BACTERIAL", "VIRAL"],
                         data__val="${CXR_DATA_DIR}/kermany_test_224/manifest.csv",
                         data__test="${CXR_DATA_DIR}/kermany_test_224/manifest.csv")
    with pytest.raises(ConfigError, match=r"\[output\] labels: the network returns shape \(1, 2\)"
                                          r" per batch of one; a multiclass model with 3 labels "
                                          r"must return \(1, 3\)"):
        run_once(config)
    config = config_with(tmp_path, input__channels=3)
    with pytest.raises(ConfigError, match=r"\[input\]: the network refused a \(3, 128, 128\) "
                                          r"image .*check channels and size"):
        run_once(config)


def saved(module: nn.Module, path: Path) -> nn.Module:
    torch.save(module.state_dict(), path)
    return module.eval()


def test_torchvision(tmp_path, xrays):
    models = vision("torchvision.models")
    torch.manual_seed(0)
    source = saved(models.resnet18(weights=None, num_classes=2), tmp_path / "resnet18.pt")
    three = xrays.repeat(1, 3, 1, 1)
    network = load_network(config_with(tmp_path, input__channels=3, network={
        "torchvision": "resnet18", "kwargs": {"num_classes": 2}, "weights": "resnet18.pt"}))
    np.testing.assert_array_equal(outputs(network, three), outputs(source, three))
    with pytest.raises(ConfigError, match=r"resnet18.pt does not fit torchvision "
                                          r"resnet18\(num_classes=3\)"):
        load_network(config_with(tmp_path, network={"torchvision": "resnet18", "kwargs": {
            "num_classes": 3}, "weights": "resnet18.pt"}))
    with pytest.raises(ConfigError, match=r"\[network\] torchvision: no model 'resnet81'; did you "
                                          r"mean .*resnet18"):
        load_network(config_with(tmp_path, network={"torchvision": "resnet81",
                                                     "weights": "resnet18.pt"}))


def test_timm(tmp_path, xrays):
    timm = vision("timm")
    torch.manual_seed(0)
    source = saved(timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=2,
                                     in_chans=1), tmp_path / "mobilenet.pt")
    kwargs = {"num_classes": 2, "in_chans": 1}
    network = load_network(config_with(tmp_path, network={
        "timm": "mobilenetv3_small_050", "kwargs": kwargs, "weights": "mobilenet.pt"}))
    np.testing.assert_array_equal(outputs(network, xrays), outputs(source, xrays))
    with pytest.raises(ConfigError, match=r"\[network\] timm: no model 'mobilenetv3_smal_050'"):
        load_network(config_with(tmp_path, network={"timm": "mobilenetv3_smal_050",
                                                     "weights": "mobilenet.pt"}))
