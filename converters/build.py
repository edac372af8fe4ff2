"""``converters build``: checkpoint -> per-target bundles, every artifact proven on real images.

The target profile names formats by key; the format table (:mod:`runtime.contract.formats`) says for each
how it is made (a converter in :mod:`converters.formats`, resolved lazily), which engine runs it
and with which providers/device on this target, and its parity tolerance: no per-format
if-chains. For each format: convert, run it with its engine on the validation (parity, metrics,
gate) and test (metrics, reported only) splits, gate it against the PyTorch FP32 reference on
validation, record its build-time speed; then write the bundle atomically with a reference set
the device re-runs (``runtime verify``).

Two builds from the same checkpoint, data and library versions on one machine choose the same:
INT8 variants are fixed by the format's converter, and the default artifact is the first of the
profile's ``default_preference`` that passed the gate. Validation decides (threshold, gate, INT8
level, default); the test split and timings are recorded, never used to choose.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.architectures import has_scope_features
from converters.build_log import library_output
from converters.bundle_writer import write_bundle, write_npz, write_reference_set
from converters.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from converters.data.labelled import DatasetError, LabelledImages
from converters.data.sets import EvaluationSets, Rendering, evaluation_sets
from converters.export_onnx import INPUT_NAME, ExportError, copy_onnx, export_onnx
from converters.formats import ConvertJob, resolve
from converters.population import PopulationFitError, PopulationRequest, build_check
from converters.reference import reference_evaluation
from converters.report import REFERENCE_FINDING_METRICS, render_report
from converters.scope_reference import (
    FittedReference,
    artifact_rates,
    fit_reference,
    guard_block,
    torch_features,
)
from converters.validate import (
    GATE_SPLIT,
    MAX_AUC_DROP,
    MAX_SENSITIVITY_DROP,
    MAX_SPECIFICITY_DROP,
    MIN_AGREEMENT,
    Evaluation,
    check_gate,
    evaluate_artifact,
)
from runtime.bundle.hashing import sha256_file
from runtime.bundle.versions import installed_versions
from runtime.contract import manifest as contract
from runtime.contract.formats import FormatRow, Placement, get_format
from runtime.contract.manifest import SCHEMA_VERSION
from targets import TargetProfile, get_target, target_names

logger = logging.getLogger(__name__)

CALIBRATION_IMAGES = 512
CALIBRATION_SEED = 0
REFERENCE_IMAGES = 64
REFERENCE_SEED = 0
#: the manifest's words for the output tensor, by task
OUTPUT_WORDS = {"multiclass": "class probabilities (softmax): each row sums to 1",
                "multilabel": "one probability per label (sigmoid): the columns are independent"}


class BuildError(RuntimeError):
    """A bundle could not be built (conversion failure, failed gate, bad profile)."""


# --------------------------------------------------------------------------------------------
# the shared state of one build run (several targets reuse exports, conversions and references)


@dataclass
class Built:
    """Files one converter call produced in the work folder (main file first)."""

    files: list[Path]
    info: dict
    seconds: float


@dataclass
class Candidate:
    """One artifact that went through conversion, evaluation and the gate."""

    row: FormatRow
    level: str
    built: Built
    evaluation: Evaluation
    gate: contract.GateVerdict


class Workspace:
    """Checkpoint, data, evaluation sets and a cache of converted files for one build run."""

    #: ``--out-of-population``: fit the population check in this run (None: the one beside
    #: the checkpoint, if any)
    population_request: PopulationRequest | None = None

    def __init__(self, loaded: LoadedCheckpoint, data: EvaluationSets, work_dir: Path,
                 say: Callable[[str], None], progress: bool = True, threads: int | None = None):
        self.say, self.progress, self.threads = say, progress, threads
        self.work_dir = work_dir
        self.loaded, self.data = loaded, data
        self.spec = loaded.spec
        if len(self.spec.classes) < 2:
            raise CheckpointError(f"{loaded.path}: needs at least two classes, got "
                                  f"{self.spec.classes}")
        self.positive = self.spec.positive_index
        self.findings = self.spec.scored_findings  # each scored against the rest
        self.val, self.test = self.data.val, self.data.test
        self._fp32: Path | None = None
        self._scope: FittedReference | None = None
        self._population: tuple[contract.PopulationCheckInfo, Path] | None | bool = False
        self._references: dict[tuple[float, ...], Evaluation] = {}
        self._cache: dict[str, Built] = {}
        #: the model config a ``--config`` build reads (recorded in the provenance)
        self.model_config: Path | None = None

    # -- shared inputs --------------------------------------------------------------------

    @property
    def calibration(self) -> np.ndarray:
        try:
            return self.data.calibration
        except ValueError as exc:
            raise BuildError(f"calibration set: {exc}") from exc

    def metadata(self) -> dict[str, str]:
        """Manifest-like facts written into ONNX metadata_props / OpenVINO rt_info."""
        spec = self.spec
        return {"name": spec.name, "architecture": spec.architecture,
                "classes": json.dumps(list(spec.classes)), "positive_class": spec.positive_class,
                "input": json.dumps({"name": INPUT_NAME, "shape": [-1, *spec.input_shape],
                                     "dtype": "float32"}),
                "preprocessing": json.dumps(spec.preprocessing.as_dict()),
                "checkpoint_sha256": self.loaded.sha256, "producer": "cxr-deploy-kit converters"}

    def fp32_onnx(self) -> Path:
        """The ONNX FP32 export every other format starts from (made once per run)."""
        if self._fp32 is None:
            dest = self.work_dir / "export" / "model.fp32.onnx"
            given = getattr(self.loaded.model, "fp32_onnx", None)  # an ONNX network: no export
            try:
                if given is not None:
                    self.say(f"taking the given ONNX network as the FP32 graph ({given.name})")
                    copy_onnx(Path(given), dest, self.metadata())
                else:
                    self.say("exporting ONNX FP32 from PyTorch")
                    export_onnx(self.loaded.model, self.spec.input_shape, dest, self.metadata())
            except ExportError as exc:
                raise BuildError(str(exc)) from exc
            self._fp32 = dest
        return self._fp32

    @property
    def test_files(self) -> LabelledImages | None:
        """The test X-rays as image files, when the test split is another rendering of them."""
        return self.data.test_files

    def reference(self, sensitivity: tuple[float, ...]) -> Evaluation:
        """PyTorch FP32: each finding's threshold (for its ``sensitivity``) and the validation
        metrics every artifact is gated against (its test metrics are reported only)."""
        if sensitivity not in self._references:
            targets = ", ".join(f"{name} >= {target:g}"
                                for name, target in zip(self.findings.names, sensitivity))
            self.say(f"evaluating the PyTorch FP32 reference (threshold for sensitivity "
                     f"{targets} on validation)" if self.findings.several else
                     f"evaluating the PyTorch FP32 reference (threshold for sensitivity "
                     f">= {sensitivity[0]} on validation)")
            try:
                self._references[sensitivity] = reference_evaluation(
                    self.loaded.model, self.val, self.test, self.findings, sensitivity,
                    threads=self.threads, test_files=self.test_files)
            except ValueError as exc:
                raise BuildError(f"reference evaluation: {exc}") from exc
        return self._references[sensitivity]

    def scope_reference(self) -> FittedReference | None:
        """The scope guard's reference on the training split's PyTorch FP32 features (made once
        per run); None when the model has no scope features to offer."""
        if self._scope is None and has_scope_features(self.loaded.model):
            from converters.reference import torch_threads

            try:
                sets = [self.data.train] + [r.train for r in self.renderings]
            except ValueError as exc:
                raise BuildError(f"scope guard: {exc}") from exc
            also = "".join(f" + {len(r.train)} of {r.name}" for r in self.renderings)
            self.say(f"fitting the scope guard's feature reference on {len(sets[0])} training "
                     f"images{also}")
            with torch_threads(self.threads):
                features = [torch_features(self.loaded.model, s.inputs) for s in sets]
            self._scope = fit_reference(np.concatenate(features),
                                        np.concatenate([s.strata for s in sets]),
                                        self.loaded.model.feature_widths,
                                        renderings=[r.name for r in self.renderings],
                                        source=getattr(self.loaded.model, "scope_features", ""),
                                        computed_by=self._features_by())
        return self._scope

    def _features_by(self) -> str:
        """What computes the reference's training features: PyTorch, or for a network given as
        ONNX, ONNX Runtime on its prepared graph."""
        given = getattr(self.loaded.model, "fp32_onnx", None)
        return "PyTorch FP32" if given is None else "ONNX Runtime FP32 (the given graph)"

    def population_check(self) -> tuple[contract.PopulationCheckInfo, Path] | None:
        """The population check (made once per run): fitted now for ``--out-of-population``,
        else the one fitted beside the checkpoint, re-measured on this build's validation
        X-rays; None when there is neither."""
        if self._population is False:
            try:
                self._population = None
                self._population = build_check(self.data, self.loaded.path,
                                               self.population_request,
                                               self.work_dir / "population", self.say)
            except (PopulationFitError, DatasetError) as exc:
                raise BuildError(f"population check: {exc}") from exc
            if self._population is not None:
                p = self._population[0]
                self.say(f"population check: limit {p.limit:.4f} keeps {100 * p.val_in_scope:.1f}% "
                         f"of {p.val_n} validation X-rays in scope")
        return self._population

    @property
    def renderings(self) -> list[Rendering]:
        """Other renderings of the training X-rays the scope guard covers (none without a
        scope guard: they are read only for it)."""
        return self.data.renderings if has_scope_features(self.loaded.model) else []

    def convert(self, row: FormatRow, options: dict, level: str, source: Path | None) -> Built:
        """Run the row's converter at ``level``, reusing identical earlier work."""
        key = json.dumps([row.key, row.converter, _jsonable(options), level, str(source)],
                         sort_keys=True)
        if key not in self._cache:
            digest = hashlib.sha1(key.encode()).hexdigest()[:10]
            dest = self.work_dir / digest / row.filename
            dest.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            what = f"{row.filename} ({row.key}, {level})"
            try:
                convert, _levels = resolve(row.converter)
                info = convert(ConvertJob(self, dest, level, options, source))
            except (ExportError, BuildError) as exc:
                raise BuildError(f"{what}: {exc}") from exc
            except Exception as exc:  # a converter library failing in its own way
                raise BuildError(f"{what}: converter failed: {type(exc).__name__}: {exc}") from exc
            files = [dest] + sorted(p for p in dest.parent.iterdir()
                                    if p != dest and p.stem == dest.stem)
            self._cache[key] = Built(files, info, time.perf_counter() - started)
        return self._cache[key]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# building one target


@dataclass
class ArtifactResult:
    row: FormatRow
    placement: Placement
    chosen: Candidate
    attempts: list[contract.BuildAttempt] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(a.seconds for a in self.attempts)


def _metrics(m) -> contract.Metrics:
    d = m.as_dict()
    d.pop("threshold", None)
    return contract.parse(contract.Metrics, d, "metrics")


def _split_metrics(e: Evaluation) -> contract.SplitMetrics:
    return contract.SplitMetrics(test=_metrics(e.test), val=_metrics(e.val),
                                 test_files=None if e.test_files is None
                                 else _metrics(e.test_files))


def _finding_metrics(e: Evaluation, names: tuple[str, ...]) -> dict[str, contract.SplitMetrics]:
    """Each finding's metrics (one against the rest); empty for a model with one finding."""
    if not e.finding_val:
        return {}
    files = e.finding_test_files or [None] * len(names)
    return {name: contract.SplitMetrics(test=_metrics(t), val=_metrics(v),
                                        test_files=None if f is None else _metrics(f))
            for name, v, t, f in zip(names, e.finding_val, e.finding_test, files, strict=True)}


def _build_artifact(ws: Workspace, profile: TargetProfile, row: FormatRow,
                    done: dict[str, ArtifactResult], reference: Evaluation) -> ArtifactResult:
    try:
        _convert, levels = resolve(row.converter)
    except ImportError as exc:
        raise BuildError(f"{profile.name}/{row.key}: converter {row.converter!r} cannot be "
                         f"imported: {exc}") from exc
    placement = row.placement(profile.name)
    source = None
    if row.source is not None:
        if row.source not in done:
            raise BuildError(f"{profile.name}/{row.key} is made from {row.source}; list "
                             f"{row.source} before it in the target profile")
        source = done[row.source].chosen.built.files[0]
    options = profile.options_for(row.key)
    attempts: list[contract.BuildAttempt] = []
    for level in levels:
        ws.say(f"[{profile.name}] {row.filename}: converting ({row.key}, {level})")
        built = ws.convert(row, options, level, source)
        gates: list[contract.GateVerdict] = []

        def gate_passes(evaluation: Evaluation) -> bool:
            gates.append(check_gate(evaluation, reference, row, placement, ws.findings.names))
            return gates[-1].passed

        evaluation = evaluate_artifact(built.files[0], row, placement, ws.val, ws.test,
                                       reference.val_probs, ws.findings,
                                       reference.thresholds, speed_if=gate_passes,
                                       threads=ws.threads,
                                       guard_val=[r.val for r in ws.renderings],
                                       test_files=ws.test_files)
        gate = gates[-1]
        v, t = evaluation.val, evaluation.test
        ws.say(f"[{profile.name}] {row.filename}: parity {evaluation.parity.max_abs_diff:.2e}, "
               f"validation AUC {v.auc:.4f} sens {v.sensitivity:.4f} spec {v.specificity:.4f} "
               f"-> gate {gate.words()} (test, reported only: AUC {t.auc:.4f} sens "
               f"{t.sensitivity:.4f} spec {t.specificity:.4f})")
        for name, fv in zip(ws.findings.names[1:], evaluation.finding_val[1:]):
            ws.say(f"[{profile.name}] {row.filename}: {name}: validation AUC {fv.auc:.4f} "
                   f"sens {fv.sensitivity:.4f} spec {fv.specificity:.4f}")
        attempts.append(contract.BuildAttempt(level=level, seconds=round(built.seconds, 2),
                                              gate=gate, test=_metrics(t),
                                              parity=evaluation.parity, val=_metrics(v)))
        if gate.passed:
            return ArtifactResult(row, placement, Candidate(row, level, built, evaluation, gate),
                                  attempts)
    why = "; ".join(f"{a.level}: {' & '.join(a.gate.reasons)}" for a in attempts)
    raise BuildError(f"{profile.name}/{row.filename} failed the clinical gate after "
                     f"{len(attempts)} attempt(s): {why}")


def _artifact_entry(result: ArtifactResult, names: tuple[str, ...]) -> contract.ArtifactEntry:
    """The manifest entry (files and checksums are filled in by the bundle writer)."""
    c, row, placement = result.chosen, result.row, result.placement
    e = c.evaluation
    return contract.ArtifactEntry(
        path=row.filename, format=row.key, precision=row.precision, engine=row.engine,
        sha256="", bytes=0, files=[], total_bytes=0,
        providers=list(placement.providers),
        provider_options={k: dict(v) for k, v in placement.provider_options.items()},
        device=placement.device, precision_hint=placement.precision_hint,
        parity=e.parity, metrics=_split_metrics(e), gate=c.gate, speed=e.speed,
        finding_metrics=_finding_metrics(e, names),
        measured_with=e.engine,
        conversion={**_jsonable(c.built.info), "level": c.level},
        build=contract.ArtifactBuild(seconds=round(result.seconds, 2), attempts=result.attempts))


def reference_indices(n: int, count: int = REFERENCE_IMAGES, seed: int = REFERENCE_SEED
                      ) -> np.ndarray:
    """Which validation images form the reference set (seeded: the same for every build)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(count, n), replace=False))


def _versions() -> dict[str, str]:
    return installed_versions(("torch", "numpy", "onnx", "onnxruntime-gpu", "onnxruntime",
                               "openvino", "nncf", "onnxconverter-common", "onnxscript",
                               "safetensors"))


def _machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}"


def _scope_guard(ws: Workspace, profile: TargetProfile, done: dict[str, ArtifactResult]
                 ) -> tuple[contract.ScopeGuard | None, Path | None]:
    """The manifest block and reference file of the feature-space scope guard (None, None when
    an artifact returns no features: the bundle then judges scope by its rules only)."""
    fitted = ws.scope_reference()
    missing = [r.row.filename for r in done.values() if r.chosen.evaluation.val_features is None]
    if fitted is None or missing:
        why = (ws.loaded.no_scope_features or "the model offers no scope features") \
            if fitted is None else f"{', '.join(missing)} return no features"
        ws.say(f"[{profile.name}] no feature-space scope guard ({why}): scope is judged by the "
               "rules only")
        return None, None
    rates = {r.row.filename: artifact_rates(fitted.reference,
                                            np.concatenate([r.chosen.evaluation.val_features,
                                                            *r.chosen.evaluation.guard_val_features]),
                                            r.chosen.evaluation.test_features)
             for r in done.values()}
    for name, r in rates.items():
        ws.say(f"[{profile.name}] {name}: scope guard limit {r.limit:.2f}; in scope: "
               f"val {100 * r.val_in_scope:.1f}% of {r.val_n}, test {100 * r.test_in_scope:.1f}% "
               f"of {r.test_n}")
    # compressed: the block-diagonal precision is mostly zeros (3.6 MB -> about 0.3 MB for tiny)
    file = write_npz(ws.work_dir / f"scope-{profile.name}.npz", fitted.reference.arrays(),
                     compress=True)
    return guard_block(fitted, rates, patient_grouped=ws.val.groups is not None), file


def build_target(ws: Workspace, target: str, out_root: Path) -> Path:
    """Build, check and write one target's bundle; return its folder."""
    profile = get_target(target)
    started = time.perf_counter()
    try:
        rows = [get_format(key) for key in profile.formats]
    except KeyError as exc:
        raise BuildError(f"target {profile.name}: {exc.args[0]}") from None
    if any(row.precision == "int8" for row in rows):
        ws.calibration  # noqa: B018  (fail before any work when the calibration set is missing)
    sensitivity = ws.spec.finding_sensitivity(profile.sensitivity)
    reference = ws.reference(sensitivity)
    done: dict[str, ArtifactResult] = {}
    skipped: list[contract.Skipped] = []
    for row in rows:
        try:
            done[row.key] = _build_artifact(ws, profile, row, done, reference)
        except BuildError as exc:
            if row.key not in profile.optional:
                raise
            ws.say(f"[{profile.name}] {row.filename}: optional artifact NOT built: {exc}")
            skipped.append(contract.Skipped(path=row.filename, format=row.key, reason=str(exc)))
    if not done:
        raise BuildError(f"{profile.name}: no artifact could be built")
    default, reason = _default_artifact(profile, done)
    spec = ws.spec
    indices = reference_indices(len(ws.val))
    reference_probs = {r.row.filename: r.chosen.evaluation.val_probs[indices] for r in done.values()}
    ref_file = write_reference_set(ws.work_dir / f"reference-{profile.name}.npz",
                                   ws.val.inputs[indices], indices, reference_probs)
    scope_guard, scope_file = _scope_guard(ws, profile, done)
    population_check, population_file = ws.population_check() or (None, None)
    manifest = contract.Manifest(
        schema_version=SCHEMA_VERSION,
        target=profile.name,
        description=profile.description,
        model=contract.ModelInfo(
            name=spec.name, classes=list(spec.classes), positive_class=spec.positive_class,
            input=contract.TensorSpec(INPUT_NAME, [-1, *spec.input_shape], "float32"),
            output=contract.TensorSpec("probabilities", [-1, len(spec.classes)], "float32",
                                       OUTPUT_WORDS[spec.task]),
            population=ws.data.population, findings=list(ws.findings.names), task=spec.task),
        preprocessing=spec.preprocessing,
        preprocessing_backend=profile.preprocessing_backend,
        threshold=float(reference.val.threshold),
        threshold_info=_threshold_info(sensitivity[0], reference.val),
        finding_thresholds={name: float(m.threshold) for name, m
                            in zip(ws.findings.names, reference.finding_val)},
        finding_threshold_info={name: _threshold_info(target, m) for name, target, m
                                in zip(ws.findings.names, sensitivity, reference.finding_val)},
        default_artifact=default,
        default_artifact_reason=reason,
        gate=contract.GatePolicy(reference="pytorch fp32", split=GATE_SPLIT,
                                 max_sensitivity_drop=MAX_SENSITIVITY_DROP,
                                 max_auc_drop=MAX_AUC_DROP,
                                 max_specificity_drop=MAX_SPECIFICITY_DROP,
                                 min_agreement=MIN_AGREEMENT),
        reference=contract.ReferenceModel(engine="pytorch", precision="fp32",
                                          metrics=_split_metrics(reference),
                                          speed=reference.speed),
        notes=profile.notes,
        skipped=skipped,
        reference_set=contract.ReferenceSet(
            path=contract.REFERENCE_SET, sha256="", bytes=0, n=len(indices), split="val",
            seed=REFERENCE_SEED, artifacts=list(reference_probs)),
        scope_guard=scope_guard,
        population_check=population_check,
        provenance=contract.Provenance(
            checkpoint=ws.loaded.path.name, checkpoint_sha256=ws.loaded.sha256,
            architecture=spec.architecture, config=_jsonable(spec.config),
            data=ws.data.source, data_md5=ws.data.md5, dataset=spec.dataset if spec.dataset in contract.DATASETS else None,
            test_files=None if ws.data.test_files is None else ws.data.test_files.source,
            model_config=None if ws.model_config is None else str(ws.model_config.resolve()),
            model_config_sha256=None if ws.model_config is None
            else sha256_file(ws.model_config),
            calibration_images=len(ws.calibration) if any(
                r.row.precision == "int8" for r in done.values()) else 0,
            calibration_seed=ws.data.calibration_seed,
            built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            machine=_machine(), versions=_versions(),
            load_average=[round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg")
            else None,
            threads=ws.threads,
            command=" ".join(sys.argv) if sys.argv else ""),
        build=contract.BuildInfo(seconds=round(time.perf_counter() - started, 2)),
        artifacts=[],
        extra=_reference_findings(reference, ws.findings.names))
    artifacts = [(_artifact_entry(r, ws.findings.names), r.chosen.built.files)
                 for r in done.values()]
    ws.say(f"[{profile.name}] writing bundle")
    return write_bundle(out_root, profile.name, artifacts, manifest, ref_file, render_report,
                        scope_reference=scope_file, population_check=population_file)


def _reference_findings(reference: Evaluation, names: tuple[str, ...]) -> dict[str, Any]:
    """The PyTorch reference's metrics per finding, kept in the manifest's ``extra`` (the
    contract's ReferenceModel has no field for them); nothing for a model with one finding."""
    metrics = _finding_metrics(reference, names)
    return {REFERENCE_FINDING_METRICS: {name: contract.to_dict(m) for name, m in metrics.items()}
            } if metrics else {}


def _threshold_info(sensitivity: float, val) -> contract.ThresholdInfo:
    """How one finding's threshold was chosen: on validation, by the PyTorch FP32 model."""
    return contract.ThresholdInfo(chosen_on="val", sensitivity=sensitivity,
                                  model="pytorch fp32 reference", val=_metrics(val))


def _default_artifact(profile: TargetProfile, done: dict[str, ArtifactResult]) -> tuple[str, str]:
    """The first format of the profile's preference list that was built and passed the gate."""
    for rank, key in enumerate(profile.preference, 1):
        if key in done and done[key].chosen.gate.passed:
            return done[key].row.filename, (
                f"{key}: choice {rank} of the target's preference "
                f"({' > '.join(profile.preference)}) that passed the gate on validation")
    raise BuildError(f"{profile.name}: none of the preferred formats "
                     f"({', '.join(profile.preference)}) was built (built: {', '.join(done)})")


# --------------------------------------------------------------------------------------------
# entry points


def _sayer(progress: bool) -> Callable[[str], None]:
    start = time.perf_counter()

    def say(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)
    return say


def resolve_targets(target: str) -> list[str]:
    """``all`` or one registered name (unknown names raise with a did-you-mean)."""
    if target == "all":
        return target_names()
    return [get_target(target).name]


def build_bundles(targets: list[str], checkpoint: Path, out_root: Path, data: str | None = None,
                  progress: bool = True, threads: int | None = None,
                  log: Path | None = None, population: PopulationRequest | None = None
                  ) -> list[Path]:
    """Build several targets sharing one export, reference and conversion cache.

    ``threads`` is the intra-op thread count of PyTorch and every engine while checking and
    timing (None: each library's default); the same for all so the speeds compare. ``log``: the
    file that gets the libraries' own output (:mod:`converters.build_log`). ``population``:
    fit the population check in this run (``--out-of-population``).
    """
    import nncf

    nncf.set_log_level(logging.ERROR)
    say = _sayer(progress)
    profiles = [get_target(t) for t in targets]  # fail fast on unknown names
    with tempfile.TemporaryDirectory(prefix="cxr-build-") as tmp, library_output(log, progress):
        loaded = load_checkpoint(checkpoint)
        sets = evaluation_sets(loaded.spec.name, loaded.spec.dataset, loaded.spec.preprocessing,
                               data, CALIBRATION_IMAGES, CALIBRATION_SEED)
        ws = Workspace(loaded, sets, Path(tmp), say, progress, threads)
        ws.population_request = population
        say(f"checkpoint {ws.loaded.path.name}: {ws.spec.architecture} {ws.spec.config}, input "
            f"{list(ws.spec.input_shape)}; data {ws.data.source}")
        return [build_target(ws, p.name, Path(out_root)) for p in profiles]


def build_from_config(targets: list[str], config: Path, out_root: Path, progress: bool = True,
                      threads: int | None = None, log: Path | None = None,
                      trust_pickle: bool = False, population: PopulationRequest | None = None
                      ) -> list[Path]:
    """:func:`build_bundles` for the model a ``model.toml`` describes (docs/model-config.md);
    the verdict's words of a ``population`` fit come from its ``[population] looks_like``."""
    import nncf

    from converters.config.for_build import build_inputs, warn_if_probabilities
    from converters.config.model import load_config

    nncf.set_log_level(logging.ERROR)
    say = _sayer(progress)
    profiles = [get_target(t) for t in targets]
    model_config = load_config(config)
    with tempfile.TemporaryDirectory(prefix="cxr-build-") as tmp, library_output(log, progress):
        loaded, sets = build_inputs(model_config, Path(tmp) / "network", trust_pickle,
                                    CALIBRATION_IMAGES, CALIBRATION_SEED)
        ws = Workspace(loaded, sets, Path(tmp), say, progress, threads)
        ws.model_config = model_config.path
        ws.population_request = _with_config_words(population, model_config)
        say(f"config {model_config.path.name}: {ws.spec.architecture}, input "
            f"{list(ws.spec.input_shape)}, {ws.spec.task}, findings "
            f"{', '.join(ws.findings.names)}; validation "
            f"{ws.data.source}")
        warning = warn_if_probabilities(loaded.model, model_config, ws.val.inputs)
        if warning:
            logger.warning(warning)
            say(f"WARNING {warning}")
        return [build_target(ws, p.name, Path(out_root)) for p in profiles]


def _with_config_words(request: PopulationRequest | None, config) -> PopulationRequest | None:
    """A population fit for a config build, in the words of its ``[population] looks_like``."""
    if request is None or config.population.looks_like is None:
        return request
    return dataclasses.replace(request, looks_like=config.population.looks_like)


def build_bundle(target: str, checkpoint: Path, out_root: Path, data: str | None = None,
                 progress: bool = True, threads: int | None = None) -> Path:
    """Build ``out_root/<target>`` from ``checkpoint``; return the bundle folder."""
    return build_bundles([target], checkpoint, out_root, data, progress, threads)[0]


__all__ = [
    "BuildError",
    "CheckpointError",
    "DatasetError",
    "build_bundle",
    "build_bundles",
    "resolve_targets",
]
