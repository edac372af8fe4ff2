"""A fresh virtual environment with only the core package and the `[cpu]` engine flavour (at the
pinned versions of constraints.txt) triages real X-rays with the arm bundle, gives the same
answers as the full development environment, and has none of the heavy packages installed.

Needs pip to reach the package index (it does in CI; pip's cache keeps reruns fast). Skip it
locally with CXR_SKIP_FRESH_INSTALL=1.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.helpers import REPO, run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("CXR_SKIP_FRESH_INSTALL") == "1",
                       reason="CXR_SKIP_FRESH_INSTALL=1"),
]

# Distributions an edge box must not get from `pip install '.[cpu]'`.
NOT_ON_THE_EDGE = ("torch", "openvino", "textual", "matplotlib", "onnx", "onnxruntime-gpu",
                   "nncf", "scikit-learn")
BOOTSTRAP = ("pip", "setuptools", "wheel")  # put there by `python -m venv`, not by the kit
PER_CLASS = 12  # full-size JPEGs per class, plus the DICOMs


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _clean_env() -> dict[str, str]:
    """The environment without anything that would put the checkout or the dev venv on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _size_mib(folder: Path) -> float:
    total = sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 2**20


def _rows(results: Path) -> dict[str, dict[str, str]]:
    with (results / "results.csv").open(newline="") as handle:
        return {Path(row["path"]).name: row for row in csv.DictReader(handle)}


#: what a source distribution of the kit holds (copied, so that pip's build writes nothing here)
SOURCE = ("pyproject.toml", "README.md", "targets", "converters", "runtime", "benchmarks", "tui")


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """``python -m venv`` + ``pip install -c constraints.txt '<kit source>[cpu]'`` (not editable)."""
    root = tmp_path_factory.mktemp("fresh")
    source, venv = root / "kit", root / "venv"
    for name in SOURCE:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(_venv_python(venv)), "-m", "pip", "install", "--quiet", "--progress-bar", "off",
         "-c", str(REPO / "constraints.txt"), f"{source}[cpu]"],
        cwd=root, env=_clean_env(), capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, f"pip install '.[cpu]' failed:\n{install.stdout}\n{install.stderr}"
    return venv


@pytest.fixture(scope="module")
def xray_folder(data_dir: Path, tmp_path_factory) -> Path:
    """A subset of the real full-size X-rays (both classes) and the X-ray DICOMs, copied."""
    folder = tmp_path_factory.mktemp("xrays")
    for label in ("NORMAL", "PNEUMONIA"):
        for src in sorted((data_dir / "cxr_samples" / label).glob("*.jpeg"))[:PER_CLASS]:
            shutil.copy(src, folder / f"{label}-{src.name}")
    for src in sorted((data_dir / "dicom").glob("*.dcm")):
        shutil.copy(src, folder / src.name)
    return folder


def _distributions(venv: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    out = subprocess.run([str(_venv_python(venv)), "-c", code], cwd=venv.parent,
                         env=_clean_env(), capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_core_plus_cpu_installs_no_heavy_packages(fresh_venv: Path, capsys) -> None:
    installed = _distributions(fresh_venv)
    names = {_canonical(n) for n in installed}
    with capsys.disabled():
        print(f"\nfresh '.[cpu]' venv: {len(installed)} distributions, "
              f"{_size_mib(fresh_venv):.0f} MiB on disk ({fresh_venv})")
        print("  " + ", ".join(f"{n}=={v}" for n, v in sorted(installed.items(),
                                                            key=lambda kv: kv[0].lower())))
    assert "cxr-deploy-kit" in names and "onnxruntime" in names
    heavy = sorted(names & {_canonical(n) for n in NOT_ON_THE_EDGE})
    assert not heavy, f"the core + [cpu] install pulled in {heavy}"
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_canonical(name)] = version.strip()
    off_pin = {n: v for n, v in installed.items() if _canonical(n) in pins
               and _canonical(n) not in BOOTSTRAP and v != pins[_canonical(n)]}
    assert not off_pin, f"installed versions differ from constraints.txt: {off_pin}"


def test_fresh_venv_triages_like_the_dev_environment(fresh_venv: Path, xray_folder: Path,
                                                     built_bundles: dict[str, Path],
                                                     tmp_path: Path) -> None:
    arm = built_bundles["arm"]
    fresh_out, dev_out = tmp_path / "fresh", tmp_path / "dev"
    fresh = subprocess.run([str(_venv_python(fresh_venv)), "-m", "runtime", "triage",
                            str(xray_folder), "--bundle", str(arm), "--out", str(fresh_out),
                            "--quiet"],
                           cwd=tmp_path, env=_clean_env(), capture_output=True, text=True,
                           timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    # the runtime ran from the fresh venv's site-packages, not from this checkout
    where = subprocess.run([str(_venv_python(fresh_venv)), "-c",
                            "import runtime; print(runtime.__file__)"], cwd=tmp_path,
                           env=_clean_env(), capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(fresh_venv)

    dev = run_cli("triage", str(xray_folder), "--bundle", str(arm), "--out", str(dev_out),
                  "--quiet")
    assert dev.returncode == 0, dev.stderr

    fresh_rows, dev_rows = _rows(fresh_out), _rows(dev_out)
    expected = {p.name for p in xray_folder.iterdir()}
    assert set(fresh_rows) == set(dev_rows) == expected
    for name in sorted(expected):
        a, b = fresh_rows[name], dev_rows[name]
        assert a["status"] == b["status"] == "ok", (name, a["error"], b["error"])
        assert (a["prediction"], a["flagged"]) == (b["prediction"], b["flagged"]), name
        assert float(a["probability"]) == pytest.approx(float(b["probability"]), abs=1e-6), name
    flagged = {row["flagged"] for row in fresh_rows.values()}
    assert len(flagged) == 2, "the subset should hold flagged and unflagged cases"


def test_openvino_artifact_without_openvino_is_a_plain_error(fresh_venv: Path, xray_folder: Path,
                                                              cpu_bundle: Path,
                                                              tmp_path: Path) -> None:
    result = subprocess.run([str(_venv_python(fresh_venv)), "-m", "runtime", "triage",
                             str(xray_folder), "--bundle", str(cpu_bundle), "--artifact",
                             "model.fp32.xml", "--out", str(tmp_path / "out"), "--quiet"],
                            cwd=tmp_path, env=_clean_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert "model.fp32.xml needs OpenVINO" in result.stderr
    assert "cxr-deploy-kit[openvino]" in result.stderr
    assert "Traceback" not in result.stderr
