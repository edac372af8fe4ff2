"""torchvision and timm for the tests, through the kit's importer (a CPU-only torch beside PyPI's
CUDA build of torchvision: converters.config.vision_libraries); skipped where not installed."""

from __future__ import annotations

from types import ModuleType

import pytest

from converters.config.vision_libraries import import_vision


def vision(name: str) -> ModuleType:
    """``name`` (torchvision, torchvision.models, timm, ...) imported, or the test skipped."""
    try:
        return import_vision(name)
    except ImportError as exc:
        pytest.skip(f"{name} is not installed ({exc})")
