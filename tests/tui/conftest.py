"""TUI fixtures: a real CPU bundle (built once), a folder of real X-rays, and a workspace folder
laid out as a user's would be (dist/cpu, xrays/, benchmarks/reports/report.json)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from pytest_textual_snapshot import SVGImageExtension

# pytest-textual-snapshot 1.0 names its extension the syrupy<5 way (_file_extension); syrupy 7
# reads file_extension, so without this the SVG snapshots would be saved as .raw files
SVGImageExtension.file_extension = "svg"

HERE = Path(__file__).resolve().parent
#: the artifact the snapshot tests show (the first in the model picker): the FP32 IR
PINNED_ARTIFACT = "model.fp32.xml"
#: real X-rays copied for the UI tests: full-size Kermany JPEGs and 224 px ones, both classes
PICKS = {"cxr_samples/NORMAL": 3, "cxr_samples/PNEUMONIA": 3, "kermany_test_224/NORMAL": 3,
         "kermany_test_224/PNEUMONIA": 2}


@pytest.fixture(scope="session")
def tui_cpu_bundle(request) -> Path:
    """The session's cpu bundle (tests/conftest.py builds it once from the reference checkpoint);
    ``TUI_TEST_BUNDLE=dist/cpu`` uses a bundle already built instead (quick UI iterations)."""
    prebuilt = os.environ.get("TUI_TEST_BUNDLE")
    if prebuilt:
        return Path(prebuilt).resolve()
    return request.getfixturevalue("cpu_bundle")


@pytest.fixture(scope="session")
def xray_source(tmp_path_factory, data_dir: Path) -> Path:
    """12 files: 11 real X-rays in normal/ and pneumonia/, and one text file named .jpg."""
    root = tmp_path_factory.mktemp("xray-source") / "xrays"
    for sub, count in PICKS.items():
        dest = root / sub.split("/")[1].lower()
        dest.mkdir(parents=True, exist_ok=True)
        files = sorted((data_dir / sub).glob("*.jpeg"))[:count]
        assert len(files) == count, f"not enough images in {data_dir / sub}"
        for file in files:
            shutil.copy2(file, dest / file.name)
    (root / "notes-scan.jpg").write_text("scanned by reception, not an image\n")
    return root


def pin_manifest(bundle: Path) -> None:
    """Fix what varies from machine to machine (build time, machine, versions, data and config
    paths) and show the FP32 IR first, so that snapshots do not change."""
    from runtime.contract.manifest import dump_manifest, load_manifest

    manifest = load_manifest(bundle)
    manifest.default_artifact = PINNED_ARTIFACT
    manifest.default_artifact_reason = "pinned by the UI tests"
    prov = manifest.provenance
    prov.data, prov.built_at = "pneumoniamnist.npz", "2026-01-01T00:00:00+00:00"
    prov.machine, prov.versions = "the build machine", {"pinned": "by the UI tests"}
    if prov.model_config:  # an absolute path on the build machine
        prov.model_config = "models/reference/model.toml"
    dump_manifest(manifest, bundle / "manifest.json")


@pytest.fixture
def workspace(tmp_path: Path, tui_cpu_bundle: Path, xray_source: Path, monkeypatch) -> Path:
    """A fresh working folder, made the current one: dist/cpu, xrays/, a benchmark report."""
    shutil.copytree(tui_cpu_bundle, tmp_path / "dist" / "cpu")
    pin_manifest(tmp_path / "dist" / "cpu")
    shutil.copytree(xray_source, tmp_path / "xrays")
    reports = tmp_path / "benchmarks" / "reports"
    reports.mkdir(parents=True)
    shutil.copy2(HERE / "data" / "report.json", reports / "report.json")
    monkeypatch.chdir(tmp_path)
    return tmp_path
