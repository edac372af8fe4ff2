"""Training: deterministic for a seed, writes a loadable checkpoint and a complete model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from converters.__main__ import main
from converters.checkpoint import load_checkpoint
from converters.data.pneumoniamnist import PneumoniaMNIST
from converters.train import TrainConfig, augment, train_model


@pytest.fixture(scope="module")
def small_data(pneumoniamnist) -> PneumoniaMNIST:
    """A real but small slice so that training takes seconds: 512 train, full val."""
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(pneumoniamnist.train), 512, replace=False))
    return PneumoniaMNIST(pneumoniamnist.path, pneumoniamnist.md5,
                          pneumoniamnist.train.take(idx), pneumoniamnist.val, pneumoniamnist.test)


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


def _neutral(**kw) -> TrainConfig:
    """Only the augmentation named in ``kw`` (no affine move, no brightness/contrast)."""
    return _cfg(rotate_deg=0.0, translate=0.0, scale=0.0, brightness=0.0, contrast=0.0, **kw)


@pytest.fixture(scope="module")
def xrays(data_dir) -> torch.Tensor:
    """16 real Kermany X-rays at 128 px in [-1, 1], as the clinical model trains on them."""
    from converters.data.kermany import TRAIN_FOLDER
    from runtime.contract.manifest import Preprocessing
    from runtime.imaging.decode import decode_file
    from runtime.preprocess.cpu import normalize, to_model_pixels

    spec = Preprocessing(size=128, crop="none")
    paths = sorted((data_dir / TRAIN_FOLDER).rglob("*.jpeg"))[::300][:16]
    images = np.stack([to_model_pixels(decode_file(path).pixels, spec) for path in paths])
    return torch.from_numpy(normalize(images, spec))


def test_extra_augmentations_off_keep_the_random_stream(xrays):
    """Recipes without gamma/low-res/cutout (the tiny model's) draw exactly what they drew
    before those existed, so their shipped checkpoints still reproduce."""
    plain, with_extras = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    augment(xrays, _cfg(), plain)
    augment(xrays, _cfg(gamma=0.4, lowres=0.5, erase=0.5), with_extras)
    untouched = torch.Generator().manual_seed(1)
    torch.rand(6 * len(xrays), generator=untouched)  # angle, zoom, tx, ty, gain, shift
    assert torch.equal(plain.get_state(), untouched.get_state())
    assert not torch.equal(with_extras.get_state(), untouched.get_state())


def test_gamma_changes_exposure_but_keeps_the_order_of_gray_levels(xrays):
    out = augment(xrays, _neutral(gamma=0.4), torch.Generator().manual_seed(0))
    assert not torch.allclose(out, xrays, atol=1e-3)
    assert out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6
    for before, after in zip(xrays, out):  # a monotone map: sorting by either gives one order
        order = torch.argsort(before.flatten(), stable=True)
        assert (after.flatten()[order].diff() >= -1e-4).all()


def test_lowres_softens_the_chosen_images_only(xrays):
    out = augment(xrays, _neutral(lowres=0.5, lowres_min=0.25), torch.Generator().manual_seed(0))

    def edges(batch: torch.Tensor) -> torch.Tensor:  # high-frequency energy per image
        return batch.diff(dim=-1).abs().mean(dim=(1, 2, 3))

    changed = ~torch.isclose(out, xrays, atol=1e-4).flatten(1).all(1)
    assert 0 < changed.sum() < len(xrays)
    assert (edges(out)[changed] < 0.9 * edges(xrays)[changed]).all()


def test_cutout_fills_one_rectangle_with_the_image_mean(xrays):
    out = augment(xrays, _neutral(erase=1.0), torch.Generator().manual_seed(0))
    for before, after in zip(xrays, out):
        erased = ((after - before).abs() > 1e-4)[0]
        rows, cols = erased.any(1).nonzero(), erased.any(0).nonzero()
        box = after[0, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert torch.allclose(box, before.mean().expand_as(box), atol=1e-4)  # one solid box
        assert 0.005 < erased.float().mean() < 0.2


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
