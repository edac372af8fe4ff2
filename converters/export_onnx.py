"""PyTorch -> ONNX FP32: probabilities out, named dynamic-batch input, checked and annotated.

The first output is the class probabilities (what the parity gates and the self-check read); a
model with ``logits_and_features`` (every registered architecture) gets a second output,
``features``: the pooled output of each of its conv blocks, what the scope guard measures
distances on.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from converters.architectures import WithSoftmaxAndFeatures, has_scope_features, to_probabilities
from runtime.engines.base import FEATURES_OUTPUT

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
FEATURES_NAME = FEATURES_OUTPUT  # one name, shared with the engines
OPSET = 18  # the dynamo exporter's native opset (asking for less runs a version converter)


class ExportError(RuntimeError):
    """The model could not be exported to a valid ONNX graph."""


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> onnx.ModelProto:
    """Replace/add ``metadata_props`` entries (values are strings)."""
    keep = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=str(value))
    return model


def check_model(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """onnx.checker (full) + strict shape inference; raise ExportError with the reason."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"{what}: the ONNX checker rejected the graph: {exc}") from exc


def _export_bytes(wrapped: nn.Module, example: torch.Tensor, dynamo: bool,
                  outputs: list[str]) -> onnx.ModelProto:
    kwargs: dict = {"input_names": [INPUT_NAME], "output_names": outputs,
                    "opset_version": OPSET, "dynamo": dynamo}
    if dynamo:
        kwargs["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
        kwargs["external_data"] = False
        kwargs["optimize"] = True
        program = torch.onnx.export(wrapped, (example,), None, **kwargs)
        return program.model_proto
    kwargs["dynamic_axes"] = {name: {0: "batch"} for name in (INPUT_NAME, *outputs)}
    buffer = io.BytesIO()
    torch.onnx.export(wrapped, (example,), buffer, do_constant_folding=True, **kwargs)
    return onnx.load_from_string(buffer.getvalue())


def export_onnx(model: nn.Module, input_shape: tuple[int, int, int], dest: Path,
                metadata: dict[str, str]) -> Path:
    """Export the model with probabilities out (:func:`to_probabilities`; with its features
    when it has them) to one self-contained ``dest`` (no ``.onnx.data``).

    The dynamo exporter (torch >= 2.9 default) is tried first; the TorchScript exporter is the
    fallback when dynamo fails or produces a graph the checker rejects.
    """
    with_features = has_scope_features(model)
    wrapped = (WithSoftmaxAndFeatures(model) if with_features else to_probabilities(model)).eval()
    outputs = [OUTPUT_NAME, FEATURES_NAME] if with_features else [OUTPUT_NAME]
    example = torch.zeros(2, *input_shape)
    errors: list[str] = []
    for dynamo in (True, False):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                proto = _export_bytes(wrapped, example, dynamo, outputs)
            proto = check_model(proto, f"export ({'dynamo' if dynamo else 'torchscript'})")
        except Exception as exc:  # exporter failures come in many types
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {exc}")
            log.info("ONNX export attempt failed: %s", errors[-1])
            continue
        _name_io(proto, outputs)
        if with_features:
            _own_tensor(proto.graph, FEATURES_NAME)
        set_metadata(proto, {**metadata, "precision": "fp32",
                             "exporter": "dynamo" if dynamo else "torchscript"})
        dest.parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(proto, str(dest))
        return dest
    raise ExportError(f"could not export the model to ONNX (opset {OPSET}); each exporter's "
                      "reason (the operator it could not convert is named in it):\n  "
                      + "\n  ".join(errors))


def copy_onnx(source: Path, dest: Path, metadata: dict[str, str]) -> Path:
    """A graph that needs no export (an ONNX network, prepared): checked, annotated, written."""
    proto = check_model(onnx.load(str(source)), f"{source.name}")
    set_metadata(proto, {**metadata, "precision": "fp32", "exporter": "given as ONNX"})
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(dest))
    return dest


def _name_io(model: onnx.ModelProto, outputs: list[str]) -> None:
    """Make sure the graph input/outputs carry the contract's names and a symbolic batch."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != len(outputs):
        raise ExportError(f"expected one input and {len(outputs)} output(s), got "
                          f"{len(graph.input)} and {len(graph.output)}")
    for value, name in zip([graph.input[0], *graph.output], [INPUT_NAME, *outputs]):
        if value.name != name:
            old = value.name
            for node in graph.node:
                node.input[:] = [name if n == old else n for n in node.input]
                node.output[:] = [name if n == old else n for n in node.output]
            value.name = name
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.dim_param:
            raise ExportError(f"{name}: batch dimension is not dynamic ({dim})")
        dim.dim_param = "batch"


def _own_tensor(graph: onnx.GraphProto, name: str) -> None:
    """Give the graph output ``name`` its own Identity node when other nodes also read it, so
    that what converters do to graph outputs (FP16's ``keep_io_types`` casts them to float32)
    never changes what the classifier reads."""
    if not any(name in node.input for node in graph.node):
        return
    inner = f"{name}_inner"
    for node in graph.node:
        node.input[:] = [inner if n == name else n for n in node.input]
        node.output[:] = [inner if n == name else n for n in node.output]
    graph.node.append(onnx.helper.make_node("Identity", [inner], [name], name=f"{name}_output"))
