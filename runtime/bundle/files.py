"""A bundle's files: every file the manifest lists is checked (size, sha256) before use."""

from __future__ import annotations

from pathlib import Path

from runtime.bundle.hashing import sha256_file
from runtime.contract.manifest import ArtifactEntry, FileEntry
from runtime.errors import BundleError


def is_inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies under it (symlinks resolved)."""
    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents


def _safe_member(root: Path, relative: str) -> Path:
    candidate = (root / relative).resolve()
    if root.resolve() not in candidate.parents:
        raise BundleError(f"manifest names a file outside the bundle: {relative!r}")
    return candidate


def verify_file(root: str | Path, part: FileEntry) -> Path:
    """Check one bundle file's size and sha256 against the manifest; return its path."""
    root = Path(root)
    file = _safe_member(root, part.path)
    if not file.is_file():
        raise BundleError(f"bundle is incomplete: {part.path} is listed in the manifest but missing")
    actual_size = file.stat().st_size
    if actual_size != part.bytes:
        raise BundleError(f"bundle file {part.path} is {actual_size} bytes, the manifest says "
                          f"{part.bytes}: the bundle is incomplete or was modified; rebuild or "
                          "re-copy it")
    digest = sha256_file(file)
    if digest != part.sha256:
        raise BundleError(f"bundle file {part.path} failed its sha256 check (manifest "
                          f"{part.sha256[:12]}…, file {digest[:12]}…): it was modified or "
                          "corrupted; refusing to run it")
    return file


def verify_artifact(root: str | Path, entry: ArtifactEntry) -> list[Path]:
    """Check bytes + sha256 of every file of ``entry``; return their paths (main file first)."""
    return [verify_file(root, part) for part in entry.all_files()]
