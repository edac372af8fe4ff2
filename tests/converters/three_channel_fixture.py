"""The shipped reference model rewritten to take three channels, with the same answers.

Each member's first convolution takes the gray X-ray repeated as three channels, normalised with
per-channel ``MEAN``/``STD``; its weights are the one-channel weights times ``std[c] / (3 * 0.5)``.
Then ``sum_c w_c (x - mean[c]) / std[c] = w (x - mean(MEAN)) / 0.5``, which is the original
``w (x - 0.5) / 0.5`` because the three means average 0.5 (zero padding is zero in both). So
the 3-channel model's exact answers are the reference model's, and every place where pixels are
made or shapes are read is tested by comparing the two: a swapped channel, a first-channel-only
normalisation or a 1-channel shape anywhere changes the answers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from converters.architectures import build_model
from converters.checkpoint import load_checkpoint, save_checkpoint

MEAN = (0.45, 0.5, 0.55)
STD = (0.2, 0.25, 0.3)


def make_three_channel_checkpoint(reference: Path, path: Path) -> Path:
    """The reference checkpoint as a 3-channel model (see the module's docstring)."""
    loaded = load_checkpoint(reference)
    one = loaded.spec.preprocessing
    assert one.channels == 1 and one.mean == (0.5,) and one.std == (0.5,)
    assert sum(MEAN) / 3 == 0.5
    config = dict(loaded.spec.config)
    config["members"] = [{**m, "config": {**m["config"], "in_channels": 3}}
                         for m in config["members"]]
    model = build_model(loaded.spec.architecture, **config)
    state = loaded.model.state_dict()
    factor = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1) / (3 * one.std[0])
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            key = f"{name}.weight"
            state[key] = state[key].expand(-1, 3, -1, -1) * factor
    model.load_state_dict(state, strict=True)
    spec = dataclasses.replace(
        loaded.spec, config=config, name=f"{loaded.spec.name}-3ch",
        preprocessing=dataclasses.replace(one, channels=3, mean=MEAN, std=STD))
    return save_checkpoint(model.eval(), spec, path)
