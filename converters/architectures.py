"""Model architectures a checkpoint can name, in a registry (like timm's ``@register_model``).

Every architecture is built only from Conv/BatchNorm/ReLU/pooling/Linear: ops that ONNX,
OpenVINO and INT8 quantization all handle well. A model returns class logits (N, C).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make ``name`` buildable from a checkpoint's metadata."""
    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered")
        _ARCHITECTURES[name] = factory
        return factory
    return decorator


def architecture_names() -> list[str]:
    return sorted(_ARCHITECTURES)


def build_model(name: str, **config) -> nn.Module:
    """Instantiate a registered architecture with its config."""
    if name not in _ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(architecture_names())}")
    return _ARCHITECTURES[name](**config)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@register_architecture("pneumonia_cnn")
class PneumoniaCNN(nn.Module):
    """Compact VGG-style CNN for 28x28 X-rays: three stages of two 3x3 convs, global pooling."""

    def __init__(self, width: int = 32, num_classes: int = 2, dropout: float = 0.2,
                 in_channels: int = 1):
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, w1), conv_bn_relu(w1, w1), nn.MaxPool2d(2),
            conv_bn_relu(w1, w2), conv_bn_relu(w2, w2), nn.MaxPool2d(2),
            conv_bn_relu(w2, w3), conv_bn_relu(w3, w3),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(w3, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


class WithSoftmax(nn.Module):
    """Wrap a logits model so that its output is class probabilities (what bundles ship)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates x 2 per image for Conv2d and Linear layers (forward hooks)."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * kernel * out[0].numel()

    def linear_hook(module: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for hook in hooks:
        hook.remove()
    return total
