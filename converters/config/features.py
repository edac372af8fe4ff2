"""The scope guard's features of a config's PyTorch network: the input of its classifier.

The kit's own architectures offer their features (``logits_and_features``); any other network is
run once on a blank batch with a forward hook on every ``nn.Linear``, and the LAST Linear called
whose output reaches the network's (first) output is taken as the classifier. Its input, the
pooled features (N, C), is what the guard measures: :class:`FeatureTap` wraps the network (never
edits it) and captures that input with a forward pre-hook, so the export gives (probabilities,
features) like the kit's own architectures. Where no such classifier is found (no Linear, a
TorchScript or exported program that Python hooks cannot see into, features that are not (N, C),
several heads), :func:`find_classifier` says why in plain words and the bundle judges scope by the
rules only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from converters.architectures import has_scope_features
from converters.config.model import ModelConfig

#: the widest classifier input the guard measures: its float32 precision matrix is D * D * 4
#: bytes (2048: 16.8 MB, beside a ResNet-50's ~100 MB FP32 graph; VGG's 4096 would be 67 MB)
MAX_FEATURES = 2048


@dataclass(frozen=True)
class Classifier:
    """The Linear layer found (its name inside the wrapped module) and its input width."""

    name: str
    width: int


class FeatureTap(nn.Module):
    """``classifier`` as it is, plus ``logits_and_features``: its output and the input of its
    layer ``layer`` (captured by a forward pre-hook during that call only)."""

    def __init__(self, classifier: nn.Module, found: Classifier):
        super().__init__()
        self.classifier, self.layer = classifier, found.name
        self.feature_widths = [found.width]
        #: what the features are, in words (the manifest's scope guard description)
        self.scope_features = (f"the input of its classifier {found.name} (nn.Linear, "
                               f"{found.width} features), by a forward hook")
        # a ProbabilityHead returns probabilities: the export then adds no softmax
        self.returns_probabilities = bool(getattr(classifier, "returns_probabilities", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen: list[torch.Tensor] = []
        layer = self.classifier.get_submodule(self.layer)
        handle = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            out = self.classifier(x)
        finally:
            handle.remove()
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out, seen[-1]


@dataclass
class _Call:
    name: str
    module: nn.Linear
    inputs: torch.Tensor
    output: torch.Tensor
    feeds: bool = False  # whether the network's output is computed from this call's output


def find_classifier(classifier: nn.Module, config: ModelConfig) -> Classifier | str:
    """The classifier layer of ``classifier`` (the module the build exports), or why none can
    be taken, in plain words (the build prints it beside "scope is judged by the rules only")."""
    if isinstance(classifier, torch.jit.ScriptModule) or _is_scripted(classifier):
        return ("a TorchScript network runs as compiled code, so a Python hook cannot see its "
                "classifier's input; give the network as torchvision, timm or a factory with "
                "its state_dict (or as ONNX) for a feature guard")
    if isinstance(classifier, torch.fx.GraphModule) or _is_exported(classifier):
        return ("a torch.export program has no nn.Linear modules left to hook; give the network "
                "as torchvision, timm or a factory with its state_dict (or as ONNX) for a "
                "feature guard")
    calls = _linear_calls(classifier, config)
    if isinstance(calls, str):
        return calls
    if not calls:
        return ("the network calls no nn.Linear in forward (a convolution or other layer makes "
                "its scores), so there are no pooled features feeding a linear classifier to "
                "measure")
    return _choose(calls, config)


def _is_scripted(module: nn.Module) -> bool:
    return any(isinstance(m, torch.jit.ScriptModule) for m in module.modules())


def _is_exported(module: nn.Module) -> bool:
    return any(isinstance(m, torch.fx.GraphModule) for m in module.modules())


def _linear_calls(classifier: nn.Module, config: ModelConfig) -> list[_Call] | str:
    """Every Linear call of one forward on a blank batch of two, in order, and the output."""
    calls: list[_Call] = []

    def hook(name: str):
        def record(module: nn.Linear, args: tuple, output: torch.Tensor) -> None:
            calls.append(_Call(name, module, args[0], output))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in classifier.named_modules()
               if isinstance(m, nn.Linear)]
    x = torch.zeros(2, *config.input.shape, requires_grad=True)
    try:
        with torch.enable_grad():
            out = classifier.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    out = out[0] if isinstance(out, (tuple, list)) else out
    for call in calls:
        call.feeds = _depends(out, call.output)
    return calls


def _depends(y: torch.Tensor, on: torch.Tensor) -> bool:
    """Whether ``y`` is computed from ``on`` (in its autograd graph)."""
    if not (y.requires_grad and on.requires_grad):
        return False
    grad = torch.autograd.grad(y.sum(), on, allow_unused=True, retain_graph=True)[0]
    return grad is not None


def _choose(calls: list[_Call], config: ModelConfig) -> Classifier | str:
    feeding = [c for c in calls if c.feeds]
    if not feeding:
        return ("no nn.Linear's output reaches the network's output, so its classifier is not "
                "a Linear layer whose input could be measured")
    last = feeding[-1]
    count = config.output.count
    times = sum(c.module is last.module for c in calls)
    if times > 1:
        return (f"its last Linear ({last.name}) is called {times} times in one forward, so "
                "which call's input describes the image is unclear")
    if last.inputs.ndim != 2:
        return (f"the input of its last Linear ({last.name}) has shape "
                f"{tuple(last.inputs.shape)}, not pooled features (N, C)")
    if last.module.out_features != count:
        return (f"its last Linear ({last.name}) gives {last.module.out_features} values and the "
                f"network {count}, so it is not the classifier")
    parallel = [c.name for c in feeding[:-1] if c.module.out_features == count
                and not _depends(last.inputs, c.output)]
    if parallel:
        return (f"several heads ({', '.join(parallel + [last.name])}) make its output, so no one "
                "layer's input describes what the network answers")
    return Classifier(last.name, int(last.inputs.shape[1]))


def with_scope_features(classifier: nn.Module, config: ModelConfig) -> tuple[nn.Module, str | None]:
    """``classifier`` ready to give the scope guard's features: as it is when it offers them
    (the kit's own architectures), else in a :class:`FeatureTap` on its classifier's input; or as
    it is with why no features can be had."""
    if has_scope_features(classifier):
        return classifier, None
    found = find_classifier(classifier, config)
    if isinstance(found, str):
        return classifier, found
    if found.width > MAX_FEATURES:
        return classifier, too_wide(found.name, found.width)
    return FeatureTap(classifier, found), None


def too_wide(layer: str, width: int) -> str:
    """Why a classifier reading more than :data:`MAX_FEATURES` features gets no guard."""
    megabytes = width * width * 4 / 1e6
    return (f"its classifier ({layer}) reads {width} features; their reference (a {width} x "
            f"{width} precision matrix, {megabytes:.0f} MB) would outweigh the model in the "
            f"bundle, so the guard takes at most {MAX_FEATURES}")
