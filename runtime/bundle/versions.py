"""Installed library versions, as recorded in manifests, self-check keys and benchmark reports."""

from __future__ import annotations

import importlib.metadata as md
import platform
from typing import Iterable


def installed_versions(packages: Iterable[str]) -> dict[str, str]:
    """``{"python": ..., package: version}`` for each of ``packages`` that is installed."""
    out = {"python": platform.python_version()}
    for package in packages:
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    return out
