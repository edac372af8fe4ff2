"""Converter fixtures: the ResNet-18-style second architecture (shared bundles: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def resnet_checkpoint(tmp_path_factory, pneumoniamnist) -> Path:
    """A ResNet-18-style checkpoint at 64x64 (a second, different architecture)."""
    from tests.converters.resnet_fixture import make_resnet_checkpoint

    return make_resnet_checkpoint(pneumoniamnist,
                                  tmp_path_factory.mktemp("resnet") / "resnet18_small.safetensors",
                                  images=512)


@pytest.fixture(scope="session")
def resnet_bundle(tmp_path_factory, resnet_checkpoint: Path, data_dir: Path) -> Path:
    """The gpu bundle (ONNX FP32 + FP16) of the ResNet checkpoint, through ``build_bundle``."""
    from converters.build import build_bundle

    return build_bundle("gpu", resnet_checkpoint, tmp_path_factory.mktemp("dist-resnet"),
                        str(data_dir), progress=False)
