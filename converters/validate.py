"""Checks every artifact on real images with the engine that will run it on the device.

- parity: every output column against the PyTorch FP32 model on the validation split (max/mean
  abs diff over all columns; agreement: the share of images with the same decision on every
  finding at its threshold);
- clinical metrics of every finding (one against the rest) on the validation and test splits at
  that finding's threshold (chosen on validation);
- the gate, on the validation split only (the test split reports, it never chooses): for every
  finding, sensitivity may drop at most 0.5 percentage points, AUC at most 0.005 and specificity
  at most 2 pp below the FP32 reference (the PyTorch model); at least 97% of the validation
  images must keep their decision on every finding (so that changes that cancel out in the
  metrics cannot move individual patients); and a float format's parity must stay within its
  row's ``parity_tolerance`` (runtime/formats.py; INT8 is judged by the gate). Numbers measured on other providers than the target asks for (no GPU here) make the
  verdict "provisional", never "pass";
- speed: batch-1 latency and batch-64 throughput on this machine (recorded, never used to choose),
  with the benchmarks' timing harness (:mod:`benchmarks.measure` loops, :mod:`benchmarks.runners`
  driving each engine the way it is fastest) on a small budget (:meth:`benchmarks.measure.Settings.build`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.measure import Settings, latency, throughput
from benchmarks.runners import Runners, engine_runners
from converters.data.labelled import LabelledImages
from converters.findings import Findings
from evaluation.metrics import BinaryMetrics
from runtime.contract import manifest as contract
from runtime.contract.formats import FormatRow, Placement
from runtime.engines.base import Engine, predict_proba, predict_proba_and_features
from runtime.engines.registry import create_engine

log = logging.getLogger(__name__)

MAX_SENSITIVITY_DROP = 0.005
MAX_AUC_DROP = 0.005
# Beyond the gate: a quantized default must not quietly raise the false-alarm rate either.
MAX_SPECIFICITY_DROP = 0.02
#: the least share of validation images whose decision (every finding, at its threshold) must
#: match the FP32 reference's: metrics can hold while errors in both directions cancel out
MIN_AGREEMENT = 0.97
#: the split the gate measures the drops on (and so the INT8 level and the default artifact)
GATE_SPLIT = "val"
_EPS = 1e-9


Parity = contract.Parity
Speed = contract.Speed


@dataclass
class Evaluation:
    """What running one artifact (or the PyTorch reference) measured."""

    val_probs: np.ndarray
    test_probs: np.ndarray
    val: BinaryMetrics  # of the first finding (the only one for most models)
    test: BinaryMetrics
    parity: Parity | None = None
    speed: Speed | None = None
    engine: contract.MeasuredWith | None = None
    val_features: np.ndarray | None = None  # the artifact's features output (scope guard)
    test_features: np.ndarray | None = None
    #: its features on the validation X-rays of every other rendering (scope guard limit)
    guard_val_features: list[np.ndarray] = field(default_factory=list)
    #: the test X-rays as image files, when ``test`` is another rendering of them
    test_files: BinaryMetrics | None = None
    #: every finding's metrics in the model's finding order (the first is ``val``/``test``/
    #: ``test_files``); empty: the model has one finding
    finding_val: list[BinaryMetrics] = field(default_factory=list)
    finding_test: list[BinaryMetrics] = field(default_factory=list)
    finding_test_files: list[BinaryMetrics] | None = None
    #: each finding's threshold (the reference's: chosen on validation)
    thresholds: tuple[float, ...] = ()

    @property
    def vals(self) -> list[BinaryMetrics]:
        """Every finding's validation metrics (one finding: ``[val]``)."""
        return self.finding_val or [self.val]


def measure_speed(runners: Runners, inputs: np.ndarray, settings: Settings | None = None
                  ) -> Speed:
    """Batch-1 latency (median) and batch-64 throughput with the benchmarks' loops, on the
    build's small budget (:meth:`Settings.build`) unless ``settings`` say otherwise."""
    settings = settings or Settings.build()
    lat = latency(runners.latency.run, inputs, settings)
    point = throughput(runners.throughput.run, inputs, 64, settings, runners.throughput.drain)
    return Speed(latency_b1_ms=lat["p50"], throughput_b64=point["images_per_second"],
                 runs_b1=lat["runs"], runs_b64=point["batches"])


def parity(probs: np.ndarray, reference: np.ndarray, findings: Findings,
           thresholds: tuple[float, ...]) -> Parity:
    """Compare (N, C) probabilities with the reference's: max and mean abs diff over every
    column; agreement = the share of images whose decision on every finding (at its threshold)
    is the same."""
    diff = np.abs(probs.astype(np.float64) - reference)
    same = findings.decisions(probs, thresholds) == findings.decisions(reference, thresholds)
    agree = float(np.mean(same.all(axis=1)))
    return Parity(float(diff.max()), float(diff.mean()), agree, int(len(diff)))


def finding_metrics(images: LabelledImages, probs: np.ndarray, findings: Findings,
                    thresholds: tuple[float, ...]) -> list[BinaryMetrics]:
    """Each finding's metrics on ``images`` at its threshold, one against the rest."""
    return findings.metrics(images.labels, probs, thresholds)


def evaluate_probs(val_probs: np.ndarray, test_probs: np.ndarray, val: LabelledImages,
                   test: LabelledImages, findings: Findings, thresholds: tuple[float, ...]
                   ) -> Evaluation:
    """Every finding's metrics on val and test at its threshold (the first finding's are
    ``val`` and ``test``; the lists only for a model with several findings)."""
    on_val = finding_metrics(val, val_probs, findings, thresholds)
    on_test = finding_metrics(test, test_probs, findings, thresholds)
    several = findings.several
    return Evaluation(val_probs, test_probs, on_val[0], on_test[0],
                      finding_val=on_val if several else [],
                      finding_test=on_test if several else [], thresholds=tuple(thresholds))


def add_test_files(result: Evaluation, images: LabelledImages, probs: np.ndarray,
                   findings: Findings) -> None:
    """``result``'s metrics on the test X-rays as image files (reported only)."""
    measured = finding_metrics(images, probs, findings, result.thresholds)
    result.test_files = measured[0]
    result.finding_test_files = measured if findings.several else None


def open_engine(path: Path, row: FormatRow, placement: Placement,
                threads: int | None = None) -> Engine:
    """The runtime engine the device will use, with the target's providers/device."""
    options = resolve_provider_options(placement.provider_options, path.parent)
    return create_engine(path, row.engine, dataclasses.replace(placement, provider_options=options),
                         threads=threads)


def resolve_provider_options(options, bundle_dir: Path) -> dict[str, dict]:
    """Provider options with ``*_path`` values made absolute against the bundle folder."""
    resolved: dict[str, dict] = {}
    for provider, values in options.items():
        resolved[provider] = {k: (str(bundle_dir / v) if k.endswith("_path") else v)
                              for k, v in values.items()}
    return resolved


def engine_facts(engine: Engine, threads: int | None = None) -> contract.MeasuredWith:
    """What the engine actually runs with (recorded in the manifest)."""
    return contract.MeasuredWith(engine=engine.name, requested=list(engine.requested),
                                 active=list(engine.active), fell_back=bool(engine.fell_back),
                                 inference_precision=str(engine.precision), threads=threads)


def evaluate_artifact(path: Path, row: FormatRow, placement: Placement, val: LabelledImages,
                      test: LabelledImages,
                      reference_val: np.ndarray, findings: Findings,
                      thresholds: tuple[float, ...], speed_if: Callable[[Evaluation], bool] = lambda _e: True,
                      threads: int | None = None,
                      guard_val: list[LabelledImages] | None = None,
                      test_files: LabelledImages | None = None) -> Evaluation:
    """Load ``path`` in its engine once; parity and metrics on val, metrics on test, then speed when
    ``speed_if(evaluation)`` (e.g. only for artifacts that passed the gate). ``guard_val``:
    other renderings' validation images, whose features only the scope guard's limit reads;
    ``test_files``: the test X-rays as image files (metrics only, never gated on)."""
    engine = open_engine(path, row, placement, threads=threads)
    val_probs, val_features = predict_proba_and_features(engine, val.inputs)
    test_probs, test_features = predict_proba_and_features(engine, test.inputs)
    result = evaluate_probs(val_probs, test_probs, val, test, findings, thresholds)
    if test_files is not None:
        add_test_files(result, test_files, predict_proba(engine, test_files.inputs), findings)
    result.val_features, result.test_features = val_features, test_features
    if val_features is not None:
        result.guard_val_features = [predict_proba_and_features(engine, extra.inputs)[1]
                                     for extra in guard_val or []]
    result.parity = parity(val_probs, reference_val, findings, thresholds)
    result.engine = engine_facts(engine, threads)
    if engine.fell_back:
        log.warning("%s: measured on %s, not on %s (those providers are not usable here)",
                    path.name, engine.active, engine.requested)
    if speed_if(result):
        settings = Settings.build(threads)
        result.speed = measure_speed(engine_runners(engine, settings, val.inputs), val.inputs,
                                     settings)
    return result


def check_gate(candidate: Evaluation, reference: Evaluation, row: FormatRow,
               placement: Placement, findings: tuple[str, ...] = ()) -> contract.GateVerdict:
    """Fail on a validation-split drop, for any finding, of sensitivity > 0.5 pp, AUC > 0.005
    or specificity > 2 pp, on decisions that differ from the reference's on more than 3% of the
    validation images, or on parity beyond the row's tolerance; "provisional" when it passes
    on other providers than the target asks for. The recorded drops are the worst over the
    findings; with several ``findings`` (their names, in order) each reason names its finding.
    The test split is never read: it only reports."""
    pairs = list(zip(candidate.vals, reference.vals, strict=True))
    reasons = []
    for k, (cand, ref) in enumerate(pairs):
        named = f"{findings[k]}: " if len(pairs) > 1 and k < len(findings) else ""
        reasons += [named + reason for reason in _drop_reasons(cand, ref)]
    sens_drop = _worst([ref.sensitivity - cand.sensitivity for cand, ref in pairs])
    auc_drop = _worst([ref.auc - cand.auc for cand, ref in pairs])
    spec_drop = _worst([ref.specificity - cand.specificity for cand, ref in pairs])
    agreement = candidate.parity.agreement if candidate.parity is not None else None
    if agreement is not None and agreement < MIN_AGREEMENT - _EPS:
        moved = round((1 - agreement) * candidate.parity.n)
        reasons.append(f"decisions differ from the FP32 reference's on {moved} of "
                       f"{candidate.parity.n} validation images ({100 * (1 - agreement):.1f}%; "
                       f"allowed {100 * (1 - MIN_AGREEMENT):.0f}%)")
    limit = row.parity_tolerance
    if limit is not None and candidate.parity is not None and candidate.parity.max_abs_diff > limit:
        reasons.append(f"parity max abs diff {candidate.parity.max_abs_diff:.2e} exceeds "
                       f"{limit:.0e} for {row.key}")
    asked = placement.asked_for
    measured = list(candidate.engine.active) if candidate.engine else asked
    status = "fail" if reasons else ("pass" if measured[:1] == asked[:1] else "provisional")
    return contract.GateVerdict(
        status=status, sensitivity_drop=float(sens_drop), auc_drop=float(auc_drop),
        specificity_drop=float(spec_drop), reasons=reasons, measured_on=measured,
        asked_for=asked, max_sensitivity_drop=MAX_SENSITIVITY_DROP, max_auc_drop=MAX_AUC_DROP,
        max_specificity_drop=MAX_SPECIFICITY_DROP, split=GATE_SPLIT, agreement=agreement,
        min_agreement=MIN_AGREEMENT)


def _worst(drops: list[float]) -> float:
    """The largest drop, NaN (a metric undefined on these images) only when every one is."""
    defined = [d for d in drops if not math.isnan(d)]
    return max(defined) if defined else float("nan")


def _drop_reasons(cand: BinaryMetrics, ref: BinaryMetrics) -> list[str]:
    """Why one finding's validation metrics fail the policy (empty: they pass)."""
    sens_drop = ref.sensitivity - cand.sensitivity
    auc_drop = ref.auc - cand.auc
    spec_drop = ref.specificity - cand.specificity
    reasons = []
    if sens_drop > MAX_SENSITIVITY_DROP + _EPS:
        reasons.append(f"validation sensitivity {cand.sensitivity:.4f} is "
                       f"{100 * sens_drop:.2f} pp below the FP32 reference "
                       f"{ref.sensitivity:.4f} (allowed {100 * MAX_SENSITIVITY_DROP:.1f} pp)")
    if auc_drop > MAX_AUC_DROP + _EPS:
        reasons.append(f"validation AUC {cand.auc:.4f} is {auc_drop:.4f} below the FP32 "
                       f"reference {ref.auc:.4f} (allowed {MAX_AUC_DROP})")
    if spec_drop > MAX_SPECIFICITY_DROP + _EPS:
        reasons.append(f"validation specificity {cand.specificity:.4f} is "
                       f"{100 * spec_drop:.2f} pp below the FP32 reference "
                       f"{ref.specificity:.4f} (allowed {100 * MAX_SPECIFICITY_DROP:.1f} pp)")
    return reasons
