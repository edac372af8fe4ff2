"""A network given as an ONNX file: made into the bundle's FP32 graph and run as its reference.

No PyTorch network exists, so nothing is exported: the file gets the contract's input name and a
head that turns its declared output into class probabilities (softmax over logits; a binary
model's one output into [1 - p, p]; a sigmoid per column of a multilabel model's logits), a
dynamic batch, and is checked. ONNX Runtime's CPU provider running that graph is the FP32
reference every other artifact is compared with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper
from torch import nn

from converters.config.model import ModelConfig
from converters.config.tables import ConfigError
from converters.export_onnx import INPUT_NAME, OUTPUT_NAME, check_model

BATCH = "batch"


class OnnxClassifier(nn.Module):
    """The prepared ONNX graph on ONNX Runtime's CPU provider, callable like a PyTorch model
    (probabilities out); ``fp32_onnx`` is the graph the build starts every format from."""

    returns_probabilities = True  # read by converters.architectures.to_probabilities

    def __init__(self, prepared: Path):
        super().__init__()
        import onnxruntime

        self.fp32_onnx = prepared
        self._session = onnxruntime.InferenceSession(str(prepared),
                                                     providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


def prepare_onnx(config: ModelConfig, dest: Path) -> Path:
    """The config's ONNX file with the contract's names, a probability head and a dynamic batch,
    written to ``dest``; a :class:`ConfigError` says what does not fit and how to export again."""
    source = config.network.file
    model = onnx.load(str(source))
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1 or not graph.output:
        raise ConfigError(f"[network] onnx: {source.name} has {len(inputs)} inputs and "
                          f"{len(graph.output)} outputs; the kit needs one image input and the "
                          "class scores as the first output")
    _rename(graph, inputs[0].name, INPUT_NAME)
    _check_input(inputs[0], config)
    scores = graph.output[0].name
    del graph.output[1:]  # extra outputs (features, aux heads) are not shipped
    graph.node.extend(_head(scores, config))
    graph.output[0].CopyFrom(helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT,
                                                           [BATCH, len(config.output.labels)]))
    for dim in (inputs[0].type.tensor_type.shape.dim[0],):
        dim.Clear()
        dim.dim_param = BATCH
    model = check_model(model, f"[network] onnx: {source.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(dest))
    _check_batches(dest, config)
    return dest


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
    for value in graph.input:
        if value.name == old:
            value.name = new


def _check_input(value: onnx.ValueInfoProto, config: ModelConfig) -> None:
    dims = value.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    want = list(config.input.shape)
    if len(shape) != 4 or any(s is not None and s != w for s, w in zip(shape[1:], want)):
        raise ConfigError(f"[input]: {config.network.file.name} takes "
                          f"{[s if s is not None else '?' for s in shape]}, not a batch of "
                          f"{want} images; set channels and size to what the network was "
                          "exported with")


def _head(scores: str, config: ModelConfig) -> list[onnx.NodeProto]:
    """Nodes from the network's output to the contract's probabilities."""
    out = config.output
    if out.task == "multiclass":
        op = "Softmax" if out.kind == "logits" else "Identity"
        kwargs = {"axis": 1} if op == "Softmax" else {}
        return [helper.make_node(op, [scores], [OUTPUT_NAME], name="kit_probabilities", **kwargs)]
    if out.task == "multilabel":  # one independent probability per label
        op = "Sigmoid" if out.kind == "logits" else "Identity"
        return [helper.make_node(op, [scores], [OUTPUT_NAME], name="kit_probabilities")]
    p = scores
    nodes = []
    if out.kind == "logits":
        p = "kit_positive"
        nodes.append(helper.make_node("Sigmoid", [scores], [p], name="kit_sigmoid"))
    one = helper.make_node("Constant", [], ["kit_one"], name="kit_one",
                           value=helper.make_tensor("kit_one_value", onnx.TensorProto.FLOAT,
                                                    [1, 1], [1.0]))
    negative = helper.make_node("Sub", ["kit_one", p], ["kit_negative"], name="kit_negative")
    both = helper.make_node("Concat", ["kit_negative", p], [OUTPUT_NAME], name="kit_concat",
                            axis=1)
    return nodes + [one, negative, both]


def _check_batches(path: Path, config: ModelConfig) -> None:
    """Run the prepared graph on a batch of two: a graph exported for batch 1 only fails here."""
    import onnxruntime

    x = np.zeros((2, *config.input.shape), dtype=np.float32)
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        y = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    except Exception as exc:  # onnxruntime raises its own error types
        raise ConfigError(f"[network] onnx: {config.network.file.name} does not run on a batch "
                          f"of two images ({str(exc).splitlines()[0]}); export it with a "
                          "dynamic batch: torch.onnx.export(..., dynamic_axes={'input': "
                          "{0: 'batch'}, 'output': {0: 'batch'}})") from exc
    if y.shape != (2, len(config.output.labels)):
        raise ConfigError(f"[network] onnx: on a batch of two, the prepared graph returns "
                          f"{y.shape}, expected (2, {len(config.output.labels)})")
