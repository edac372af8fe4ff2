"""Bundle loading: read the typed manifest, verify the chosen artifact, open it with its engine.

A bundle (``dist/<target>/``) is complete on its own; its manifest (:mod:`runtime.contract`) is
the single source of truth. Before an artifact is loaded, every file it is made of (an OpenVINO
``.xml`` and its ``.bin``) is checked against the manifest's ``bytes`` and ``sha256``; a bundle
that does not match is refused with a :class:`BundleError` and nothing is run. Once open, the
artifact must answer what the manifest declares, (N, classes) probabilities summing to 1, on the
bundle's reference images: anything else (e.g. logits) is refused, never silently softmaxed.
A bundle with a feature-space scope guard (``manifest.scope_guard``) has its reference file
verified the same way, and the artifact must return features of the declared width.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.contract import CHILDREN_1_TO_5, ArtifactEntry, ContractError, FileEntry, Manifest, \
    Population, SiteCalibration, load_manifest
from runtime.engines import Engine, EngineError, create_engine, engine_kind
from runtime.feature_guard import FeatureGuard, GuardError, load_reference
from runtime.formats import FORMATS, Placement
from runtime.hashing import sha256_file
from runtime.preprocess import Preprocessing
from runtime.site import applies_to, read_site_calibration, site_summary

log = logging.getLogger(__name__)

#: how far a row of probabilities may be from summing to 1 (float32 softmax + FP16/INT8 outputs)
SUM_TOLERANCE = 1e-3


class BundleError(RuntimeError):
    """A bundle that is missing, incomplete, tampered with or cannot be run here."""


@dataclass
class Bundle:
    """A verified bundle with its chosen artifact open in an engine."""

    path: Path
    manifest: Manifest
    artifact: ArtifactEntry
    engine: Engine
    device: str  # "cpu" or "cuda": where the model runs
    notes: list[str] = field(default_factory=list)  # fallbacks and other things worth saying
    site: SiteCalibration | None = None  # runtime.site: sha256-checked at load
    guard: FeatureGuard | None = None  # the feature-space scope guard (None: rules only)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.manifest.preprocessing

    @property
    def site_in_force(self) -> SiteCalibration | None:
        """The site calibration when it was measured with this artifact, else None."""
        return self.site if self.site and applies_to(self.site, self.artifact.path) else None

    @property
    def threshold(self) -> float:
        """The threshold in force: the site's (calibrated for this artifact), else the build's."""
        site = self.site_in_force
        return site.threshold if site else self.manifest.threshold

    @property
    def classes(self) -> list[str]:
        return self.manifest.model.classes

    @property
    def positive_class(self) -> str:
        return self.manifest.model.positive_class

    @property
    def positive_index(self) -> int:
        return self.manifest.model.positive_index

    @property
    def population(self) -> Population:
        """Whom the model was trained on (bundles without the field: the reference models')."""
        return self.manifest.model.population or CHILDREN_1_TO_5

    @property
    def preprocessing_backend(self) -> str:
        return self.manifest.preprocessing_backend

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 -> (N, classes) probabilities, checked against the contract."""
        return self._checked(self.engine.run(batch), len(batch))

    def _checked(self, out: np.ndarray, rows: int) -> np.ndarray:
        out = np.asarray(out, dtype=np.float32)
        problem = output_problem(out, rows, len(self.classes))
        if problem:
            raise EngineError(f"{self.artifact.path} {problem}")
        return out

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 -> (N,) probability of the positive class."""
        return self.probabilities(batch)[:, self.positive_index]

    def predict_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, 1, S, S) float32 -> (N,) probability of the positive class and the (N, D)
        scope features (None when the artifact has no features output)."""
        run = getattr(self.engine, "run_with_features", None)
        if run is None:
            return self.predict(batch), None
        out, features = run(batch)
        probabilities = self._checked(out, len(batch))[:, self.positive_index]
        return probabilities, None if features is None else np.asarray(features, np.float32)

    def describe(self) -> dict[str, Any]:
        """What ran, for summaries and logs."""
        return {"bundle": str(self.path), "target": self.manifest.target,
                "artifact": self.artifact.path, "sha256": self.artifact.sha256,
                "format": self.artifact.format, "precision": self.artifact.precision,
                "engine": self.engine.name, "requested": list(self.engine.requested),
                "active": list(self.engine.active), "inference_precision": self.engine.precision,
                "fell_back": bool(self.engine.fell_back), "device": self.device,
                "threshold": self.threshold, "build_threshold": self.manifest.threshold,
                **({"site": site_summary(self.site_in_force)} if self.site_in_force else {})}


def output_problem(out: np.ndarray, rows: int, classes: int) -> str | None:
    """Why ``out`` is not (rows, classes) class probabilities, or None when it is."""
    if out.ndim != 2 or out.shape != (rows, classes):
        return (f"returned shape {tuple(out.shape)}; the manifest declares ({rows}, {classes}) "
                "class probabilities")
    if not np.isfinite(out).all():
        return "returned NaN or infinite values instead of class probabilities"
    sums = out.sum(axis=1, dtype=np.float64)
    if (out < -1e-4).any() or (out > 1 + 1e-4).any() or np.abs(sums - 1).max() > SUM_TOLERANCE:
        return (f"returned values that are not probabilities (range {out.min():.3g}..{out.max():.3g},"
                f" rows sum to {sums.min():.4g}..{sums.max():.4g}); the manifest declares class "
                "probabilities: the model must end in a softmax. Rebuild the bundle with "
                "`python -m converters build`")
    return None


def read_manifest(path: str | Path) -> Manifest:
    """The validated, typed manifest of the bundle at ``path`` (no artifact is touched)."""
    try:
        return load_manifest(path)
    except ContractError as exc:
        raise BundleError(str(exc)) from None


def choose_artifact(manifest: Manifest, artifact: str | None = None) -> ArtifactEntry:
    """The entry for ``artifact`` (a file name or a format key), else the bundle's default."""
    if artifact is None:
        return manifest.default
    wanted = Path(str(artifact)).name
    for entry in manifest.artifacts:
        if wanted in (entry.path, entry.format):
            return entry
    listed = ", ".join(f"{e.path} ({e.format})" for e in manifest.artifacts)
    raise BundleError(f"artifact {artifact!r} is not in the bundle; it has: {listed}")


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


def placement_of(root: Path, entry: ArtifactEntry) -> Placement:
    """How the manifest says to run ``entry``, with relative ``*_path`` options made absolute."""
    options: dict[str, dict] = {}
    for provider, values in entry.provider_options.items():
        options[provider] = {k: (str(root / v) if k.endswith("_path") and isinstance(v, str)
                                 and not Path(v).is_absolute() else v) for k, v in values.items()}
    return Placement(providers=tuple(entry.providers), provider_options=options,
                     device=entry.device, precision_hint=entry.precision_hint)


def open_artifact(root: Path, entry: ArtifactEntry, device: str = "auto",
                  cuda_ok: bool | None = None, threads: int | None = None
                  ) -> tuple[Engine, list[str]]:
    """Verify ``entry``'s files and open it with its engine for ``device`` on this machine."""
    verify_artifact(root, entry)
    if entry.format not in FORMATS:
        raise BundleError(f"{entry.path} has format {entry.format!r}, unknown to this runtime "
                          f"(known: {', '.join(FORMATS)}); update the kit or rebuild the bundle")

    def cuda() -> tuple[bool, str]:
        if cuda_ok is not None:
            return cuda_ok, "forced"
        from runtime.gpu_preprocess import cuda_usable

        return cuda_usable()

    try:
        kind = engine_kind(entry.engine)
        placement, notes = kind.adapt(placement_of(root, entry), device, cuda)
        engine = create_engine(_safe_member(root, entry.path), entry.engine, placement,
                               threads=threads)
    except EngineError as exc:
        raise BundleError(f"{entry.path}: {exc}") from exc
    notes = [f"{entry.path}: {n}" for n in notes]
    for note in notes:
        log.warning("%s", note)
    if engine.fell_back:  # the engine has logged it loudly; keep it for the summary
        notes.append(f"{entry.path}: engine FELL BACK: "
                     f"asked for {engine.requested}, running on {engine.active}")
    if entry.precision_hint and engine.precision != entry.precision_hint:
        notes.append(f"{entry.path} runs in {engine.precision}, not the {entry.precision_hint} "
                     "asked for")
    return engine, notes


def check_output_contract(manifest: Manifest, entry: ArtifactEntry, engine: Engine,
                          probe: np.ndarray) -> None:
    """Refuse an artifact whose output is not the (N, classes) probabilities it must be, or,
    when the bundle has a scope guard, whose features are not (N, declared width)."""
    guard = manifest.scope_guard
    try:
        if guard is None:
            out, features = engine.run(probe), None
        else:
            out, features = engine.run_with_features(probe)
        out = np.asarray(out, dtype=np.float32)
    except Exception as exc:  # an engine failing in its own way on real inputs
        raise BundleError(f"{entry.path} failed on the bundle's reference images: {exc}") from exc
    problem = output_problem(out, len(probe), len(manifest.model.classes))
    if problem:
        raise BundleError(f"{entry.path} {problem}")
    if guard is not None:
        shape = None if features is None else tuple(np.shape(features))
        if shape != (len(probe), guard.dim):
            raise BundleError(
                f"{entry.path} returned features of shape {shape}; the manifest's scope guard "
                f"declares a '{guard.output}' output of ({len(probe)}, {guard.dim}). Rebuild the "
                "bundle with `python -m converters build`")


def load_guard(root: Path, manifest: Manifest, entry: ArtifactEntry) -> FeatureGuard | None:
    """The verified feature reference and ``entry``'s limit (None: the bundle has no guard)."""
    g = manifest.scope_guard
    if g is None:
        return None
    file = verify_file(root, FileEntry(g.path, g.sha256, g.bytes))
    try:
        reference = load_reference(file)
    except GuardError as exc:
        raise BundleError(f"{exc}; rebuild the bundle with `python -m converters build`") from None
    if reference.dim != g.dim:
        raise BundleError(f"scope reference {g.path} is for {reference.dim} features, the "
                          f"manifest declares {g.dim}; rebuild the bundle")
    if entry.path not in g.artifacts:
        raise BundleError(f"the manifest's scope guard has no limit for {entry.path}; rebuild the "
                          "bundle with `python -m converters build`")
    return FeatureGuard(reference, g.artifacts[entry.path].limit, g.share)


def load_bundle(path: str | Path, artifact: str | None = None, device: str = "auto",
                cuda_ok: bool | None = None, threads: int | None = None) -> Bundle:
    """Read, verify and open a bundle.

    ``device``: "auto" runs with the manifest's providers where this machine can (CUDA only when
    it is really usable), "cpu" forces the CPU, "cuda" requires a working CUDA provider.
    ``cuda_ok`` overrides the CUDA probe (tests).
    """
    if device not in ("auto", "cpu", "cuda"):
        raise BundleError(f"unknown device {device!r}; expected auto, cpu or cuda")
    root = Path(path)
    manifest = read_manifest(root)
    entry = choose_artifact(manifest, artifact)
    site = read_site_calibration(root, manifest)  # a changed calibration is refused here
    engine, notes = open_artifact(root, entry, device, cuda_ok, threads)
    guard = load_guard(root, manifest, entry)
    from runtime.selfcheck import probe_inputs

    check_output_contract(manifest, entry, engine, probe_inputs(root, manifest))
    if site is not None and not applies_to(site, entry.path):
        notes.append(f"the site calibration \"{site.site}\" was measured with "
                     f"{site.source.artifact}, not {entry.path}: the build threshold "
                     f"{manifest.threshold:.4f} is in force")
        log.warning("%s", notes[-1])
    return Bundle(path=root, manifest=manifest, artifact=entry, engine=engine,
                  device="cuda" if engine.on_cuda else "cpu", notes=notes, site=site,
                  guard=guard)
