"""``converters build``: checkpoint -> per-target bundles, every artifact proven on real images.

The target profile's :class:`~targets.ArtifactSpec` list drives the build; :data:`CONVERTERS`
maps ``(format, precision)`` to the function that makes the file and the escalation levels it may
try when the clinical gate fails (no per-format if-chains). For each artifact: convert, run it
with its engine on the validation (parity) and test (metrics) splits, gate it against the PyTorch
FP32 reference, measure its speed; then write the bundle atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import itertools
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from converters import openvino_ir, quantize_onnx
from converters.bundle_writer import SCHEMA_VERSION, write_bundle
from converters.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from converters.export_onnx import INPUT_NAME, ExportError, export_onnx
from converters.fp16 import convert_fp16
from converters.images import EvalSet, calibration_inputs, eval_set
from converters.ort_format import convert_ort_format
from converters.reference import reference_evaluation
from converters.report import render_report
from converters.validate import (MAX_AUC_DROP, MAX_SENSITIVITY_DROP, MAX_SPECIFICITY_DROP,
                                 Evaluation, GateResult,
                                 check_gate, evaluate_artifact)
from converters.datasets import DatasetError, PneumoniaMNIST, load_pneumoniamnist
from runtime.metrics import roc_auc
from targets import ArtifactSpec, TargetProfile, get_target, target_names

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 512


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
    """One artifact variant that went through conversion, evaluation and the gate."""

    spec: ArtifactSpec
    variant: str
    level: str
    built: Built
    evaluation: Evaluation
    gate: GateResult


class Workspace:
    """Checkpoint, data, evaluation sets and a cache of converted files for one build run."""

    def __init__(self, checkpoint: Path, data: str | None, work_dir: Path,
                 say: Callable[[str], None], progress: bool = True, threads: int | None = None):
        self.say, self.progress, self.threads = say, progress, threads
        self.work_dir = work_dir
        self.loaded: LoadedCheckpoint = load_checkpoint(checkpoint)
        self.spec = self.loaded.spec
        self.data: PneumoniaMNIST = load_pneumoniamnist(data)
        pre = self.spec.preprocessing
        if len(self.spec.classes) < 2:
            raise CheckpointError(f"{checkpoint}: needs at least two classes, got {self.spec.classes}")
        self.positive = self.spec.positive_index
        self.val: EvalSet = eval_set(self.data, "val", pre)
        self.test: EvalSet = eval_set(self.data, "test", pre)
        self._calibration: np.ndarray | None = None
        self._fp32: Path | None = None
        self._references: dict[float, Evaluation] = {}
        self._cache: dict[str, Built] = {}

    # -- shared inputs --------------------------------------------------------------------

    @property
    def calibration(self) -> np.ndarray:
        if self._calibration is None:
            try:
                self._calibration = calibration_inputs(self.data, self.spec.preprocessing,
                                                       CALIBRATION_IMAGES)
            except ValueError as exc:
                raise BuildError(f"calibration set: {exc}") from exc
        return self._calibration

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
            self.say("exporting ONNX FP32 from PyTorch")
            dest = self.work_dir / "export" / "model.fp32.onnx"
            try:
                export_onnx(self.loaded.model, self.spec.input_shape, dest, self.metadata())
            except ExportError as exc:
                raise BuildError(str(exc)) from exc
            self._fp32 = dest
        return self._fp32

    def reference(self, sensitivity: float) -> Evaluation:
        """PyTorch FP32: the threshold (val) and the metrics every artifact is gated against."""
        if sensitivity not in self._references:
            self.say(f"evaluating the PyTorch FP32 reference (threshold for sensitivity "
                     f">= {sensitivity} on validation)")
            try:
                self._references[sensitivity] = reference_evaluation(
                    self.loaded.model, self.val, self.test, self.positive, sensitivity,
                    threads=self.threads)
            except ValueError as exc:
                raise BuildError(f"reference evaluation: {exc}") from exc
        return self._references[sensitivity]

    def convert(self, spec: ArtifactSpec, level: str, source: Path | None) -> Built:
        """Run the table's converter for ``spec`` at ``level``, reusing identical earlier work."""
        key = json.dumps([spec.format, spec.precision, spec.filename, _jsonable(spec.options),
                          level, str(source)], sort_keys=True)
        if key not in self._cache:
            digest = hashlib.sha1(key.encode()).hexdigest()[:10]
            dest = self.work_dir / digest / spec.filename
            dest.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            converter = CONVERTERS[(spec.format, spec.precision)]
            try:
                info = converter.convert(self, spec, level, dest, source)
            except (ExportError, BuildError) as exc:
                raise BuildError(f"{spec.filename} ({spec.format} {spec.precision}, {level}): "
                                 f"{exc}") from exc
            except Exception as exc:  # a converter library failing in its own way
                raise BuildError(f"{spec.filename} ({spec.format} {spec.precision}, {level}): "
                                 f"converter failed: {type(exc).__name__}: {exc}") from exc
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
# the table of converters: (format, precision) -> function + escalation levels


ConvertFn = Callable[[Workspace, ArtifactSpec, str, Path, "Path | None"], dict]


@dataclass(frozen=True)
class Converter:
    convert: ConvertFn
    levels: tuple[str, ...] = ("default",)
    needs_source: bool = False  # converts the bundle's ONNX artifact of the same precision


def _onnx_fp32(ws: Workspace, spec: ArtifactSpec, level: str, dest: Path, source: Path | None
               ) -> dict:
    shutil.copy2(ws.fp32_onnx(), dest)
    return {"exporter": "torch.onnx.export", "opset": _opset(dest)}


def _onnx_fp16(ws: Workspace, spec: ArtifactSpec, level: str, dest: Path, source: Path | None
               ) -> dict:
    return convert_fp16(ws.fp32_onnx(), dest,
                        keep_io_types=bool(spec.options.get("keep_io_types", True)))


def _onnx_int8(ws: Workspace, spec: ArtifactSpec, level: str, dest: Path, source: Path | None
               ) -> dict:
    opts = spec.options
    return quantize_onnx.quantize_onnx(
        ws.fp32_onnx(), dest, ws.calibration, activation_type=opts.get("activation_type", "uint8"),
        weight_type=opts.get("weight_type", "int8"), per_channel=opts.get("per_channel", True),
        level=level)


def _openvino_float(ws: Workspace, spec: ArtifactSpec, level: str, dest: Path,
                    source: Path | None) -> dict:
    return openvino_ir.convert_openvino(ws.fp32_onnx(), dest, ws.metadata(), spec.precision)


def _openvino_int8(ws: Workspace, spec: ArtifactSpec, level: str, dest: Path,
                   source: Path | None) -> dict:
    positive = ws.positive
    return openvino_ir.quantize_openvino(
        ws.fp32_onnx(), dest, ws.metadata(), ws.calibration, level,
        validation=(ws.val.inputs, ws.val.labels),
        validation_metric=lambda labels, probs: roc_auc(labels, probs[:, positive]),
        max_drop=MAX_AUC_DROP)


def _ort_format(ws: Workspace, spec: ArtifactSpec, level: str, dest: Path, source: Path | None
                ) -> dict:
    if source is None:
        if spec.precision != "fp32":
            raise BuildError(f"the ORT format is made from the bundle's ONNX {spec.precision} "
                             "artifact; list one before it in the target profile")
        source = ws.fp32_onnx()
    return convert_ort_format(source, dest)


CONVERTERS: dict[tuple[str, str], Converter] = {
    ("onnx", "fp32"): Converter(_onnx_fp32),
    ("onnx", "fp16"): Converter(_onnx_fp16),
    ("onnx", "int8"): Converter(_onnx_int8, quantize_onnx.ESCALATION),
    ("openvino", "fp32"): Converter(_openvino_float),
    ("openvino", "fp16"): Converter(_openvino_float),
    ("openvino", "int8"): Converter(_openvino_int8, openvino_ir.ESCALATION),
    ("ort", "fp32"): Converter(_ort_format, needs_source=True),
    ("ort", "fp16"): Converter(_ort_format, needs_source=True),
    ("ort", "int8"): Converter(_ort_format, needs_source=True),
}


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), 0)


def variants(spec: ArtifactSpec) -> list[tuple[str, ArtifactSpec]]:
    """A spec whose options hold tuples expands into one spec per combination."""
    options = {k: v for k, v in spec.options.items() if k != "optional"}
    keys = [k for k, v in options.items() if isinstance(v, tuple)]
    if not keys:
        return [("default", spec)]
    out = []
    for combo in itertools.product(*(options[k] for k in keys)):
        chosen = {**spec.options, **dict(zip(keys, combo))}
        out.append(("/".join(f"{k}={v}" for k, v in zip(keys, combo)),
                    dataclasses.replace(spec, options=chosen)))
    return out


# --------------------------------------------------------------------------------------------
# building one target


@dataclass
class ArtifactResult:
    spec: ArtifactSpec
    chosen: Candidate
    attempts: list[dict] = field(default_factory=list)
    variants: list[dict] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(a["seconds"] for a in self.attempts)


def _metrics(e: Evaluation) -> dict:
    return {"test": _metric_dict(e.test), "val": _metric_dict(e.val)}


def _metric_dict(m) -> dict:
    d = m.as_dict()
    d.pop("threshold", None)
    return d


def _build_artifact(ws: Workspace, profile: TargetProfile, spec: ArtifactSpec,
                    done: dict[str, ArtifactResult], reference: Evaluation) -> ArtifactResult:
    key = (spec.format, spec.precision)
    if key not in CONVERTERS:
        known = ", ".join(f"{f} {p}" for f, p in CONVERTERS)
        raise BuildError(f"{profile.name}/{spec.filename}: no converter for {spec.format} "
                         f"{spec.precision} (known: {known})")
    converter = CONVERTERS[key]
    source = None
    if converter.needs_source:
        sibling = next((r for r in done.values() if r.spec.format == "onnx"
                        and r.spec.precision == spec.precision), None)
        source = sibling.chosen.built.files[0] if sibling else None
    attempts: list[dict] = []
    passed: list[Candidate] = []
    for variant, vspec in variants(spec):
        for level in converter.levels:
            ws.say(f"[{profile.name}] {spec.filename}: converting ({variant}, {level})")
            built = ws.convert(vspec, level, source)
            gates: list[GateResult] = []

            def gate_passes(evaluation: Evaluation) -> bool:
                gates.append(check_gate(evaluation, reference, spec.precision))
                return gates[-1].passed

            evaluation = evaluate_artifact(built.files[0], vspec, ws.val, ws.test,
                                           reference.val_probs, ws.positive,
                                           reference.test.threshold, speed_if=gate_passes,
                                           threads=ws.threads)
            gate = gates[-1]
            t = evaluation.test
            ws.say(f"[{profile.name}] {spec.filename}: parity {evaluation.parity.max_abs_diff:.2e}, "
                   f"test AUC {t.auc:.4f} sens {t.sensitivity:.4f} spec {t.specificity:.4f} "
                   f"-> gate {'PASS' if gate.passed else 'FAIL: ' + '; '.join(gate.reasons)}")
            attempts.append({"variant": variant, "level": level, "seconds": built.seconds,
                             "gate": gate.as_dict(), "test": _metric_dict(t),
                             "parity": dataclasses.asdict(evaluation.parity)})
            if gate.passed:
                passed.append(Candidate(vspec, variant, level, built, evaluation, gate))
                break
    if not passed:
        last = [a for a in attempts if not a["gate"]["passed"]]
        why = "; ".join(f"{a['variant']}/{a['level']}: {' & '.join(a['gate']['reasons'])}"
                        for a in last)
        raise BuildError(f"{profile.name}/{spec.filename} failed the clinical gate after "
                         f"{len(attempts)} attempt(s): {why}")
    chosen = max(passed, key=lambda c: c.evaluation.speed.throughput_b64)
    found = [{"variant": c.variant, "level": c.level, "passed": True, "kept": c is chosen,
              "throughput_b64": c.evaluation.speed.throughput_b64,
              "latency_b1_ms": c.evaluation.speed.latency_b1_ms} for c in passed]
    failed_variants = {a["variant"] for a in attempts} - {c.variant for c in passed}
    found += [{"variant": v, "passed": False} for v in sorted(failed_variants)]
    return ArtifactResult(spec, chosen, attempts, found)


def _artifact_entry(result: ArtifactResult) -> dict:
    c, spec = result.chosen, result.chosen.spec
    e = c.evaluation
    entry: dict[str, Any] = {
        "path": spec.filename, "format": spec.format, "precision": spec.precision,
        "engine": spec.engine}
    if spec.engine == "onnxruntime":
        entry["providers"] = list(spec.providers)
        if spec.provider_options:
            entry["provider_options"] = _jsonable(spec.provider_options)
    else:
        entry["device"] = spec.device
        entry["precision_hint"] = "f32"
    entry.update({
        "parity": dataclasses.asdict(e.parity),
        "metrics": _metrics(e),
        "gate": c.gate.as_dict(),
        "speed": dataclasses.asdict(e.speed) if e.speed else None,
        "measured_with": e.engine,
        "conversion": {**c.built.info, "variant": c.variant, "options": _jsonable(spec.options)},
        "build": {"seconds": round(result.seconds, 2), "attempts": result.attempts,
                  "variants": result.variants},
    })
    return entry


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for package in ("torch", "numpy", "onnx", "onnxruntime-gpu", "onnxruntime", "openvino",
                    "nncf", "onnxconverter-common", "onnxscript", "safetensors"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    return out


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


def build_target(ws: Workspace, target: str, out_root: Path) -> Path:
    """Build, check and write one target's bundle; return its folder."""
    profile = get_target(target)
    started = time.perf_counter()
    if any(spec.precision == "int8" for spec in profile.artifacts):
        ws.calibration  # noqa: B018  (fail before any work when the calibration set is missing)
    reference = ws.reference(profile.sensitivity)
    done: dict[str, ArtifactResult] = {}
    skipped: list[dict] = []
    for spec in profile.artifacts:
        try:
            done[spec.filename] = _build_artifact(ws, profile, spec, done, reference)
        except BuildError as exc:
            if not spec.options.get("optional"):
                raise
            ws.say(f"[{profile.name}] {spec.filename}: optional artifact NOT built: {exc}")
            skipped.append({"path": spec.filename, "format": spec.format,
                            "precision": spec.precision, "reason": str(exc)})
    if not done:
        raise BuildError(f"{profile.name}: no artifact could be built")
    default, reason = _default_artifact(profile, done)
    spec = ws.spec
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "target": profile.name,
        "description": profile.description,
        "model": {"name": spec.name, "classes": list(spec.classes),
                  "positive_class": spec.positive_class,
                  "input": {"name": INPUT_NAME, "shape": [-1, *spec.input_shape],
                            "dtype": "float32"},
                  "output": {"name": "probabilities", "shape": [-1, len(spec.classes)],
                             "dtype": "float32", "meaning": "class probabilities (softmax)"}},
        "preprocessing": spec.preprocessing.as_dict(),
        "preprocessing_backend": profile.preprocessing_backend,
        "threshold": reference.test.threshold,
        "threshold_info": {"chosen_on": "val", "sensitivity": profile.sensitivity,
                           "model": "pytorch fp32 reference", "val": _metric_dict(reference.val)},
        "default_artifact": default,
        "default_artifact_reason": reason,
        "gate": {"reference": "pytorch fp32", "split": "test",
                 "max_sensitivity_drop": MAX_SENSITIVITY_DROP, "max_auc_drop": MAX_AUC_DROP,
                 "max_specificity_drop": MAX_SPECIFICITY_DROP},
        "reference": {"engine": "pytorch", "precision": "fp32", "metrics": _metrics(reference),
                      "speed": dataclasses.asdict(reference.speed) if reference.speed else None},
        "notes": profile.notes,
        "skipped": skipped,
        "provenance": {
            "checkpoint": ws.loaded.path.name, "checkpoint_sha256": ws.loaded.sha256,
            "architecture": spec.architecture, "config": spec.config,
            "data": str(ws.data.path), "data_md5": ws.data.md5,
            "calibration_images": int(len(ws.calibration)) if any(
                r.spec.precision == "int8" for r in done.values()) else 0,
            "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": _machine(), "versions": _versions(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg")
            else None,
            "threads": ws.threads,
            "command": " ".join(sys.argv) if sys.argv else "",
        },
        "build": {"seconds": round(time.perf_counter() - started, 2)},
    }
    artifacts = [(_artifact_entry(r), r.chosen.built.files) for r in done.values()]
    ws.say(f"[{profile.name}] writing bundle")
    return write_bundle(out_root, profile.name, artifacts, manifest, render_report)


def _default_artifact(profile: TargetProfile, done: dict[str, ArtifactResult]) -> tuple[str, str]:
    if profile.default_artifact != "fastest":
        if profile.default_artifact not in done:
            raise BuildError(f"{profile.name}: default artifact {profile.default_artifact!r} "
                             f"was not built (built: {', '.join(done)})")
        return profile.default_artifact, "named by the target profile"
    best = max(done.values(), key=lambda r: r.chosen.evaluation.speed.throughput_b64)
    return best.spec.filename, ("fastest batch-64 throughput measured on the build machine "
                                "among the artifacts that passed the gate")


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
                  progress: bool = True, threads: int | None = None) -> list[Path]:
    """Build several targets sharing one export, reference and conversion cache.

    ``threads`` is the intra-op thread count of PyTorch and every engine while checking and
    timing (None: each library's default); the same for all so the speeds compare.
    """
    import nncf

    nncf.set_log_level(logging.ERROR)
    say = _sayer(progress)
    profiles = [get_target(t) for t in targets]  # fail fast on unknown names
    # libraries print to stdout (NNCF progress bars, ONNX Runtime's provider fallback banner):
    # keep stdout for results, send that chatter to stderr (or nowhere when quiet)
    with tempfile.TemporaryDirectory(prefix="cxr-build-") as tmp, \
            contextlib.redirect_stdout(sys.stderr if progress else io.StringIO()):
        ws = Workspace(Path(checkpoint), data, Path(tmp), say, progress, threads)
        say(f"checkpoint {ws.loaded.path.name}: {ws.spec.architecture} {ws.spec.config}, input "
            f"{list(ws.spec.input_shape)}; data {ws.data.path}")
        return [build_target(ws, p.name, Path(out_root)) for p in profiles]


def build_bundle(target: str, checkpoint: Path, out_root: Path, data: str | None = None,
                 progress: bool = True, threads: int | None = None) -> Path:
    """Build ``out_root/<target>`` from ``checkpoint``; return the bundle folder."""
    return build_bundles([target], checkpoint, out_root, data, progress, threads)[0]


__all__ = ["BuildError", "CONVERTERS", "build_bundle", "build_bundles", "resolve_targets",
           "CheckpointError", "DatasetError"]
