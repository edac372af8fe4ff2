"""The examples/ configs: their weights made by examples/make_weights.py into a temporary
folder, the config checked, the network loaded and run on real full-size X-rays. Needs
torchvision (skipped where it is not installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from converters.__main__ import main
from tests.converters.model_configs import REPO
from tests.converters.vision import vision

XRAYS = ("NORMAL/IM-0172-0001.jpeg", "PNEUMONIA/person1031_virus_1723.jpeg")


def make_weights():
    spec = importlib.util.spec_from_file_location("make_weights",
                                                  REPO / "examples" / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_input(path: Path, config) -> np.ndarray:
    """A decoded X-ray through the config's input: resized gray, scaled, repeated to its
    channels, normalised per channel."""
    from runtime.contract.manifest import Preprocessing
    from runtime.imaging.decode import decode_file
    from runtime.preprocess.cpu import to_model_pixels

    i = config.input
    gray = to_model_pixels(decode_file(path).pixels, Preprocessing(
        size=i.size[0], crop=i.crop, interpolation=i.interpolation))
    x = np.repeat(gray[None].astype(np.float32) * i.scale, i.channels, axis=0)
    mean, std = (np.array(v, np.float32)[:, None, None] for v in (i.mean, i.std))
    return (x - mean) / std


def test_densenet121_checks_loads_and_runs_on_real_xrays(tmp_path, monkeypatch, data_dir,
                                                        capsys):
    vision("torchvision")
    import torch

    from converters.config.model import load_config
    from converters.config.network import load_network

    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    # loading and running is checked here, not answers: few probe images, no epochs
    [path] = make_weights().make(tmp_path, ["densenet121"], probe_images=32, epochs=0)
    assert main(["config", "--check", str(path), "--load"]) == 0
    out = capsys.readouterr().out
    assert "network     torchvision densenet121(num_classes=2)" in out
    assert "input       3 channels (the gray X-ray repeated), 224x224 px" in out
    assert "mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]" in out
    assert "cxr_samples (one folder per label): 350 images (NORMAL 100, PNEUMONIA 250)" in out
    assert "a blank 3x224x224 image gives (1, 2)" in out
    config = load_config(path)
    network = load_network(config)
    saved = torch.load(tmp_path / "densenet121" / "densenet121.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in network.state_dict().items())
    sample = data_dir / "cxr_samples"
    batch = torch.from_numpy(np.stack([model_input(sample / x, config) for x in XRAYS]))
    assert batch.shape == (2, 3, 224, 224)
    with torch.no_grad():
        logits = network(batch).numpy()
    assert logits.shape == (2, 2) and np.isfinite(logits).all()
    assert np.abs(logits[0] - logits[1]).max() > 1e-4  # the two X-rays reach the network
