"""Training: deterministic for a seed, writes a loadable checkpoint and a complete model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from converters.__main__ import main
from converters.checkpoint import load_checkpoint
from converters.train import TrainConfig, augment, train_model
from converters.datasets import PneumoniaMNIST, Split


@pytest.fixture(scope="module")
def small_data(pneumoniamnist) -> PneumoniaMNIST:
    """A real but small slice so that training takes seconds: 512 train, full val."""
    train = pneumoniamnist.train
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(train), 512, replace=False))
    return PneumoniaMNIST(pneumoniamnist.path, pneumoniamnist.md5,
                          Split("train", train.images[idx], train.labels[idx]),
                          pneumoniamnist.val, pneumoniamnist.test)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(width=8, members=1, epochs=2, patience=5, batch_size=64, threads=1, device="cpu", **kw)


def test_same_seed_same_weights(small_data):
    a, _, hist_a = train_model(_cfg(seed=3), small_data, progress=False)
    b, _, hist_b = train_model(_cfg(seed=3), small_data, progress=False)
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(wa, wb), name
    assert hist_a["history"] == hist_b["history"]


def test_training_learns_something(small_data):
    _, _, hist = train_model(_cfg(seed=0), small_data, progress=False)
    assert hist["best_val_auc"] > 0.7  # chance is 0.5; 2 short epochs of a tiny net
    assert hist["epochs_run"] == 2


def test_augment_keeps_shape_and_changes_pixels(pneumoniamnist):
    x = torch.from_numpy(pneumoniamnist.train.images[:8]).float()[:, None] / 127.5 - 1.0
    out = augment(x, _cfg(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert not torch.allclose(out, x)


def test_cli_trains_and_writes_card(tmp_path, data_dir, capsys):
    code = main(["train", "--data", str(data_dir), "--out", str(tmp_path), "--name", "tiny",
                 "--width", "4", "--members", "1", "--epochs", "1", "--threads", "1", "--device", "cpu"])
    assert code == 0
    card = json.loads((tmp_path / "tiny.json").read_text())
    assert card["training"]["command"].startswith("python -m converters train --data")
    assert set(card["metrics"]) == {"val", "test"}
    assert card["threshold"]["chosen_on"] == "val"
    assert load_checkpoint(tmp_path / "tiny.safetensors").spec.config["width"] == 4
    assert "wrote" in capsys.readouterr().out


def test_cli_reports_missing_data(tmp_path, capsys):
    assert main(["evaluate", "--data", str(tmp_path / "none.npz")]) == 2
    assert "PneumoniaMNIST not found" in capsys.readouterr().err


def test_cli_reports_missing_checkpoint(tmp_path, data_dir, capsys):
    assert main(["evaluate", "--data", str(data_dir),
                 "--checkpoint", str(tmp_path / "x.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
