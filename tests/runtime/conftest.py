"""Runtime fixtures (the bundles themselves are built once in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def loaded_bundle(cpu_bundle: Path):
    from runtime.bundle.load import load_bundle

    return load_bundle(cpu_bundle)
