"""The network a config names, loaded: a ``torch.nn.Module`` in eval mode, or an ONNX file.

torchvision and timm models are built by name with ``kwargs`` (never pretrained: nothing is
downloaded) and get the config's state_dict; a factory is imported and called; TorchScript and
``torch.export`` files load as they are. An ONNX network needs no PyTorch. A weights file that
holds more than tensors (a pickled module, a training checkpoint with Python objects) loads only
with ``trust_pickle``, because unpickling runs code from the file.
"""

from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.config.model import ModelConfig, Network
from converters.config.tables import ConfigError
from converters.config.vision_libraries import import_vision

if TYPE_CHECKING:
    from torch import nn

#: keys under which training scripts commonly nest the state_dict in a checkpoint dict
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


@dataclass(frozen=True)
class OnnxNetwork:
    """An ONNX network: the file, run as it is (ONNX Runtime's CPU provider is its reference)."""

    path: Path


def pickle_refusal(path: Path, reason: str) -> str:
    return (f"[network] weights: {path} holds Python objects beyond tensors (torch.load with "
            f"weights_only=True refused it: {reason}). Unpickling such a file runs whatever code "
            "it carries, so a file from an untrusted source can take over this machine. Re-save "
            "only the tensors (torch.save(model.state_dict(), path), or safetensors), or, if you "
            "trust where the file came from, pass --trust-pickle")


def load_network(config: ModelConfig, trust_pickle: bool = False) -> nn.Module | OnnxNetwork:
    """The config's network, ready to run: an eval-mode module, or an :class:`OnnxNetwork`."""
    network = config.network
    if network.source == "onnx":
        return OnnxNetwork(network.file)
    if network.source == "torchscript":
        module = _torchscript(network.file)
    elif network.source == "exported":
        return _exported(network.file)  # runs as it was captured (eval mode: checked)
    else:
        module = _build(network, config.folder)
        if network.weights is not None:
            _load_weights(module, network, read_state_dict(network.weights, trust_pickle))
    return module.eval()


def describe_builder(network: Network) -> str:
    """``densenet121(num_classes=2)``: the builder call the config asks for."""
    kwargs = ", ".join(f"{k}={_short(v)}" for k, v in network.kwargs.items())
    return f"{network.target}({kwargs})"


def _short(value: Any) -> str:
    """``repr`` of a kwarg, or for a long list/table how many items it holds."""
    text = repr(value)
    if len(text) <= 40 or not isinstance(value, (list, dict)):
        return text
    return f"<{'list' if isinstance(value, list) else 'table'} of {len(value)}>"


def _build(network: Network, folder: Path) -> nn.Module:
    from torch import nn

    where = f"[network] {network.source}"
    try:
        if network.source == "torchvision":
            module = _torchvision(network)
        elif network.source == "timm":
            module = _timm(network)
        else:
            module = _factory(network, folder)
    except TypeError as exc:
        raise ConfigError(f"[network] kwargs: {network.source} {describe_builder(network)} "
                          f"failed: {exc}; check the kwargs") from exc
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{where}: {network.target} returned {type(module).__name__}, not a "
                          "torch.nn.Module")
    return module


def _missing_library(source: str) -> ConfigError:
    return ConfigError(f"[network] {source}: {source} is not installed; install the build "
                       f"extra: pip install -c constraints.txt -e '.[convert]'")


def _torchvision(network: Network) -> nn.Module:
    try:
        models = import_vision("torchvision.models")
    except ImportError as exc:
        raise _missing_library("torchvision") from exc
    known = models.list_models()
    if network.target not in known:
        raise ConfigError(f"[network] torchvision: no model {network.target!r}; "
                          f"{_closest(network.target, known)}")
    return models.get_model(network.target, weights=None, **network.kwargs)


def _timm(network: Network) -> nn.Module:
    try:
        timm = import_vision("timm")
    except ImportError as exc:
        raise _missing_library("timm") from exc
    if not timm.is_model(network.target):
        raise ConfigError(f"[network] timm: no model {network.target!r}; "
                          f"{_closest(network.target, timm.list_models())}")
    return timm.create_model(network.target, pretrained=False, **network.kwargs)


def _closest(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=3)
    return f"did you mean {', '.join(close)}?" if close else f"{len(known)} models are known"


def _factory(network: Network, folder: Path) -> Any:
    """Import ``module:function`` (the config's folder first on the import path) and call it."""
    module_name, function = network.target.split(":")
    sys.path.insert(0, str(folder))
    try:
        module = import_vision(module_name)  # torchxrayvision imports torchvision
    except ImportError as exc:
        raise ConfigError(f"[network] factory: cannot import {module_name} ({exc}); install its "
                          f"package or put it beside the config ({folder})") from exc
    finally:
        sys.path.remove(str(folder))
    build = getattr(module, function, None)
    if not callable(build):
        raise ConfigError(f"[network] factory: {module_name} has no function {function!r}")
    return build(**network.kwargs)


def read_state_dict(path: Path, trust_pickle: bool = False) -> dict[str, Any]:
    """The tensors of a weights file: safetensors, or a torch.save'd state_dict (possibly nested
    in a checkpoint dict, or a whole pickled module when ``trust_pickle``)."""
    import torch

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ConfigError(f"[network] weights: {path} is not a readable safetensors file "
                              f"({exc})") from exc
    if not _torch_saved(path):
        raise ConfigError(f"[network] weights: {path} is not a file torch.save wrote (neither "
                          "its zip archive nor a pickle); save the weights with "
                          "torch.save(model.state_dict(), path)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise ConfigError(pickle_refusal(path, _unpickler_reason(exc))) from None
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a damaged archive
        raise ConfigError(f"[network] weights: {path} is not a file torch.save wrote ({exc})"
                          ) from exc
    return _tensors_of(loaded, path)


def _torch_saved(path: Path) -> bool:
    """A torch.save zip archive, or a legacy one (a pickle: protocol byte first)."""
    import zipfile

    with path.open("rb") as handle:
        first = handle.read(1)
    return zipfile.is_zipfile(path) or first == b"\x80"


def _unpickler_reason(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names what the file holds."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported global" in line or "WeightsUnpickler" in line]
    return (named or lines or ["unpickling refused"])[0]


def _tensors_of(loaded: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(loaded, torch.nn.Module):
        return loaded.state_dict()
    if isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor)
                                                   for v in loaded.values()):
        return loaded
    if isinstance(loaded, dict):
        for key in STATE_DICT_KEYS:
            if key in loaded:
                return _tensors_of(loaded[key], path)
    raise ConfigError(f"[network] weights: {path} holds {type(loaded).__name__}, not a "
                      "state_dict; save one with torch.save(model.state_dict(), path)")


def _load_weights(module: nn.Module, network: Network, state: dict[str, Any]) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:4])
        raise ConfigError(f"[network] weights: {network.weights.name} does not fit "
                          f"{network.source} {describe_builder(network)}: {detail}; check that "
                          "kwargs (e.g. num_classes, in_chans) match the trained network") from exc


def _torchscript(path: Path) -> nn.Module:
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError by cause
        raise ConfigError(f"[network] torchscript: {path} is not a TorchScript file "
                          f"({str(exc).splitlines()[0]}); save one with "
                          "torch.jit.save(torch.jit.trace(model, example), path)") from exc


def _exported(path: Path) -> nn.Module:
    import torch

    try:
        module = torch.export.load(str(path)).module()
    except Exception as exc:  # torch raises several types for a bad archive
        raise ConfigError(f"[network] exported: {path} is not a torch.export archive "
                          f"({str(exc).splitlines()[0]}); save one with "
                          "torch.export.save(torch.export.export(model, (example,)), path)"
                          ) from exc
    if _captured_in_training(module):
        raise ConfigError(f"[network] exported: {path} was exported in training mode (its batch "
                          "norm or dropout runs as in training, and an exported program cannot "
                          "be switched to eval); export it again after model.eval()")
    return module  # an exported program runs as captured: torch refuses .eval() on it


def _captured_in_training(module: nn.Module) -> bool:
    """Whether an exported graph holds batch norm or dropout called with training=True."""
    positions = {"aten.batch_norm.default": 5, "aten.dropout.default": 2}
    for node in module.graph.nodes:
        index = positions.get(str(node.target))
        if index is not None and len(node.args) > index and node.args[index] is True:
            return True
    return False


def run_once(config: ModelConfig, trust_pickle: bool = False) -> tuple[int, ...]:
    """Load the network and run it on one blank image of the declared input; the output's
    shape (:func:`check_runs`)."""
    return check_runs(load_network(config, trust_pickle), config)


def check_runs(network: nn.Module | OnnxNetwork, config: ModelConfig) -> tuple[int, ...]:
    """Run ``network`` on one blank image of the declared input; the output's shape. A
    :class:`ConfigError` says when the network refuses that input, returns another count of
    values than the labels need, or returns non-finite values."""
    import numpy as np

    image = np.zeros((1, *config.input.shape), dtype=np.float32)
    try:
        if isinstance(network, OnnxNetwork):
            import onnxruntime

            session = onnxruntime.InferenceSession(str(network.path),
                                                   providers=["CPUExecutionProvider"])
            output = session.run(None, {session.get_inputs()[0].name: image})[0]
        else:
            import torch

            with torch.no_grad():
                output = network(torch.from_numpy(image))
            output = (output[0] if isinstance(output, (tuple, list)) else output).numpy()
    except Exception as exc:  # whatever the network raises on a wrong input
        raise ConfigError(f"[input]: the network refused a {config.input.shape} image "
                          f"({str(exc).splitlines()[0]}); check channels and size") from exc
    out = config.output
    expected = (1, out.count)
    if tuple(output.shape) != expected:
        raise ConfigError(f"[output] labels: the network returns shape {tuple(output.shape)} per "
                          f"batch of one; a {out.task} model with {len(out.labels)} labels must "
                          f"return {expected}")
    if not np.isfinite(output).all():
        raise ConfigError("[network]: the network returned non-finite values for a blank image")
    return tuple(output.shape)
