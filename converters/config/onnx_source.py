"""A network given as an ONNX file: made into the bundle's FP32 graph and run as its reference.

No PyTorch network exists, so nothing is exported: the file gets the contract's input name and a
head that turns its declared output into class probabilities (softmax over logits; a binary
model's one output into [1 - p, p]; a sigmoid per column of a multilabel model's logits), a
dynamic batch, and is checked. ONNX Runtime's CPU provider running that graph is the FP32
reference every other artifact is compared with.

The scope guard's features are found by the graph: the tensor feeding the final ``Gemm`` (or
``MatMul`` + ``Add``) that makes the scores, when it is (N, C), becomes the second output,
``features``, as the kit's own exports name it; otherwise the build says why and the bundle
judges scope by the rules only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper
from torch import nn

from converters.config.features import MAX_FEATURES, too_wide
from converters.config.model import ModelConfig
from converters.config.tables import ConfigError
from converters.export_onnx import FEATURES_NAME, INPUT_NAME, OUTPUT_NAME, check_model

BATCH = "batch"
#: nodes between the classifier and the graph's output that pass its scores on unchanged
PASS_ON = ("Identity", "Flatten", "Reshape", "Squeeze")


class OnnxClassifier(nn.Module):
    """The prepared ONNX graph on ONNX Runtime's CPU provider, callable like a PyTorch model
    (probabilities out); ``fp32_onnx`` is the graph the build starts every format from."""

    returns_probabilities = True  # read by converters.architectures.to_probabilities

    def __init__(self, prepared: Path, no_scope_features: str | None = None):
        super().__init__()
        import onnxruntime

        self.fp32_onnx = prepared
        self._session = onnxruntime.InferenceSession(str(prepared),
                                                     providers=["CPUExecutionProvider"])
        outputs = {o.name: o for o in self._session.get_outputs()}
        features = outputs.get(FEATURES_NAME)
        #: the widths of the scope features (one block: the classifier's input); [] without
        self.feature_widths = [] if features is None else [int(features.shape[1])]
        #: what the features are, in words (the manifest's scope guard description)
        self.scope_features = (f"the input of its final Gemm/MatMul classifier "
                               f"({self.feature_widths[0]} features), a second graph output"
                               if features is not None else "")
        self.no_scope_features = None if features is not None else (
            no_scope_features or "the prepared graph has no features output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities (this graph's head made them) and the scope features."""
        probabilities, features = self._session.run([OUTPUT_NAME, FEATURES_NAME],
                                                    {INPUT_NAME: x.numpy()})
        return torch.from_numpy(probabilities), torch.from_numpy(features)


def prepare_onnx(config: ModelConfig, dest: Path) -> Path:
    """The config's ONNX file prepared (:func:`prepare_onnx_network`), written to ``dest``."""
    return prepare_onnx_network(config, dest)[0]


def prepare_onnx_network(config: ModelConfig, dest: Path) -> tuple[Path, str | None]:
    """The config's ONNX file with the contract's names, a probability head, the scope features
    as a second output where the graph shows them, and a dynamic batch, written to ``dest``; and
    why it has no features (None when it has). A :class:`ConfigError` says what does not fit
    and how to export again."""
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
    _free_name(graph, FEATURES_NAME)
    found = feature_source(model, scores)
    graph.node.extend(_head(scores, config))
    graph.output[0].CopyFrom(helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT,
                                                           [BATCH, len(config.output.labels)]))
    no_features = found if isinstance(found, str) else None
    if not isinstance(found, str):
        tensor, width = found
        graph.node.append(helper.make_node("Identity", [tensor], [FEATURES_NAME],
                                           name="kit_features"))
        graph.output.append(helper.make_tensor_value_info(FEATURES_NAME, onnx.TensorProto.FLOAT,
                                                          [BATCH, width]))
    for dim in (inputs[0].type.tensor_type.shape.dim[0],):
        dim.Clear()
        dim.dim_param = BATCH
    model = check_model(model, f"[network] onnx: {source.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(dest))
    _check_batches(dest, config, None if no_features else found[1])
    return dest, no_features


def feature_source(model: onnx.ModelProto, scores: str) -> tuple[str, int] | str:
    """The tensor feeding the classifier that makes ``scores`` (a ``Gemm``, or ``MatMul`` with
    or without an ``Add`` of its bias) and its width, when it is (N, C); else why not."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constant = {t.name for t in graph.initializer} | {
        out for node in graph.node if node.op_type == "Constant" for out in node.output}
    node = producer.get(scores)
    while node is not None and node.op_type in PASS_ON:
        node = producer.get(node.input[0])
    if node is not None and node.op_type == "Add":
        made = [producer.get(n) for n in node.input if n not in constant]
        node = made[0] if len(made) == 1 and made[0] is not None else None
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        what = "no node" if node is None else f"a {node.op_type} node ({node.name})"
        return (f"its scores come from {what}, not from a Gemm or MatMul classifier whose input "
                "could be measured")
    if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
        return f"its classifier ({node.name}) reads its input transposed (Gemm transA = 1)"
    features = node.input[0]
    if features in constant or features not in producer:
        return f"the input of its classifier ({node.name}) is not computed from the image"
    shape = _shape_of(model, features)
    if shape is None or len(shape) != 2 or not isinstance(shape[1], int):
        seen = "unknown" if shape is None else str(tuple(shape))
        return (f"the input of its classifier ({node.name}) has shape {seen}, not pooled "
                "features (N, C)")
    if shape[1] > MAX_FEATURES:
        return too_wide(node.name, shape[1])
    return features, shape[1]


def _shape_of(model: onnx.ModelProto, tensor: str) -> list[int | str] | None:
    """``tensor``'s shape by ONNX shape inference (symbolic dimensions as their names)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError):  # no shape known
        return None
    for value in inferred.graph.value_info:
        if value.name == tensor and value.type.tensor_type.HasField("shape"):
            return [d.dim_value if d.HasField("dim_value") else d.dim_param
                    for d in value.type.tensor_type.shape.dim]
    return None


def _free_name(graph: onnx.GraphProto, name: str) -> None:
    """Rename a tensor the network itself calls ``name``, so the kit's output can take it."""
    taken = any(name in node.output for node in graph.node)
    if not taken:
        return
    other = f"{name}_network"
    for node in graph.node:
        node.input[:] = [other if n == name else n for n in node.input]
        node.output[:] = [other if n == name else n for n in node.output]
    for value in [*graph.output, *graph.value_info]:
        if value.name == name:
            value.name = other


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


def _check_batches(path: Path, config: ModelConfig, width: int | None) -> None:
    """Run the prepared graph on a batch of two: a graph exported for batch 1 only fails here
    (``width``: the features output's, when it has one)."""
    import onnxruntime

    x = np.zeros((2, *config.input.shape), dtype=np.float32)
    names = [OUTPUT_NAME] + ([FEATURES_NAME] if width else [])
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        y, *features = session.run(names, {INPUT_NAME: x})
    except Exception as exc:  # onnxruntime raises its own error types
        raise ConfigError(f"[network] onnx: {config.network.file.name} does not run on a batch "
                          f"of two images ({str(exc).splitlines()[0]}); export it with a "
                          "dynamic batch: torch.onnx.export(..., dynamic_axes={'input': "
                          "{0: 'batch'}, 'output': {0: 'batch'}})") from exc
    if y.shape != (2, len(config.output.labels)):
        raise ConfigError(f"[network] onnx: on a batch of two, the prepared graph returns "
                          f"{y.shape}, expected (2, {len(config.output.labels)})")
    if width and features[0].shape != (2, width):
        raise ConfigError(f"[network] onnx: on a batch of two, the classifier's input is "
                          f"{features[0].shape}, expected (2, {width})")
