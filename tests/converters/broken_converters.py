"""Converters that fail on purpose, named by dotted path in a replaced format-table row."""

from __future__ import annotations

import numpy as np

from converters.export_onnx import ExportError
from converters.formats import ConvertJob


def unsupported_op(job: ConvertJob) -> dict:
    raise ExportError("unsupported operator 'FancyOp' (opset 18)")


def no_ort_format(job: ConvertJob) -> dict:
    raise ExportError("this ONNX Runtime cannot save the ORT format")


def inverted(job: ConvertJob) -> dict:
    """The FP32 graph with its probability columns in reverse order: it converts, it runs, and
    it fails the clinical gate (the finding's probability is the other label's). Written as an
    ONNX file or, for an ``.xml`` destination, as an OpenVINO IR."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(job.workspace.fp32_onnx()))
    graph = model.graph
    output = graph.output[0]
    classes = output.type.tensor_type.shape.dim[1].dim_value
    inner = f"{output.name}_in_order"
    for node in graph.node:
        node.output[:] = [inner if name == output.name else name for name in node.output]
    order = numpy_helper.from_array(np.arange(classes)[::-1].astype(np.int64), "reversed_order")
    graph.initializer.append(order)
    graph.node.append(helper.make_node("Gather", [inner, "reversed_order"], [output.name], axis=1))
    onnx_file = job.dest.with_name(job.dest.stem + ".inverted.onnx") \
        if job.dest.suffix == ".xml" else job.dest
    onnx.save_model(model, str(onnx_file))
    if onnx_file != job.dest:
        import openvino as ov

        ov.save_model(ov.convert_model(str(onnx_file)), str(job.dest), compress_to_fp16=False)
        onnx_file.unlink()
    return {"inverted": True}
