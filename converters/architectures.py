"""Model architectures a checkpoint can name, in a registry (like timm's ``@register_model``).

Every architecture is built only from Conv/BatchNorm/ReLU/pooling/Linear: ops that ONNX,
OpenVINO and INT8 quantization all handle well. A model returns class logits (N, C); its
``logits_and_features(x)`` returns them, in one pass, with the scope guard's feature space
(exported as the graph's second output): the global average of every conv block's output,
concatenated from the first block to the last (the last is what the classifier reads). Its
``feature_widths`` lists the blocks' widths, so the guard can model each block on its own (Lee
et al. 2018's feature ensemble: low-level blocks see texture and intensity, the last one sees
what the classifier sees).
"""

from __future__ import annotations

from collections.abc import Callable

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


def block_width(block: nn.Module) -> int:
    """The channel count a conv block puts out (that of its last BatchNorm)."""
    return [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


def run_blocks(blocks: list[nn.Module], pool: nn.Module, x: torch.Tensor
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``blocks`` in order; the output and the pooled (N, C) output of every conv block
    (max-pooling layers are run but not recorded)."""
    pooled = []
    for block in blocks:
        x = block(x)
        if not isinstance(block, nn.MaxPool2d):
            pooled.append(pool(x).flatten(1))
    return x, pooled


def conv_blocks(blocks: list[nn.Module]) -> list[nn.Module]:
    return [b for b in blocks if not isinstance(b, nn.MaxPool2d)]


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
        self.feature_widths = [block_width(b) for b in conv_blocks(list(self.features))]

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, pooled = run_blocks(list(self.features), self.pool, x)
        return self.head(pooled[-1]), torch.cat(pooled, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[0]


class WithSoftmax(nn.Module):
    """Wrap a logits model so that its output is class probabilities (what bundles ship)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


class WithSoftmaxAndFeatures(nn.Module):
    """(class probabilities, scope features): what bundles ship when the model has a
    ``logits_and_features`` method; the probabilities are the same as :func:`to_probabilities`'s
    (no softmax for a model that says it ``returns_probabilities``: a model config's head)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.softmax = not getattr(model, "returns_probabilities", False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, features = self.model.logits_and_features(x)
        return (torch.softmax(scores, dim=1) if self.softmax else scores), features


def to_probabilities(model: nn.Module) -> nn.Module:
    """``model`` with class probabilities out: wrapped in :class:`WithSoftmax`, unless it says
    it already returns probabilities (``returns_probabilities``: a model config's head)."""
    return model if getattr(model, "returns_probabilities", False) else WithSoftmax(model)


def has_scope_features(model: nn.Module) -> bool:
    """True when ``model`` exposes its scope features and their block widths (every registered
    architecture)."""
    return callable(getattr(model, "logits_and_features", None)) and \
        bool(getattr(model, "feature_widths", None))


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


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv/BN, identity (or 1x1 conv/BN projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@register_architecture("resnet18_small")
class ResNet18Small(nn.Module):
    """ResNet-18 layout (BasicBlock x [2, 2, 2, 2]) for small 1-channel X-rays (e.g. 64x64).

    The stem is a 3x3 stride-1 conv without max-pooling (the usual change for small inputs);
    ``width`` is the channel count of the first stage (64 in the original ResNet-18).
    """

    def __init__(self, width: int = 64, num_classes: int = 2, in_channels: int = 1,
                 blocks: tuple[int, ...] | list[int] = (2, 2, 2, 2)):
        super().__init__()
        self.stem = conv_bn_relu(in_channels, width)
        stages, c_in = [], width
        for index, count in enumerate(blocks):
            c_out = width * 2 ** index
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                stages.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in, num_classes))
        self.feature_widths = [block_width(b) for b in [self.stem, *self.stages]]

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, pooled = run_blocks([self.stem, *self.stages], self.pool, x)
        return self.head(pooled[-1]), torch.cat(pooled, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[0]


@register_architecture("ensemble")
class Ensemble(nn.Module):
    """Several registered models averaged in logit space; exports as one graph.

    ``members`` is a list of ``{"architecture": name, "config": {...}}``, so the checkpoint's
    metadata still fully describes the model.
    """

    def __init__(self, members: list[dict], num_classes: int = 2):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(build_model(m["architecture"], **m["config"]) for m in members)
        self.num_classes = num_classes
        self.feature_widths = [w for m in self.members for w in m.feature_widths]

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean logits, and the members' scope features concatenated."""
        outs = [member.logits_and_features(x) for member in self.members]
        return (torch.stack([logits for logits, _ in outs], 0).mean(0),
                torch.cat([features for _, features in outs], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[0]


@register_architecture("clinical_cnn")
class ClinicalCNN(nn.Module):
    """VGG-style CNN for clinical-resolution (128-224 px) grayscale X-rays.

    A stride-2 stem, then stages of 3x3 conv/BN/ReLU separated by max-pooling, channels doubling
    from ``width``; global average pooling and a linear head. The logits are divided by
    ``temperature`` (fitted on validation after training), so the exported graph's softmax gives
    calibrated probabilities; ranking and AUC do not depend on it.
    """

    def __init__(self, width: int = 16, depths: tuple[int, ...] | list[int] = (1, 2, 2, 2),
                 num_classes: int = 2, dropout: float = 0.2, temperature: float = 1.0,
                 in_channels: int = 1):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        layers: list[nn.Module] = [conv_bn_relu(in_channels, width, stride=2)]
        c_in = width
        for index, depth in enumerate(depths):
            c_out = width * 2 ** (index + 1)
            for _ in range(depth):
                layers.append(conv_bn_relu(c_in, c_out))
                c_in = c_out
            if index < len(depths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, num_classes))
        self.temperature = float(temperature)
        self.feature_widths = [block_width(b) for b in conv_blocks(list(self.features))]

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, pooled = run_blocks(list(self.features), self.pool, x)
        logits = self.head(pooled[-1])
        return (logits if self.temperature == 1.0 else logits / self.temperature), \
            torch.cat(pooled, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[0]
