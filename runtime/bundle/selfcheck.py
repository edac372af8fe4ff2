"""The bundle proves itself on the device: re-run its reference set, compare with the build.

The bundle carries ``reference_set.npz`` (real validation images, preprocessed, and every
artifact's probabilities as measured at build; its sha256 is in the manifest). Here each artifact
runs those inputs with the providers this device really gives and is compared with its build-time
answers: decision agreement at every finding's build threshold and max |difference| over every
output column (every label's probability), which must stay within
the format row's ``device_tolerance`` (:mod:`runtime.contract.formats`).

``python -m runtime verify`` checks every artifact; ``runtime triage`` checks the one it runs,
once per (bundle, artifact, providers, library versions), remembered in a user cache folder
(``$CXR_CACHE_DIR``, else ``$XDG_CACHE_HOME/cxr-kit``, else ``~/.cache/cxr-kit``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bundle.files import is_inside
from runtime.bundle.versions import installed_versions
from runtime.contract.formats import get_format
from runtime.contract.manifest import MANIFEST, ArtifactEntry, FileEntry, Manifest
from runtime.engines.base import Engine, predict_proba

CACHE_ENV = "CXR_CACHE_DIR"
_LIBRARIES = ("numpy", "onnxruntime", "onnxruntime-gpu", "openvino")


class SelfCheckError(RuntimeError):
    """The device answers differently from the build (or the reference set is unusable)."""


@dataclass(frozen=True)
class ReferenceData:
    inputs: np.ndarray  # (N, C, S, S) float32
    probabilities: dict[str, np.ndarray]  # artifact path -> (N, classes) at build


@dataclass(frozen=True)
class ArtifactCheck:
    """One artifact re-run on this device against its build-time answers."""

    artifact: str
    format: str
    engine: str
    providers: list[str]  # what really ran it here
    n: int
    agreement: float  # share of identical decisions at the build thresholds (every finding)
    max_abs_diff: float  # over every output column (every label's probability)
    tolerance: float
    passed: bool
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_reference_set(root: Path, manifest: Manifest) -> ReferenceData:
    """The bundle's reference set, checked against the manifest's sha256."""
    from runtime.bundle.files import verify_file
    from runtime.errors import BundleError

    ref = manifest.reference_set
    if ref is None:
        raise BundleError(f"bundle {root} carries no reference set; rebuild it with "
                          f"`python -m converters build --target {manifest.target}`")
    path = verify_file(root, FileEntry(ref.path, ref.sha256, ref.bytes))
    try:
        with np.load(path, allow_pickle=False) as data:
            inputs = np.asarray(data["inputs"], dtype=np.float32)
            probs = {name: np.asarray(data[f"probabilities/{name}"], dtype=np.float32)
                     for name in ref.artifacts}
    except (KeyError, ValueError, OSError) as exc:
        raise BundleError(f"{path} is not a usable reference set ({exc}); rebuild the bundle") from exc
    (height, width), channels = manifest.preprocessing.shape, manifest.preprocessing.channels
    if inputs.shape != (ref.n, channels, height, width):
        raise BundleError(f"{path}: inputs have shape {inputs.shape}, the manifest declares "
                          f"({ref.n}, {channels}, {height}, {width}); rebuild the bundle")
    return ReferenceData(inputs, probs)


def probe_inputs(root: Path, manifest: Manifest, count: int = 8) -> np.ndarray:
    """A few real preprocessed images to check an artifact's output contract with."""
    return load_reference_set(root, manifest).inputs[:count]


def compare(entry: ArtifactEntry, engine: Engine, manifest: Manifest, ref: ReferenceData
            ) -> ArtifactCheck:
    """Run ``engine`` over the reference inputs and judge it against the build's answers."""
    row = get_format(entry.format)
    base = dict(artifact=entry.path, format=entry.format, engine=engine.name,
                providers=list(engine.active), n=len(ref.inputs), tolerance=row.device_tolerance)
    expected = ref.probabilities.get(entry.path)
    if expected is None:
        return ArtifactCheck(**base, agreement=0.0, max_abs_diff=float("inf"), passed=False,
                             error="the reference set has no build-time answers for it")
    try:
        got = np.asarray(predict_proba(engine, ref.inputs), dtype=np.float32)
    except Exception as exc:  # an engine failing in its own way
        return ArtifactCheck(**base, agreement=0.0, max_abs_diff=float("inf"), passed=False,
                             error=f"{type(exc).__name__}: {exc}")
    if got.shape != expected.shape:
        return ArtifactCheck(**base, agreement=0.0, max_abs_diff=float("inf"), passed=False,
                             error=f"output shape {got.shape}, build had {expected.shape}")
    diff = float(np.abs(got.astype(np.float64) - expected).max())  # every output column
    agree = float(np.mean(decisions(got, manifest) == decisions(expected, manifest)))
    return ArtifactCheck(**base, agreement=agree, max_abs_diff=diff,
                         passed=bool(diff <= row.device_tolerance))


def decisions(probabilities: np.ndarray, manifest: Manifest) -> np.ndarray:
    """(N,) one decision per image over every finding: the tuple of which findings reach their
    build threshold, as one integer (bit i: finding i); one finding: 1 flagged, 0 not."""
    out = np.zeros(len(probabilities), dtype=np.int64)
    for bit, (index, threshold) in enumerate(zip(manifest.model.finding_indices,
                                                 manifest.thresholds().values())):
        out |= (probabilities[:, index] >= threshold).astype(np.int64) << bit
    return out


def verify_all(root: str | Path, device: str = "auto") -> list[ArtifactCheck]:
    """Every artifact of the bundle re-run here (files verified first)."""
    from runtime.bundle.artifacts import open_artifact, read_manifest
    from runtime.errors import BundleError

    root = Path(root)
    manifest = read_manifest(root)
    ref = load_reference_set(root, manifest)
    checks = []
    for entry in manifest.artifacts:
        try:
            engine, _notes = open_artifact(root, entry, device)
        except BundleError as exc:
            row = get_format(entry.format) if entry.format else None
            checks.append(ArtifactCheck(entry.path, entry.format, entry.engine, [], len(ref.inputs),
                                        0.0, float("inf"), row.device_tolerance if row else 0.0,
                                        False, str(exc)))
            continue
        checks.append(compare(entry, engine, manifest, ref))
    return checks


# --------------------------------------------------------------------------------------------
# the cached check before a triage


def cache_dir() -> Path:
    """Where self-check verdicts are remembered (never inside a bundle or an input folder)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxr-kit"


def library_versions() -> dict[str, str]:
    """The versions that can change an artifact's answers (part of the self-check's cache key)."""
    return installed_versions(_LIBRARIES)


def cache_key(root: Path, entry: ArtifactEntry, engine: Engine) -> tuple[str, dict[str, Any]]:
    """(digest, facts) for a check: the manifest's sha256, the artifact, providers, versions."""
    from runtime.bundle.hashing import sha256_file

    facts = {"manifest_sha256": sha256_file(root / MANIFEST), "artifact": entry.path,
             "engine": engine.name, "providers": list(engine.active),
             "precision": str(engine.precision), "versions": library_versions()}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()
    return digest, facts


def self_check(bundle, never_inside: Path | None = None) -> dict[str, Any]:
    """Check the artifact ``bundle`` (a :class:`runtime.bundle.load.Bundle`) runs, once per key.

    Returns the verdict (also for the summary); raises :class:`SelfCheckError` when this device
    answers differently from the build. ``never_inside``: a folder the cache must not be in.
    """
    root = Path(bundle.path)
    digest, facts = cache_key(root, bundle.artifact, bundle.engine)
    folder = cache_dir() / "self-check"
    cache_ok = never_inside is None or not is_inside(folder, never_inside)
    cached = folder / f"{digest}.json"
    verdict: dict[str, Any] | None = None
    if cache_ok and cached.is_file():
        try:
            verdict = json.loads(cached.read_text(encoding="utf-8"))
            verdict["cached"] = True
        except (OSError, ValueError):
            verdict = None
    if verdict is None:
        ref = load_reference_set(root, bundle.manifest)
        check = compare(bundle.artifact, bundle.engine, bundle.manifest, ref)
        verdict = {**facts, **check.as_dict(), "checked_at":
                   dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cached": False}
        if cache_ok and check.passed:  # a failure is checked again next time
            try:
                folder.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(".tmp")
                tmp.write_text(json.dumps(verdict, indent=2) + "\n", encoding="utf-8")
                os.replace(tmp, cached)
                verdict["cache_file"] = str(cached)
            except OSError as exc:  # a read-only home: check every time, say so
                verdict["cache_error"] = str(exc)
    if not verdict["passed"]:
        why = verdict.get("error") or (
            f"max |difference| {verdict['max_abs_diff']:.3g} exceeds the {verdict['format']} "
            f"tolerance {verdict['tolerance']:.0e}, decisions agree on "
            f"{100 * verdict['agreement']:.1f}% of {verdict['n']} images")
        raise SelfCheckError(
            f"{bundle.artifact.path} answers differently on this device "
            f"({', '.join(verdict['providers'])}) than when the bundle was built: {why}. Refusing "
            f"to triage. Run `python -m runtime verify {root}` for every artifact, try another "
            "--artifact or --device, or rebuild the bundle for this device.")
    return verdict
