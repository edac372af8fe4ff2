"""The runtime runs with only its core packages and one ONNX Runtime flavour: no onnx, no
OpenVINO (an OpenVINO artifact then fails with a plain message naming the extra to install)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runtime.bundle.load import load_bundle
from runtime.engines.base import EngineError
from runtime.engines.registry import create_engine
from runtime.errors import BundleError
from tests.runtime.helpers import REPO, run_cli

#: distributions of the extras (openvino, tui, bench, convert, ray) that the runtime must not import
NOT_RUNTIME = ("onnx", "openvino", "torch", "textual", "matplotlib", "nncf", "psutil", "ray")


def test_importing_the_runtime_loads_no_extra_package():
    code = ("import sys, runtime.__main__, runtime.bundle.load, runtime.running.triage, runtime.engines, "
            "runtime.imaging.decode, runtime.preprocess.cpu, runtime.running.results, runtime.preprocess.gpu, "
            "runtime.running.ray_triage; "
            f"print(sorted(m for m in {NOT_RUNTIME!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    assert out == "[]"


def test_onnx_artifact_runs_and_reports_its_precision_without_onnx(cpu_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    engine = create_engine(cpu_bundle / "model.int8.onnx", "onnxruntime")
    assert engine.precision == "int8"  # read from the model's metadata through ONNX Runtime
    assert engine.active == ["CPUExecutionProvider"]


def test_openvino_artifact_without_openvino_names_the_extra(cpu_bundle, data_dir, tmp_path):
    blocker = tmp_path / "site" / "openvino"  # first on sys.path: `import openvino` fails
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('openvino is not installed')\n")
    result = run_cli("triage", str(data_dir / "dicom"), "--bundle", str(cpu_bundle),
                     "--artifact", "model.fp32.xml", "--out", str(tmp_path / "out"),
                     PYTHONPATH=str(blocker.parent))
    assert result.returncode == 2, result.stderr
    assert "model.fp32.xml needs OpenVINO" in result.stderr
    assert "pip install 'cxr-deploy-kit[openvino]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_onnxruntime_names_the_engine_extras(cpu_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(EngineError, match=r"model\.int8\.onnx needs ONNX Runtime.*\[cpu\]"):
        create_engine(cpu_bundle / "model.int8.onnx", "onnxruntime")
    with pytest.raises(BundleError, match=r"\[gpu\]"):
        load_bundle(cpu_bundle, "model.int8.onnx", device="cpu")
