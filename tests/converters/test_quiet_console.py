"""A build's console shows the kit's own lines; library chatter (PyTorch's exporter, ONNX Runtime's
provider-loading dumps, NNCF's progress bars) goes to the build log named in the summary."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from converters.__main__ import main
from converters.build_log import BUILD_LOG, library_output
from runtime.bundle.artifacts import read_manifest

REPO = Path(__file__).resolve().parents[2]

#: what the libraries print on their own during a build (exporter, provider loading, NNCF)
CHATTER = ("[torch.onnx]", "torchvision is not installed", "Failed to load library",
           "LoadLibrary failed", "EP Error", "onnxruntime:Default", "Statistics collection")
LOG_LINE = "build log (the libraries' own messages): {}"


def test_each_channel_goes_to_the_log_and_the_kits_lines_to_the_console(tmp_path, capfd):
    log = tmp_path / BUILD_LOG
    log.write_text("an earlier build\n")
    with library_output(log, progress=True):
        print("[torch.onnx] Run decompositions...")  # Python's stdout
        warnings.warn("torchvision is not installed")
        os.write(1, b"C-level stdout\n")
        os.write(2, b"EP Error (C-level stderr)\n")
        logging.getLogger("converters.data.pneumoniamnist").warning("the kit's own warning")
        print("[   1.0s] the kit's progress", file=sys.stderr)
    print("the kit's summary")
    console = capfd.readouterr()
    text = log.read_text()
    for chatter in ("[torch.onnx] Run decompositions", "torchvision is not installed",
                    "C-level stdout", "EP Error"):
        assert chatter in text and chatter not in console.out + console.err
    assert "an earlier build" not in text  # one log per build
    assert "the kit's own warning" in console.err and "the kit's progress" in console.err
    assert console.out == "the kit's summary\n"


@pytest.mark.slow  # a real build of the shipped reference model
def test_a_gpu_build_keeps_library_chatter_in_its_log(tmp_path, reference_checkpoint, data_dir):
    out = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "converters", "build", "--target", "gpu",
                           "--checkpoint", str(reference_checkpoint), "--data", str(data_dir),
                           "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert [m for m in CHATTER if m in console] == [], console[-3000:]
    assert "exporting ONNX FP32 from PyTorch" in proc.stderr  # the kit's progress stays
    assert f"wrote {out / 'gpu'}/" in proc.stdout
    log = out / BUILD_LOG
    assert LOG_LINE.format(log) in proc.stdout.splitlines()
    text = log.read_text(encoding="utf-8")
    assert "[torch.onnx]" in text  # the exporter's progress prints
    manifest = read_manifest(out / "gpu")
    if any(a.gate.status == "provisional" for a in manifest.artifacts):  # no TensorRT/CUDA here
        assert "EP Error" in text and "onnxruntime:Default" in text


@pytest.mark.slow  # a real build up to the export
def test_a_failing_library_step_shows_the_error_and_the_log(tmp_path, reference_checkpoint,
                                                            data_dir, monkeypatch, capfd):
    import torch

    def exploding_export(*_args, **_kwargs):
        raise RuntimeError("the exporter exploded")

    monkeypatch.setattr(torch.onnx, "export", exploding_export)
    out = tmp_path / "dist"
    assert main(["build", "--target", "gpu", "--checkpoint", str(reference_checkpoint),
                 "--data", str(data_dir), "--out", str(out)]) == 2
    console = capfd.readouterr()
    assert "the exporter exploded" in console.err and "error: " in console.err
    assert LOG_LINE.format(out / BUILD_LOG) in console.err.splitlines()
    assert (out / BUILD_LOG).is_file()
    assert not (out / "gpu").exists()
