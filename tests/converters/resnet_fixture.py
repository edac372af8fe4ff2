"""A second, different architecture for the "any checkpoint" tests: a ResNet-18-style network
at 64x64 (PneumoniaMNIST resized through the runtime's contract).

Backpropagation through a ResNet at 64x64 is slow on two shared CPU cores, so the model is
"trained" cheaply but on real images: batch-norm statistics are collected on training images, then
the classifier head is fitted (logistic regression) on the pooled features of random conv filters.
That is enough to be clearly better than chance; the build gates every artifact against this
model's own FP32 reference, so its absolute accuracy does not matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from converters.architectures import build_model
from converters.checkpoint import ModelSpec, save_checkpoint
from converters.data.pneumoniamnist import PneumoniaMNIST
from runtime.contract.manifest import Preprocessing
from runtime.preprocess.cpu import prepare_batch

RESNET_SPEC = ModelSpec(architecture="resnet18_small", config={"width": 8, "num_classes": 2},
                        preprocessing=Preprocessing(size=64), name="resnet18-small-64")


def make_resnet_checkpoint(data: PneumoniaMNIST, path: Path, images: int = 768,
                           seed: int = 0) -> Path:
    """BN statistics + a fitted linear head on ``images`` real training images."""
    torch.manual_seed(seed)
    model = build_model(RESNET_SPEC.architecture, **RESNET_SPEC.config)
    rng = np.random.default_rng(seed)
    index = rng.choice(len(data.train), size=images, replace=False)
    inputs = torch.from_numpy(prepare_batch(data.train.images[index], RESNET_SPEC.preprocessing))
    labels = torch.from_numpy(data.train.labels[index])
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the batches below
    with torch.no_grad():
        model.train()
        for start in range(0, len(inputs), 128):
            model(inputs[start:start + 128])
        model.eval()
        features = torch.cat([model.pool(model.stages(model.stem(inputs[s:s + 128]))).flatten(1)
                              for s in range(0, len(inputs), 128)])
    mean, std = features.mean(0), features.std(0) + 1e-6
    head = nn.Linear(features.shape[1], 2)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([3.0, 1.0]))  # train split is ~1:3

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(head((features - mean) / std), labels) + 1e-3 * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    linear: nn.Linear = model.head[-1]
    with torch.no_grad():  # fold the feature standardisation into the head
        linear.weight.copy_(head.weight / std)
        linear.bias.copy_(head.bias - (head.weight * mean / std).sum(1))
    return save_checkpoint(model.eval(), RESNET_SPEC, path)
