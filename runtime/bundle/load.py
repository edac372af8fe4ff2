"""Bundle loading: read the typed manifest, verify the chosen artifact, open it with its engine.

A bundle (``dist/<target>/``) is complete on its own; its manifest (:mod:`runtime.contract.manifest`) is
the single source of truth. Before an artifact is loaded, every file it is made of (an OpenVINO
``.xml`` and its ``.bin``) is checked against the manifest's ``bytes`` and ``sha256``; a bundle
that does not match is refused with a :class:`BundleError` and nothing is run. Once open, the
artifact must answer what the manifest declares, (N, classes) probabilities summing to 1, on the
bundle's reference images: anything else (e.g. logits) is refused, never silently softmaxed.
A bundle with a feature-space scope guard (``manifest.scope_guard``) has its reference file
verified the same way, and the artifact must return features of the declared width; so is a
population check's graph (``manifest.population_check``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bundle.artifacts import (
    check_output_contract,
    choose_artifact,
    open_artifact,
    output_problem,
    read_manifest,
)
from runtime.bundle.files import verify_file
from runtime.bundle.site import applies_to, read_site_calibration, site_summary
from runtime.contract.manifest import (
    CHILDREN_1_TO_5,
    ArtifactEntry,
    FileEntry,
    Manifest,
    Population,
    Preprocessing,
    SiteCalibration,
)
from runtime.engines.base import Engine, EngineError
from runtime.errors import BundleError
from runtime.judging.feature_guard import FeatureGuard, GuardError, load_reference
from runtime.judging.population import PopulationCheck, load_check

log = logging.getLogger(__name__)


@dataclass
class Bundle:
    """A verified bundle with its chosen artifact open in an engine."""

    path: Path
    manifest: Manifest
    artifact: ArtifactEntry
    engine: Engine
    device: str  # "cpu" or "cuda": where the model runs
    notes: list[str] = field(default_factory=list)  # fallbacks and other things worth saying
    site: SiteCalibration | None = None  # runtime.bundle.site: sha256-checked at load
    guard: FeatureGuard | None = None  # the feature-space scope guard (None: rules only)
    #: the population check from the image alone (None: the bundle has none)
    population_check: PopulationCheck | None = None

    @property
    def preprocessing(self) -> Preprocessing:
        return self.manifest.preprocessing

    @property
    def site_in_force(self) -> SiteCalibration | None:
        """The site calibration when it was measured with this artifact, else None."""
        return self.site if self.site and applies_to(self.site, self.artifact.path) else None

    @property
    def threshold(self) -> float:
        """The first finding's threshold in force: the site's (calibrated for this artifact),
        else the build's (:attr:`thresholds` holds every finding's)."""
        site = self.site_in_force
        return site.threshold if site else self.manifest.threshold

    @property
    def thresholds(self) -> dict[str, float]:
        """Every finding's threshold in force, in the model's finding order: the site's where it
        calibrated that finding for this artifact, else the build's."""
        site = self.site_in_force
        calibrated = site.thresholds() if site else {}
        return {label: calibrated.get(label, build)
                for label, build in self.manifest.thresholds().items()}

    @property
    def findings(self) -> list[str]:
        """The labels that send a case to a doctor (the first is :attr:`positive_class`)."""
        return self.manifest.model.finding_labels

    @property
    def task(self) -> str:
        """"multiclass" (softmax rows) or "multilabel" (one probability per label)."""
        return self.manifest.model.task

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

    def probabilities(self, batch: np.ndarray, non_finite_rows_ok: bool = False) -> np.ndarray:
        """(N, 1, S, S) float32 -> (N, classes) probabilities, checked against the contract.

        ``non_finite_rows_ok``: a row of NaN or infinity is returned as it is (the caller reports
        it on that image) instead of failing the whole batch.
        """
        return self._checked(self.engine.run(batch), len(batch), non_finite_rows_ok)

    def _checked(self, out: np.ndarray, rows: int, non_finite_rows_ok: bool = False) -> np.ndarray:
        out = np.asarray(out, dtype=np.float32)
        problem = output_problem(out, rows, len(self.classes), non_finite_rows_ok, self.task)
        if problem:
            raise EngineError(f"{self.artifact.path} {problem}")
        return out

    def predict(self, batch: np.ndarray, non_finite_rows_ok: bool = False) -> np.ndarray:
        """(N, C, S, S) float32 -> (N, classes) probabilities, a row of NaN for an image the
        model gave no valid answer for (with ``non_finite_rows_ok``)."""
        return _finite_rows(self.probabilities(batch, non_finite_rows_ok))

    def predict_with_features(self, batch: np.ndarray, non_finite_rows_ok: bool = False
                              ) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, C, S, S) float32 -> (N, classes) probabilities (as :meth:`predict`) and the
        (N, D) scope features (None when the artifact has no features output)."""
        run = getattr(self.engine, "run_with_features", None)
        if run is None:
            return self.predict(batch, non_finite_rows_ok), None
        out, features = run(batch)
        probabilities = _finite_rows(self._checked(out, len(batch), non_finite_rows_ok))
        return probabilities, None if features is None else np.asarray(features, np.float32)

    def predict_positive(self, batch: np.ndarray, non_finite_rows_ok: bool = False
                         ) -> np.ndarray:
        """(N, C, S, S) float32 -> (N,) probability of the first finding (NaN for no answer)."""
        return self.predict(batch, non_finite_rows_ok)[:, self.positive_index]

    def describe(self) -> dict[str, Any]:
        """What ran, for summaries and logs."""
        return {"bundle": str(self.path), "target": self.manifest.target,
                "artifact": self.artifact.path, "sha256": self.artifact.sha256,
                "format": self.artifact.format, "precision": self.artifact.precision,
                "engine": self.engine.name, "requested": list(self.engine.requested),
                "active": list(self.engine.active), "inference_precision": self.engine.precision,
                "fell_back": bool(self.engine.fell_back), "device": self.device,
                "threshold": self.threshold, "build_threshold": self.manifest.threshold,
                "thresholds": self.thresholds,
                **({"site": site_summary(self.site_in_force)} if self.site_in_force else {})}


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


def load_population_check(root: Path, manifest: Manifest, engine: str = "onnxruntime"
                          ) -> PopulationCheck | None:
    """The verified population check graph and its limit (None: the bundle has none), to run on
    ``engine`` when that is OpenVINO (the artifact's engine: :mod:`runtime.judging.population`)."""
    p = manifest.population_check
    if p is None:
        return None
    file = verify_file(root, FileEntry(p.path, p.sha256, p.bytes))
    population = (manifest.model.population or CHILDREN_1_TO_5).description
    return load_check(file, p.limit, p.share, population, p.looks_like, engine)


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
    population_check = load_population_check(root, manifest, entry.engine)
    from runtime.bundle.selfcheck import probe_inputs

    check_output_contract(manifest, entry, engine, probe_inputs(root, manifest))
    if site is not None and not applies_to(site, entry.path):
        notes.append(f"the site calibration \"{site.site}\" was measured with "
                     f"{site.source.artifact}, not {entry.path}: the build threshold "
                     f"{manifest.threshold:.4f} is in force")
        log.warning("%s", notes[-1])
    return Bundle(path=root, manifest=manifest, artifact=entry, engine=engine,
                  device="cuda" if engine.on_cuda else "cpu", notes=notes, site=site,
                  guard=guard, population_check=population_check)


def _finite_rows(out: np.ndarray) -> np.ndarray:
    """``out`` with every row that holds a non-finite value made all NaN."""
    rows = out.copy()
    rows[~np.isfinite(out).all(axis=1)] = np.nan
    return rows
