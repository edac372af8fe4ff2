"""A bundle's artifacts: read the manifest, choose an artifact, open it with its engine and
check that it answers what the manifest declares."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from runtime.bundle.files import _safe_member, verify_artifact
from runtime.contract.formats import FORMATS, Placement
from runtime.contract.manifest import ArtifactEntry, ContractError, Manifest, load_manifest
from runtime.engines.base import Engine, EngineError
from runtime.engines.registry import create_engine, engine_kind
from runtime.errors import BundleError

log = logging.getLogger(__name__)

#: how far a row of probabilities may be from summing to 1 (float32 softmax + FP16/INT8 outputs)
SUM_TOLERANCE = 1e-3


def output_problem(out: np.ndarray, rows: int, classes: int,
                   non_finite_rows_ok: bool = False, task: str = "multiclass") -> str | None:
    """Why ``out`` is not (rows, classes) class probabilities, or None when it is.

    ``task``: "multiclass" rows must sum to one; "multilabel" columns are independent
    probabilities (each in [0, 1]).
    ``non_finite_rows_ok``: a row holding NaN or infinity is left for the caller to report on its
    own image (the other rows are still held to the contract).
    """
    if out.ndim != 2 or out.shape != (rows, classes):
        return (f"returned shape {tuple(out.shape)}; the manifest declares ({rows}, {classes}) "
                "class probabilities")
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        if not non_finite_rows_ok:
            return "returned NaN or infinite values instead of class probabilities"
        out = out[finite]
        if not len(out):
            return None
    if task == "multilabel":
        if (out < -1e-4).any() or (out > 1 + 1e-4).any():
            return (f"returned values that are not probabilities (range {out.min():.3g}.."
                    f"{out.max():.3g}); the manifest declares one probability per label: the "
                    "model must end in a sigmoid. Rebuild the bundle with "
                    "`python -m converters build`")
        return None
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
        from runtime.preprocess.gpu import cuda_usable

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
    problem = output_problem(out, len(probe), len(manifest.model.classes),
                             task=manifest.model.task)
    if problem:
        raise BundleError(f"{entry.path} {problem}")
    if guard is not None:
        shape = None if features is None else tuple(np.shape(features))
        if shape != (len(probe), guard.dim):
            raise BundleError(
                f"{entry.path} returned features of shape {shape}; the manifest's scope guard "
                f"declares a '{guard.output}' output of ({len(probe)}, {guard.dim}). Rebuild the "
                "bundle with `python -m converters build`")
