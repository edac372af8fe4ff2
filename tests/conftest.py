"""Shared fixtures: the real data in ../shared/data (or $CXR_DATA_DIR) and the shipped model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REFERENCE_CONFIG = REPO / "models" / "reference" / "model.toml"


def _data_dir() -> Path:
    env = os.environ.get("CXR_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> Path:
    """The runtime's self-check cache lives in a per-session folder, never in the user's home
    (subprocesses inherit it through the environment)."""
    path = tmp_path_factory.mktemp("cxr-cache")
    previous = os.environ.get("CXR_CACHE_DIR")
    os.environ["CXR_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("CXR_CACHE_DIR", None)
    else:
        os.environ["CXR_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder; the suite refuses to pretend without it."""
    path = _data_dir()
    if not (path / "pneumoniamnist.npz").is_file():
        pytest.fail(f"real data not found in {path}: set CXR_DATA_DIR to ../shared/data")
    return path


@pytest.fixture(scope="session")
def pneumoniamnist(data_dir: Path):
    from converters.data.pneumoniamnist import load_pneumoniamnist

    return load_pneumoniamnist(data_dir / "pneumoniamnist.npz")


@pytest.fixture(scope="session")
def reference_checkpoint() -> Path:
    return REPO / "models" / "reference" / "pneumonia_cnn.safetensors"


@pytest.fixture(scope="session")
def reference_card() -> Path:
    return REPO / "models" / "reference" / "pneumonia_cnn.json"


@pytest.fixture(scope="session")
def built_bundles(tmp_path_factory, data_dir: Path) -> dict[str, Path]:
    """``{target: bundle folder}`` for every registered target, built ONCE per test session from
    the reference model's config (``models/reference/model.toml``, what ``python -m converters
    build`` builds by default) on the real data (one export, reference and conversion cache
    shared).

    Shared by the runtime, converters, benchmarks and TUI tests; tests that modify a bundle copy
    it first.
    """
    from converters.build import build_from_config
    from targets import target_names

    out = tmp_path_factory.mktemp("dist")
    previous = os.environ.get("CXR_DATA_DIR")
    os.environ["CXR_DATA_DIR"] = str(data_dir)  # the config's ${CXR_DATA_DIR}
    try:
        bundles = build_from_config(target_names(), REFERENCE_CONFIG, out, progress=False)
    finally:
        if previous is None:
            os.environ.pop("CXR_DATA_DIR", None)
        else:
            os.environ["CXR_DATA_DIR"] = previous
    return {bundle.name: bundle for bundle in bundles}


@pytest.fixture(scope="session")
def cpu_bundle(request) -> Path:
    """The cpu bundle (OpenVINO FP32/INT8 + ONNX INT8); ``CXR_TEST_CPU_BUNDLE=DIR`` uses a cpu
    bundle already built from the reference checkpoint instead (quick iterations on the tests
    that need only it: no session build of every target)."""
    prebuilt = os.environ.get("CXR_TEST_CPU_BUNDLE")
    if prebuilt:
        return Path(prebuilt).resolve()
    return request.getfixturevalue("built_bundles")["cpu"]


@pytest.fixture(scope="session")
def site_calibration(tmp_path_factory, cpu_bundle: Path, data_dir: Path) -> dict:
    """One site calibration of the cpu bundle (CSV form) on 60 + 60 real Kermany test X-rays,
    a colour-tinted X-ray labelled PNEUMONIA (out of scope) and a text file labelled NORMAL
    (an error row): ``{"out", "work", "csv", "stdout", "before", "bundle"}`` (``before``: the
    original bundle's file hashes and times before the run)."""
    from tests.converters.calibration_data import run_site_calibration

    return run_site_calibration(tmp_path_factory.mktemp("site"), cpu_bundle, data_dir)


@pytest.fixture(scope="session")
def clinical_cpu_bundle(tmp_path_factory, data_dir: Path) -> Path:
    """The cpu bundle of the shipped clinical checkpoint, through the CLI (``--model clinical``),
    built ONCE per session (the clinical tests and the scope guard's tests share it)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("dist-clinical")
    proc = subprocess.run([sys.executable, "-m", "converters", "build", "--model", "clinical",
                           "--target", "cpu", "--out", str(out), "--data", str(data_dir), "-q"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out / 'cpu'}/" in proc.stdout
    return out / "cpu"


@pytest.fixture(scope="session")
def findings_bundle(tmp_path_factory, cpu_bundle: Path) -> Path:
    """The cpu bundle with two findings (PNEUMONIA, then EFFUSION at its own threshold): the
    consumers' tests of several findings (tests/runtime/findings_bundle.py)."""
    from tests.runtime.findings_bundle import several_findings_bundle

    return several_findings_bundle(cpu_bundle, tmp_path_factory.mktemp("findings") / "cpu")
