"""Checks every artifact on real images with the engine that will run it on the device.

- parity: probabilities of the positive class against the PyTorch FP32 model on the validation split
  (max/mean abs diff, top-1 agreement);
- clinical metrics on the test split at the bundle threshold (chosen on validation);
- the gate: sensitivity may drop at most 0.5 percentage points and AUC at most 0.005 below the
  FP32 reference (the PyTorch model);
- speed: batch-1 latency and batch-64 throughput on this machine.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from converters.images import EvalSet
from runtime.engines import Engine, create_engine, predict_proba
from runtime.metrics import BinaryMetrics, binary_metrics
from targets import ArtifactSpec

log = logging.getLogger(__name__)

MAX_SENSITIVITY_DROP = 0.005
MAX_AUC_DROP = 0.005
# Beyond the gate: a quantized default must not quietly raise the false-alarm rate either.
MAX_SPECIFICITY_DROP = 0.02
# Parity beyond which a float artifact is broken whatever its metrics (INT8 is judged by the gate).
PARITY_LIMITS = {"fp32": 1e-3, "fp16": 2e-2}
_EPS = 1e-9


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    mean_abs_diff: float
    agreement: float
    n: int
    split: str = "val"


@dataclass(frozen=True)
class Speed:
    latency_b1_ms: float  # median of repeated single-image runs
    throughput_b64: float  # images per second at batch 64
    runs_b1: int
    runs_b64: int


@dataclass
class Evaluation:
    """What running one artifact (or the PyTorch reference) measured."""

    val_probs: np.ndarray
    test_probs: np.ndarray
    val: BinaryMetrics
    test: BinaryMetrics
    parity: Parity | None = None
    speed: Speed | None = None
    engine: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateResult:
    passed: bool
    sensitivity_drop: float
    auc_drop: float
    reasons: tuple[str, ...]
    specificity_drop: float = 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "reasons": list(self.reasons),
                "max_sensitivity_drop": MAX_SENSITIVITY_DROP, "max_auc_drop": MAX_AUC_DROP,
                "max_specificity_drop": MAX_SPECIFICITY_DROP}


def measure_speed(run: Callable[[np.ndarray], Any], inputs: np.ndarray, seconds: float = 0.6,
                  ) -> Speed:
    """Batch-1 latency (median) and batch-64 throughput within a small time budget each."""
    one = np.ascontiguousarray(inputs[:1])
    batch = np.ascontiguousarray(np.resize(inputs, (64, *inputs.shape[1:])))
    for _ in range(3):
        run(one)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 10 or (time.perf_counter() < deadline and len(times) < 500):
        start = time.perf_counter()
        run(one)
        times.append(time.perf_counter() - start)
    run(batch)
    runs, start = 0, time.perf_counter()
    while runs < 3 or (time.perf_counter() - start < seconds * 2 and runs < 200):
        run(batch)
        runs += 1
    elapsed = time.perf_counter() - start
    return Speed(latency_b1_ms=float(np.median(times) * 1e3), throughput_b64=64 * runs / elapsed,
                 runs_b1=len(times), runs_b64=runs)


def parity(probs: np.ndarray, reference: np.ndarray, positive: int) -> Parity:
    """Compare (N, C) probabilities with the reference's."""
    diff = np.abs(probs[:, positive].astype(np.float64) - reference[:, positive])
    agree = float(np.mean(probs.argmax(1) == reference.argmax(1)))
    return Parity(float(diff.max()), float(diff.mean()), agree, int(len(diff)))


def evaluate_probs(val_probs: np.ndarray, test_probs: np.ndarray, val: EvalSet, test: EvalSet,
                   positive: int, threshold: float) -> Evaluation:
    return Evaluation(val_probs, test_probs,
                      binary_metrics(val.labels, val_probs[:, positive], threshold),
                      binary_metrics(test.labels, test_probs[:, positive], threshold))


def open_engine(path: Path, spec: ArtifactSpec, bundle_dir: Path | None = None,
                threads: int | None = None) -> Engine:
    """The runtime engine the device will use, with the profile's providers/device."""
    options = resolve_provider_options(spec.provider_options, bundle_dir or path.parent)
    return create_engine(path, spec.engine, providers=spec.providers, device=spec.device,
                         provider_options=options, threads=threads)


def resolve_provider_options(options: dict[str, dict], bundle_dir: Path) -> dict[str, dict]:
    """Provider options with ``*_path`` values made absolute against the bundle folder."""
    resolved: dict[str, dict] = {}
    for provider, values in options.items():
        resolved[provider] = {k: (str(bundle_dir / v) if k.endswith("_path") else v)
                              for k, v in values.items()}
    return resolved


def engine_facts(engine: Engine) -> dict[str, Any]:
    """What the engine actually runs with (recorded in the manifest)."""
    precision = str(engine.precision)
    if precision.startswith("<Type:"):  # openvino.Type's repr, e.g. <Type: 'float32'>
        precision = precision.split("'")[1]
    return {"engine": engine.name, "requested": list(engine.requested),
            "active": list(engine.active), "fell_back": bool(engine.fell_back),
            "inference_precision": precision}


def evaluate_artifact(path: Path, spec: ArtifactSpec, val: EvalSet, test: EvalSet,
                      reference_val: np.ndarray, positive: int, threshold: float,
                      speed_if: Callable[[Evaluation], bool] = lambda _e: True,
                      threads: int | None = None) -> Evaluation:
    """Load ``path`` in its engine once; parity on val, metrics on test, then speed when
    ``speed_if(evaluation)`` (e.g. only for artifacts that passed the gate)."""
    engine = open_engine(path, spec, threads=threads)
    val_probs = predict_proba(engine, val.inputs)
    test_probs = predict_proba(engine, test.inputs)
    result = evaluate_probs(val_probs, test_probs, val, test, positive, threshold)
    result.parity = parity(val_probs, reference_val, positive)
    result.engine = {**engine_facts(engine), "threads": threads}
    if engine.fell_back:
        log.warning("%s: measured on %s, not on %s (those providers are not usable here)",
                    path.name, engine.active, engine.requested)
    if speed_if(result):
        result.speed = measure_speed(engine.run, val.inputs)
    return result


def check_gate(candidate: Evaluation, reference: Evaluation, precision: str) -> GateResult:
    """Fail on a test-split drop of sensitivity > 0.5 pp, AUC > 0.005 or specificity > 2 pp,
    or on broken parity."""
    sens_drop = reference.test.sensitivity - candidate.test.sensitivity
    auc_drop = reference.test.auc - candidate.test.auc
    spec_drop = reference.test.specificity - candidate.test.specificity
    reasons = []
    if sens_drop > MAX_SENSITIVITY_DROP + _EPS:
        reasons.append(f"test sensitivity {candidate.test.sensitivity:.4f} is "
                       f"{100 * sens_drop:.2f} pp below the FP32 reference "
                       f"{reference.test.sensitivity:.4f} (allowed {100 * MAX_SENSITIVITY_DROP:.1f} pp)")
    if auc_drop > MAX_AUC_DROP + _EPS:
        reasons.append(f"test AUC {candidate.test.auc:.4f} is {auc_drop:.4f} below the FP32 "
                       f"reference {reference.test.auc:.4f} (allowed {MAX_AUC_DROP})")
    if spec_drop > MAX_SPECIFICITY_DROP + _EPS:
        reasons.append(f"test specificity {candidate.test.specificity:.4f} is "
                       f"{100 * spec_drop:.2f} pp below the FP32 reference "
                       f"{reference.test.specificity:.4f} (allowed {100 * MAX_SPECIFICITY_DROP:.1f} pp)")
    limit = PARITY_LIMITS.get(precision)
    if limit is not None and candidate.parity is not None and candidate.parity.max_abs_diff > limit:
        reasons.append(f"parity max abs diff {candidate.parity.max_abs_diff:.2e} exceeds "
                       f"{limit:.0e} for {precision}")
    return GateResult(not reasons, float(sens_drop), float(auc_drop), tuple(reasons),
                      float(spec_drop))
