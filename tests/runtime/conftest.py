"""Runtime fixtures: a real CPU bundle built once per session by the converters."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cpu_bundle(tmp_path_factory, data_dir: Path, reference_checkpoint: Path) -> Path:
    """dist/cpu built from the reference checkpoint by the converters (~1 minute, once)."""
    from converters.build import build_bundle

    return build_bundle("cpu", reference_checkpoint, tmp_path_factory.mktemp("dist"),
                        data=str(data_dir), progress=False)


@pytest.fixture(scope="session")
def loaded_bundle(cpu_bundle: Path):
    from runtime.bundle import load_bundle

    return load_bundle(cpu_bundle)
