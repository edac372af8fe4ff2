"""The command-line options every command that opens a bundle takes (triage, serve, listen)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")


def add_bundle_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bundle``, ``--artifact`` and ``--device``, with the same defaults and help everywhere."""
    parser.add_argument("--bundle", type=Path, default=Path("dist/cpu"),
                        help="bundle folder with manifest.json (default: dist/cpu)")
    parser.add_argument("--artifact", default=None,
                        help="artifact file name or format key (default: the bundle's "
                             "default_artifact)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to run: auto uses CUDA only when it really works here")
