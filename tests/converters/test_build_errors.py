"""``python -m converters build`` failures: a clear message, exit code 2, never a partial bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.__main__ import main
from converters.architectures import build_model
from converters.checkpoint import ModelSpec, save_checkpoint
from runtime.contract.manifest import Preprocessing


def _no_bundle(out: Path, target: str) -> None:
    if out.exists():
        leftovers = [p.name for p in out.iterdir() if p.name == target or p.name.startswith(".")]
        assert leftovers == [], leftovers


def _build(out: Path, *extra: str, target: str = "arm") -> int:
    return main(["build", "--target", target, "--out", str(out), "--quiet", *extra])


def test_missing_checkpoint(tmp_path, data_dir, capsys):
    rc = _build(tmp_path / "dist", "--checkpoint", str(tmp_path / "nope.safetensors"),
                "--data", str(data_dir))
    assert rc == 2
    assert "checkpoint not found" in capsys.readouterr().err
    _no_bundle(tmp_path / "dist", "arm")


def test_corrupt_checkpoint(tmp_path, data_dir, reference_checkpoint, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(reference_checkpoint.read_bytes()[:5000])
    assert _build(tmp_path / "dist", "--checkpoint", str(bad), "--data", str(data_dir)) == 2
    assert "corrupt" in capsys.readouterr().err
    _no_bundle(tmp_path / "dist", "arm")


def test_architecture_mismatch(tmp_path, data_dir, capsys):
    model = build_model("pneumonia_cnn", width=8, num_classes=2)
    spec = ModelSpec("pneumonia_cnn", {"width": 16, "num_classes": 2}, Preprocessing(size=28))
    path = save_checkpoint(model, spec, tmp_path / "mismatch.safetensors")
    assert _build(tmp_path / "dist", "--checkpoint", str(path), "--data", str(data_dir)) == 2
    err = capsys.readouterr().err
    assert "do not match architecture" in err and "Traceback" not in err
    _no_bundle(tmp_path / "dist", "arm")


def test_missing_data(tmp_path, reference_checkpoint, capsys):
    assert _build(tmp_path / "dist", "--checkpoint", str(reference_checkpoint),
                  "--data", str(tmp_path / "nowhere")) == 2
    assert "PneumoniaMNIST not found" in capsys.readouterr().err
    _no_bundle(tmp_path / "dist", "arm")


@pytest.mark.slow
def test_calibration_set_too_small(tmp_path, pneumoniamnist, reference_checkpoint, capsys):
    """A dataset whose training split cannot give 300 calibration images stops the INT8 build."""
    small = tmp_path / "pneumoniamnist.npz"
    arrays = {}
    for split in ("train", "val", "test"):
        part = pneumoniamnist.split(split)
        keep = slice(0, 120) if split == "train" else slice(None)
        arrays[f"{split}_images"] = part.images[keep]
        arrays[f"{split}_labels"] = part.labels[keep].reshape(-1, 1)
    np.savez(small, **arrays)
    out = tmp_path / "dist"
    assert _build(out, "--checkpoint", str(reference_checkpoint), "--data", str(small)) == 2
    err = capsys.readouterr().err
    assert "calibration" in err and "300" in err
    _no_bundle(out, "arm")


def _replace_converter(monkeypatch, key: str, function: str) -> None:
    """Point a format row at a failing converter in tests/converters/broken_converters.py."""
    import dataclasses

    from runtime.contract.formats import FORMATS

    row = dataclasses.replace(FORMATS[key],
                              converter=f"tests.converters.broken_converters:{function}")
    monkeypatch.setitem(FORMATS, key, row)


@pytest.mark.slow
def test_converter_failure_keeps_the_previous_bundle(tmp_path, data_dir, reference_checkpoint,
                                                     monkeypatch, capsys):
    """An op a converter cannot handle: clear error, and the bundle already there is untouched."""
    _replace_converter(monkeypatch, "onnx-int8", "unsupported_op")
    out = tmp_path / "dist"
    (out / "arm").mkdir(parents=True)
    (out / "arm" / "manifest.json").write_text("{\"previous\": true}")
    assert _build(out, "--checkpoint", str(reference_checkpoint), "--data", str(data_dir)) == 2
    err = capsys.readouterr().err
    assert "model.int8.onnx" in err and "FancyOp" in err and "Traceback" not in err
    assert (out / "arm" / "manifest.json").read_text() == "{\"previous\": true}"
    assert sorted(p.name for p in out.iterdir()) == ["arm", "build.log"]


@pytest.mark.slow
def test_failed_gate_names_the_artifact_and_the_drop(tmp_path, data_dir, reference_checkpoint,
                                                     monkeypatch, capsys):
    from converters import validate

    monkeypatch.setattr(validate, "MAX_AUC_DROP", -1.0)  # nothing can pass now
    out = tmp_path / "dist"
    assert _build(out, "--checkpoint", str(reference_checkpoint), "--data", str(data_dir)) == 2
    err = capsys.readouterr().err
    assert "arm/model.int8.onnx failed the clinical gate after 3 attempt(s)" in err
    assert "validation AUC" in err and "below the FP32 reference" in err
    assert "test AUC" not in err.split("failed the clinical gate")[1]  # the test split never gates
    _no_bundle(out, "arm")


def test_unknown_target_suggests_the_closest(tmp_path, capsys):
    assert _build(tmp_path / "dist", target="armm") == 2
    assert "Did you mean 'arm'?" in capsys.readouterr().err


def test_help_lists_build(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    assert "--target" in capsys.readouterr().out


@pytest.mark.slow
def test_an_optional_artifact_that_fails_is_recorded_not_hidden(tmp_path, data_dir,
                                                                 reference_checkpoint, monkeypatch):
    """The arm bundle's ORT-format twin is optional: its failure is written down, not silent."""
    from runtime.contract.manifest import load_manifest

    _replace_converter(monkeypatch, "ort-int8", "no_ort_format")
    out = tmp_path / "dist"
    assert _build(out, "--checkpoint", str(reference_checkpoint), "--data", str(data_dir)) == 0
    manifest = load_manifest(out / "arm")
    assert [a.path for a in manifest.artifacts] == ["model.int8.onnx"]
    (skipped,) = manifest.skipped
    assert skipped.path == "model.int8.ort" and "cannot save the ORT format" in skipped.reason
    assert "model.int8.ort` NOT built" in (out / "arm" / "report.md").read_text()
    assert not (out / "arm" / "model.int8.ort").exists()


@pytest.mark.slow
def test_int8_that_fails_the_gate_leaves_a_cpu_bundle_in_fp32(tmp_path, data_dir,
                                                               reference_checkpoint, monkeypatch,
                                                               capsys):
    """On the cpu target INT8 is optional: when neither INT8 holds the validation figures, the
    workstation still gets OpenVINO FP32 as its default, and the reasons are written down."""
    from runtime.contract.manifest import load_manifest

    for key in ("openvino-int8", "onnx-int8"):
        _replace_converter(monkeypatch, key, "inverted")
    out = tmp_path / "dist"
    assert _build(out, "--checkpoint", str(reference_checkpoint), "--data", str(data_dir),
                  target="cpu") == 0
    printed = capsys.readouterr().out
    manifest = load_manifest(out / "cpu")
    assert [a.path for a in manifest.artifacts] == ["model.fp32.xml"]
    assert manifest.default_artifact == "model.fp32.xml"
    assert {s.path for s in manifest.skipped} == {"model.int8.xml", "model.int8.onnx"}
    for skipped in manifest.skipped:
        assert "failed the clinical gate" in skipped.reason and "validation" in skipped.reason
        assert f"{skipped.path:18s} NOT built" in printed
    assert not (out / "cpu" / "model.int8.xml").exists()
