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


def resign(bundle: Path, relative: str) -> None:
    """Record a changed file's new size and sha256 everywhere the manifest lists it (a bundle
    altered on purpose that still passes its checksum checks)."""
    from runtime.bundle.hashing import sha256_file
    from runtime.contract.manifest import dump_manifest, load_manifest

    file = bundle / relative
    digest, size = sha256_file(file), file.stat().st_size
    manifest = load_manifest(bundle)
    parts = [p for a in manifest.artifacts for p in a.files] + list(manifest.files)
    for part in parts:
        if part.path == relative:
            part.sha256, part.bytes = digest, size
    for entry in manifest.artifacts:
        if entry.path == relative:
            entry.sha256, entry.bytes = digest, size
    if manifest.reference_set is not None and manifest.reference_set.path == relative:
        manifest.reference_set.sha256, manifest.reference_set.bytes = digest, size
    dump_manifest(manifest, bundle / "manifest.json")
