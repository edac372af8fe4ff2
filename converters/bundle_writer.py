"""Writes ``dist/<target>/``: artifacts + ``manifest.json`` + ``report.md``, swapped in atomically.

Everything is written into a hidden sibling folder (``dist/.<target>.partial-*``) first; only a
complete bundle is renamed into place (``renameat2(RENAME_EXCHANGE)`` where Linux offers it, else
two renames), so the runtime never sees a half-written bundle and a failed build leaves the
previous bundle untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import io
import os
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from runtime.bundle.hashing import sha256_file
from runtime.contract.manifest import (
    MANIFEST,
    POPULATION_CHECK,
    REFERENCE_SET,
    REPORT,
    SCOPE_REFERENCE,
    ArtifactEntry,
    FileEntry,
    Manifest,
    dump_manifest,
)

#: a fixed timestamp for the members of reference_set.npz, so the same arrays give the same bytes
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def file_entry(path: Path, root: Path) -> FileEntry:
    """A file's path relative to the bundle root, sha256 and size."""
    return FileEntry(path=path.relative_to(root).as_posix(), sha256=sha256_file(path),
                     bytes=path.stat().st_size)


def write_reference_set(dest: Path, inputs: np.ndarray, indices: np.ndarray,
                        probabilities: dict[str, np.ndarray]) -> Path:
    """The self-check's reference set (see :class:`runtime.contract.manifest.ReferenceSet`)."""
    return write_npz(dest, {"inputs": np.ascontiguousarray(inputs, np.float32),
                            "indices": np.asarray(indices, np.int64),
                            **{f"probabilities/{name}": np.ascontiguousarray(p, np.float32)
                               for name, p in probabilities.items()}})


def write_npz(dest: Path, arrays: dict[str, np.ndarray], compress: bool = False) -> Path:
    """An ``.npz`` (like ``np.savez``, or ``np.savez_compressed`` with ``compress``; no pickle)
    whose bytes depend only on the arrays (fixed zip times and deflate level)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(dest, "w", compression=method, compresslevel=6 if compress else None
                         ) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = method
            archive.writestr(info, buffer.getvalue())
    return dest


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_into_place(staged: Path, final: Path) -> None:
    """Make ``staged`` visible as ``final`` without ever exposing a partial folder."""
    if not final.exists():
        os.rename(staged, final)
        return
    if _exchange(staged, final):  # staged now holds the old bundle
        shutil.rmtree(staged, ignore_errors=True)
        return
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(final, old)
    os.rename(staged, final)
    shutil.rmtree(old, ignore_errors=True)


def clean_stale(out_root: Path, target: str) -> None:
    """Remove hidden leftovers of builds that were killed before they finished."""
    for pattern in (f".{target}.partial-*", f".{target}.old-*"):
        for stale in out_root.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def write_bundle(out_root: Path, target: str, artifacts: list[tuple[ArtifactEntry, list[Path]]],
                 manifest: Manifest, reference_set: Path | None,
                 render_report: Callable[[Manifest], str],
                 scope_reference: Path | None = None,
                 population_check: Path | None = None) -> Path:
    """Copy artifacts, the reference set, the scope guard's reference and the population check's
    graph, hash every file,
    write manifest + report, swap into ``out_root/target``.

    ``artifacts`` pairs each manifest entry (``path`` = main file name) with the files that make
    it up (main file first, e.g. an OpenVINO ``.xml`` then its ``.bin``).
    """
    out_root.mkdir(parents=True, exist_ok=True)
    clean_stale(out_root, target)
    staged = out_root / f".{target}.partial-{uuid.uuid4().hex[:8]}"
    staged.mkdir()
    try:
        entries = []
        hashed: dict[str, FileEntry] = {}  # bundle-relative path -> its entry, each file hashed once

        def copy_in(source: Path, name: str) -> FileEntry:
            dest = staged / name
            shutil.copy2(source, dest)
            hashed[name] = file_entry(dest, staged)
            return hashed[name]

        for entry, files in artifacts:
            parts = [copy_in(source, source.name) for source in files]
            main = parts[0]
            entries.append(dataclasses.replace(
                entry, path=main.path, sha256=main.sha256, bytes=main.bytes, files=parts,
                total_bytes=sum(p.bytes for p in parts)))
        manifest = dataclasses.replace(manifest, artifacts=entries)
        if reference_set is not None and manifest.reference_set is not None:
            ref = copy_in(reference_set, REFERENCE_SET)
            manifest = dataclasses.replace(manifest, reference_set=dataclasses.replace(
                manifest.reference_set, path=ref.path, sha256=ref.sha256, bytes=ref.bytes))
        if scope_reference is not None and manifest.scope_guard is not None:
            ref = copy_in(scope_reference, SCOPE_REFERENCE)
            manifest = dataclasses.replace(manifest, scope_guard=dataclasses.replace(
                manifest.scope_guard, path=ref.path, sha256=ref.sha256, bytes=ref.bytes))
        if population_check is not None and manifest.population_check is not None:
            graph = copy_in(population_check, POPULATION_CHECK)
            manifest = dataclasses.replace(manifest, population_check=dataclasses.replace(
                manifest.population_check, path=graph.path, sha256=graph.sha256,
                bytes=graph.bytes))
        (staged / REPORT).write_text(render_report(manifest), encoding="utf-8")
        manifest = dataclasses.replace(manifest, files=[
            hashed.get(p.relative_to(staged).as_posix()) or file_entry(p, staged)
            for p in sorted(staged.rglob("*")) if p.is_file()])
        dump_manifest(manifest, staged / MANIFEST)
        for path in staged.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        final = out_root / target
        swap_into_place(staged, final)
        return final
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
