"""Helpers shared by the runtime tests (subprocess runs of the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def runtime_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra.pop("PYTHONPATH", ""), str(REPO),
                                                      env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``python -m runtime ARGS`` in a subprocess (the way users run it)."""
    return subprocess.run([sys.executable, "-m", "runtime", *args], cwd=REPO,
                          env=runtime_env(**env), capture_output=True, text=True,
                          timeout=timeout)
