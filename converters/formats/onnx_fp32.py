"""onnx-fp32: the ONNX FP32 export, as it is."""

from __future__ import annotations

import shutil

from converters.formats import ConvertJob


def convert(job: ConvertJob) -> dict:
    import onnx

    shutil.copy2(job.workspace.fp32_onnx(), job.dest)
    model = onnx.load(str(job.dest), load_external_data=False)
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    return {"exporter": "torch.onnx.export", "opset": opset}
