"""ONNX -> ONNX Runtime's ORT format (flatbuffer) for minimal/mobile ONNX Runtime builds.

Made like ``python -m onnxruntime.tools.convert_onnx_models_to_ort --target_platform arm`` with
the default "fixed" optimization style: all graph optimizations (so QDQ groups are fused into
QLinear* kernels ahead of time) except the x86-only NCHWc layout transformer, and int8 QDQ fusion
allowed as on ARM. The source graph's operators are recorded (a reduced build must include their kernels).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from converters.export_onnx import ExportError


def convert_ort_format(source: Path, dest: Path) -> dict:
    """Write ``dest`` (``.ort``) from ``source`` through an ONNX Runtime session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(dest)
    options.add_session_config_entry("session.save_model_format", "ORT")
    options.add_session_config_entry("session.qdqisint8allowed", "1")  # as for target_platform arm
    options.log_severity_level = 3
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=["NchwcTransformer"])
    except Exception as exc:
        raise ExportError(f"ONNX Runtime could not save {source.name} in ORT format: {exc}") from exc
    if not dest.is_file() or dest.stat().st_size == 0:
        raise ExportError(f"ONNX Runtime wrote no ORT-format file for {source.name}")
    model = onnx.load(str(source))
    ops = sorted({f"{node.domain or 'ai.onnx'}:{node.op_type}" for node in model.graph.node})
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    return {"converter": "onnxruntime (session.save_model_format=ORT)",
            "optimization": "all (fixed style, NchwcTransformer disabled, qdqisint8allowed=1)",
            "target_platform": "arm", "source": source.name, "source_operators": ops,
            "opsets": opsets, "onnxruntime": ort.__version__}

