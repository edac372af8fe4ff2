"""Benchmark fixtures: real bundles built once per session, and one quick benchmark run over them.

The run covers every registered target (cpu and gpu timed here, arm not timed on x86) plus a
broken copy of the gpu bundle in which one artifact is corrupted on disk (its sha256 no longer
matches) and the other crashes its measurement process (SIGABRT), so that the harness's failure
paths are exercised in the same run. Tests check the harness, never timings.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

CRASHING = "model.fp16.onnx"  # in the broken copy: its worker process aborts
CORRUPTED = "model.fp32.onnx"  # in the broken copy: bytes changed on disk
QUICK_REPEATS = 12
E2E_IMAGES = 12


@pytest.fixture(scope="session")
def bench_dist(built_bundles: dict[str, Path]) -> Path:
    """The dist folder holding gpu, cpu and arm, built once per session (tests/conftest.py)."""
    return built_bundles["cpu"].parent


@pytest.fixture(scope="session")
def broken_bundle(bench_dist: Path, tmp_path_factory) -> Path:
    """A copy of the gpu bundle: one artifact corrupted on disk, one that crashes its worker."""
    path = tmp_path_factory.mktemp("broken") / "gpu"
    shutil.copytree(bench_dist / "gpu", path)
    target = path / CORRUPTED
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return path


CRASH_WRAPPER = """
import io, json, os, sys
data = sys.stdin.read()
if json.loads(data).get("artifact") == {crashing!r} and "broken" in json.loads(data).get("bundle", ""):
    os.abort()
sys.stdin = io.StringIO(data)
from benchmarks.worker import main
sys.exit(main())
"""


@pytest.fixture(scope="session")
def quick_run(bench_dist: Path, broken_bundle: Path, data_dir: Path, tmp_path_factory):
    """``python -m benchmarks run --quick`` in-process over dist + the broken copy.

    Returns (exit code, report dict, out folder).
    """
    from benchmarks import __main__ as cli
    from benchmarks import worker

    wrapper = tmp_path_factory.mktemp("wrapper") / "crashing_worker.py"
    wrapper.write_text(CRASH_WRAPPER.format(crashing=CRASHING))
    out = tmp_path_factory.mktemp("reports")
    argv = ["run", "--quick", "--dist", str(bench_dist), "--target", "all",
            "--bundle", str(broken_bundle), "--out", str(out), "--repeats", str(QUICK_REPEATS),
            "--e2e-images", str(E2E_IMAGES), "--images", str(data_dir / "cxr_samples"),
            "--data", str(data_dir), "--quiet"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(worker, "worker_command", lambda: [sys.executable, str(wrapper)])
        code = cli.main(argv)
    report = json.loads((out / "report.json").read_text())
    return code, report, out


@pytest.fixture(scope="session")
def sections(quick_run) -> dict[str, dict]:
    _code, report, _out = quick_run
    return {section["label"]: section for section in report["bundles"]}


def manifest_of(path: str | Path):
    from runtime.contract.manifest import load_manifest

    return load_manifest(path)


