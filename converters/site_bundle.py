"""Writes a site-calibrated copy of a bundle: the original's files + ``site_calibration.json``.

The original bundle is only read. Its files are copied into a hidden sibling of ``out``, every
artifact and the reference set are checked against the manifest in the copy, the calibration is
written and declared in the copy's manifest (path, bytes, sha256; the runtime refuses a changed
one), and the folder is swapped into place atomically
(:func:`converters.bundle_writer.swap_into_place`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path

from converters.bundle_writer import clean_stale, file_entry, swap_into_place
from runtime.bundle.artifacts import read_manifest
from runtime.bundle.files import verify_artifact, verify_file
from runtime.bundle.site import read_site_calibration
from runtime.contract.manifest import (
    MANIFEST,
    SITE_CALIBRATION,
    FileEntry,
    SiteCalibration,
    dump_manifest,
    to_dict,
)
from runtime.errors import BundleError


def default_out(bundle: Path, site_slug: str) -> Path:
    """``<bundle>-site-<name>`` beside the original bundle."""
    bundle = Path(bundle) if Path(bundle).name else Path(os.path.abspath(bundle))
    return bundle.with_name(f"{bundle.name}-site-{site_slug}")


def site_calibration_json(site: SiteCalibration) -> str:
    """``site_calibration.json``'s text: a model with one finding leaves out the per-finding keys
    (empty), so its file is what it was before models could have several findings."""
    data = to_dict(site)
    for key in ("finding_thresholds", "findings"):
        if not data.get(key):
            data.pop(key, None)
    return json.dumps(data, indent=2) + "\n"


def write_site_bundle(source: Path, out: Path, site: SiteCalibration) -> Path:
    """A verified copy of ``source`` at ``out`` carrying ``site``; returns ``out``."""
    if out.exists() and not (out / MANIFEST).is_file():
        raise BundleError(f"--out {out} exists and is not a bundle; it would be replaced: "
                          "choose another --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out.parent, out.name)
    staged = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, staged, symlinks=False)
        manifest = read_manifest(staged)
        for entry in manifest.artifacts:  # the copy is what the manifest says, byte for byte
            verify_artifact(staged, entry)
        if manifest.reference_set is not None:
            ref = manifest.reference_set
            verify_file(staged, FileEntry(ref.path, ref.sha256, ref.bytes))
        calibration = staged / SITE_CALIBRATION
        calibration.write_text(site_calibration_json(site), encoding="utf-8")
        declared = file_entry(calibration, staged)
        files = [f for f in manifest.files if f.path != SITE_CALIBRATION] + [declared]
        manifest = dataclasses.replace(manifest, site_calibration=declared,
                                       files=sorted(files, key=lambda f: f.path))
        dump_manifest(manifest, staged / MANIFEST)
        if read_site_calibration(staged, read_manifest(staged)) != site:
            raise BundleError(f"{calibration} does not read back as written; nothing replaced")
        for path in staged.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        swap_into_place(staged, out)
        return out
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
