"""The figures of the README and of docs/, generated from the committed reports, never typed in.

The README and the pages in ``docs/`` hold blocks between marker comments::

    <!-- figures:NAME -->
    ...generated text...
    <!-- /figures:NAME -->

``python -m benchmarks readme`` rewrites every block, in whichever of those files holds it, from
``benchmarks/reports/report.json`` (and the model cards, ``models/reference/pneumonia_cnn.json``
and ``models/clinical/clinical_cnn.json``, for the reference models' metrics and training,
``models/clinical/cv5.json`` for the clinical recipe's cross-validation,
``models/pneumonia_type/pneumonia_type.json`` for the pneumonia-type model, and
``benchmarks/reports/load_test.json`` and ``ray.json`` for the REST service's load test and the
Ray comparison); ``--check`` only says whether every file is up to date (a test runs the same
comparison, so a page that no longer matches the committed reports fails CI).
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
DEFAULT_README = REPO / "README.md"
DOCS_FOLDER = "docs"  # beside the README: its *.md pages may hold figure blocks too
DEFAULT_REPORT = REPO / "benchmarks" / "reports" / "report.json"
DEFAULT_CARD = REPO / "models" / "reference" / "pneumonia_cnn.json"
DEFAULT_CLINICAL_CARD = REPO / "models" / "clinical" / "clinical_cnn.json"
DEFAULT_CLINICAL_CV = REPO / "models" / "clinical" / "cv5.json"
DEFAULT_TYPE_CARD = REPO / "models" / "pneumonia_type" / "pneumonia_type.json"
DEFAULT_LOAD_TEST = REPO / "benchmarks" / "reports" / "load_test.json"
DEFAULT_RAY_REPORT = REPO / "benchmarks" / "reports" / "ray.json"
BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)",
                   re.S)


class ReadmeError(ValueError):
    """The README's figure blocks or the report cannot be used."""


@dataclass(frozen=True)
class Sources:
    """What the figures come from: the benchmark report and the reference models' cards."""

    report: dict
    card: dict
    clinical_card: dict | None = None
    load_test: dict | None = None  # python -m benchmarks load (benchmarks/reports/load_test.json)
    ray: dict | None = None  # benchmarks/reports/ray.json (python -m benchmarks ray)
    clinical_cv: dict | None = None  # models/clinical/cv5.json (train --model clinical --folds 5)
    type_card: dict | None = None  # models/pneumonia_type/pneumonia_type.json


def _bundle(report: dict, label: str) -> dict:
    for section in report.get("bundles", []):
        if section.get("label") == label and section.get("status") == "ok":
            return section
    raise ReadmeError(f"the report has no measured '{label}' bundle: run `python -m benchmarks "
                      f"run --target {label}` first")


def _source(report: dict) -> str:
    machine = report["machine"]
    cpu = machine["cpu"]
    return (f"`{report['command']}` on {report['created_at'][:10]} ({cpu['model']}, "
            f"{cpu['usable_cpus']} usable cores; onnxruntime {_version(machine, 'onnxruntime')}, "
            f"openvino {_version(machine, 'openvino')})")


def _version(machine: dict, package: str) -> str:
    versions = machine.get("versions", {})
    return versions.get(package) or versions.get(f"{package}-gpu") or "not installed"


def _num(value: float | None, fmt: str, unit: str = "") -> str:
    return "–" if value is None else f"{value:{fmt}}{unit}"


def reference_model(sources: Sources) -> str:
    """The reference model's validation and test metrics from its card (written by
    ``python -m converters train``, checked by tests/converters/test_reference_model.py)."""
    card = sources.card
    try:
        metrics, threshold = card["metrics"], card["threshold"]
        lines = ["| split (n) | AUC | sensitivity | specificity | accuracy |",
                 "|---|---:|---:|---:|---:|"]
        for split, label in (("val", "validation"), ("test", "test")):
            m = metrics[split]
            cells = [f"{label} ({m['n']})"] + [f"{m[k]:.4f}" for k in
                                               ("auc", "sensitivity", "specificity", "accuracy")]
            if split == "test":
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        flops = card["flops_per_image"]
        size = (f"Size: {card['parameters']:,} parameters, {flops / 1e6:.1f} MFLOPs per image "
                f"({flops / 2e6:.0f} M multiply-accumulates), "
                f"{card['checkpoint']['bytes'] / 1024:,.0f} KiB checkpoint.")
        split = "validation" if threshold["chosen_on"] == "val" else threshold["chosen_on"]
        chosen = (f"At the threshold {threshold['value']:.4f}, the highest at which {split} "
                  f"sensitivity is still ≥ {threshold['target_sensitivity']:.2f} (the test split "
                  "is only reported, never used to choose anything).")
    except KeyError as exc:
        raise ReadmeError(f"the model card lacks {exc}: regenerate it with `python -m converters "
                          "train`") from None
    return "\n".join(lines) + "\n\n" + _wrap(chosen + " " + size)


def _with_ci(m: dict, key: str) -> str:
    low, high = m["ci95"][key]
    return f"{m[key]:.4f} [{low:.3f}, {high:.3f}]"


def clinical_model(sources: Sources) -> str:
    """The clinical model's validation (by patient) and test metrics with their 95% intervals,
    from its card (written by ``python -m converters train --model clinical``, checked by
    tests/converters/test_clinical_model.py)."""
    card = sources.clinical_card
    if card is None:
        raise ReadmeError(f"the clinical model card is missing ({DEFAULT_CLINICAL_CARD}): "
                          "regenerate it with `python -m converters train --model clinical`")
    try:
        metrics, threshold = card["metrics"], card["threshold"]
        lines = ["| split (n) | AUC | sensitivity | specificity | accuracy | ECE |",
                 "|---|---:|---:|---:|---:|---:|"]
        for split, label in (("val", "validation by patient"), ("test", "test")):
            m = metrics[split]
            cells = [f"{label} ({m['n']:,})"] + [_with_ci(m, k) for k in
                                                 ("auc", "sensitivity", "specificity")]
            cells += [f"{m['accuracy']:.4f}", f"{m['ece']:.3f}"]
            if split == "test":
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        text = (f"Threshold {threshold['value']:.4f}, the highest with validation sensitivity "
                f"≥ {threshold['target_sensitivity']:.2f}; 95% intervals: "
                f"{metrics['intervals'].split(': ', 1)[-1]}. {card['parameters']:,} parameters, "
                f"{card['macs_per_image'] / 1e6:.1f} M multiply-accumulates per image, "
                f"{card['checkpoint']['bytes'] / 2**20:.1f} MiB checkpoint.")
    except KeyError as exc:
        raise ReadmeError(f"the clinical model card lacks {exc}: regenerate it with "
                          "`python -m converters train --model clinical`") from None
    return "\n".join(lines) + "\n\n" + _wrap(text + _cross_validation(sources.clinical_cv))


def pneumonia_type_model(sources: Sources) -> str:
    """The pneumonia-type model's per-class table (one-vs-rest AUC; sensitivity and specificity
    at each finding's validation threshold; any finding) and its confusion matrices, from its
    card (written by ``python -m converters train --model pneumonia_type``, checked by
    tests/converters/test_pneumonia_type.py)."""
    card = sources.type_card
    if card is None:
        raise ReadmeError(f"the pneumonia-type model card is missing ({DEFAULT_TYPE_CARD}): "
                          "regenerate it with `python -m converters train --model pneumonia_type`")
    try:
        metrics, thresholds = card["metrics"], card["thresholds"]
        lines = ["| split | class (n) | AUC one-vs-rest | threshold | sensitivity | specificity |",
                 "|---|---|---:|---:|---:|---:|"]
        for split, label in (("val", "validation by patient"), ("test", "**test**")):
            m = metrics[split]
            rows = [*m["per_class"].items(), ("any finding", m["any_finding"])]
            for name, c in rows:
                n = c["positives"] if "positives" in c else c["tp"] + c["fn"]
                cells = [label, f"{name} ({n:,})", _with_ci(c, "auc")]
                cells.append(f"{thresholds['values'][name]:.4f}" if name in thresholds["values"]
                             else ("each finding's" if name == "any finding" else "–"))
                cells += [_with_ci(c, k) if k in c else "–" for k in ("sensitivity",
                                                                        "specificity")]
                lines.append("| " + " | ".join(cells) + " |")
        classes = metrics["test"]["confusion"]["classes"]
        lines += ["", "| split | true \\ predicted | " + " | ".join(c.lower() for c in classes)
                  + " | accuracy |", "|---|---|" + "---:|" * (len(classes) + 1)]
        for split, label in (("val", "validation by patient"), ("test", "**test**")):
            m = metrics[split]
            for index, (name, row) in enumerate(zip(classes, m["confusion"]["matrix"])):
                accuracy = f"{m['accuracy']:.4f}" if index == 0 else ""
                lines.append(f"| {label} | {name.lower()} | "
                             + " | ".join(f"{v:,}" for v in row) + f" | {accuracy} |")
        training, calibration = card["training"], card["calibration"]
        text = (f"Thresholds: per finding, the highest with validation sensitivity ≥ "
                f"{thresholds['target_sensitivity']:.2f} (one-vs-rest); any finding: flagged when "
                "some finding reaches its threshold, against not NORMAL (its AUC is that of 1 − "
                "p(NORMAL)); confusion: the most probable class. 95% intervals: "
                f"{metrics['intervals'].split(': ', 1)[-1]}. Macro one-vs-rest AUC "
                f"{metrics['val']['macro_auc']:.4f} on validation, {metrics['test']['macro_auc']:.4f}"
                f" on test; temperature {calibration['temperature']:.3f} fitted on validation "
                f"(top-label ECE {calibration['val_ece_before_temperature']:.3f} before it, "
                f"{calibration['val_ece']:.3f} after; {calibration['test_ece']:.3f} on test). "
                f"{card['parameters']:,} parameters, {card['checkpoint']['bytes'] / 2**20:.1f} MiB "
                f"checkpoint; the training took {_training_run(training)}.")
    except KeyError as exc:
        raise ReadmeError(f"the pneumonia-type model card lacks {exc}: regenerate it with "
                          "`python -m converters train --model pneumonia_type`") from None
    return "\n".join(lines) + "\n\n" + _wrap(text)


def _cross_validation(cv: dict | None) -> str:
    """The recipe's patient-grouped k-fold result, when it was run (``--folds K --out``)."""
    if cv is None:
        return ""
    try:
        folds = ", ".join(f"{auc:.4f}" for auc in cv["val_auc"])
        return (f" Patient-grouped {cv['folds']}-fold cross-validation of the same recipe "
                f"(`train --model clinical --folds {cv['folds']}`): validation AUC "
                f"{cv['mean']:.4f} ± {cv['sd']:.4f} (sd; folds {folds}).")
    except KeyError as exc:
        raise ReadmeError(f"the cross-validation file lacks {exc}: re-run `python -m converters "
                          "train --model clinical --folds 5 --out models/clinical`") from None


def _training_run(training: dict) -> str:
    """How long the shipped training took, and with what (a card's ``training`` section)."""
    best, versions = training["best_epoch"], training["versions"]
    epochs = (f"{training['epochs_run']} epochs in all, best epochs {', '.join(map(str, best))}"
              if isinstance(best, list) else f"{training['epochs_run']} epochs, best epoch {best}")
    return (f"{training['seconds']:,.0f} s ({epochs}) with {training['config']['threads']} "
            f"threads, torch {versions['torch']} and numpy {versions['numpy']}")


def reference_training(sources: Sources) -> str:
    """The shipped tiny model's training run, as its card records it."""
    card = sources.card
    try:
        members = card["training"]["config"]["members"]
        text = (f"The shipped checkpoint's training (`{card['training']['command']}`, "
                f"{members} members) took {_training_run(card['training'])}.")
    except KeyError as exc:
        raise ReadmeError(f"the model card lacks {exc}: regenerate it with `python -m converters "
                          "train`") from None
    return _wrap(text)


def clinical_training(sources: Sources) -> str:
    """The clinical model's temperature, training run and cross-validation times from its card
    and ``cv5.json``, and its test AUC beside the tiny model's."""
    card, cv = sources.clinical_card, sources.clinical_cv
    if card is None:
        raise ReadmeError(f"the clinical model card is missing ({DEFAULT_CLINICAL_CARD}): "
                          "regenerate it with `python -m converters train --model clinical`")
    try:
        calibration = card["calibration"]
        text = (f"Temperature {calibration['temperature']:.3f}, fitted on validation (validation "
                f"ECE {calibration['val_ece_before_temperature']:.3f} before it, "
                f"{calibration['val_ece']:.3f} after). The shipped training took "
                f"{_training_run(card['training'])}.")
        if cv is not None:
            seconds = cv["seconds"]
            text += (f" The {cv['folds']} folds of the cross-validation took {min(seconds):.0f}–"
                     f"{max(seconds):.0f} s each ({sum(seconds) / 60:.0f} min in all).")
        test, tiny = card["metrics"]["test"], sources.card["metrics"]["test"]
        text += (f" Test AUC {test['auc']:.4f} ({test['n']} X-rays), against the tiny model's "
                 f"{tiny['auc']:.4f} on its rendering of the same {tiny['n']}.")
    except KeyError as exc:
        raise ReadmeError(f"the clinical model card or cross-validation lacks {exc}: regenerate "
                          "them with `python -m converters train --model clinical` (and "
                          "`--folds 5 --out models/clinical`)") from None
    return _wrap(text)


def cpu_bundle_table(sources: Sources) -> str:
    """Every artifact of the cpu bundle beside the PyTorch FP32 model it was built from."""
    report = sources.report
    section = _bundle(report, "cpu")
    lines = [_wrap(f"Measured by {_source(report)}; each row in a fresh process, quality on the "
                   f"{_first_quality(section)['n']} real test images at the bundle threshold "
                   f"{section['threshold']:.4f}:"),
             "| artifact | size | AUC | sensitivity | specificity | batch-1 latency p50 | "
             "batch-64 throughput | triage end to end | peak memory |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in section["rows"]:
        if row["kind"] == "baseline":
            name = "PyTorch FP32 (reference)"
        else:
            name = f"`{row['name']}` ({row['engine']}{', default' if row['is_default'] else ''})"
        if row["status"] != "ok":
            lines.append(f"| {name} | {row['status']}: {row.get('error') or ''} |||||||| ")
            continue
        quality = row["quality"]
        latency = (row.get("latency_ms") or {}).get("p50")
        throughput = ((row.get("throughput") or {}).get("64") or {}).get("images_per_second")
        e2e = row.get("e2e") or {}
        lines.append(
            f"| {name} | {row['size_bytes'] / 1024:,.0f} KiB | {quality['auc']:.4f} | "
            f"{quality['sensitivity']:.4f} | {quality['specificity']:.4f} | "
            f"{_num(latency, '.3f', ' ms')} | {_num(throughput, ',.0f', ' img/s')} | "
            f"{_num(e2e.get('images_per_second'), ',.0f', ' img/s')} | "
            f"{_num((row.get('memory') or {}).get('peak_rss_mib'), '.0f', ' MiB')} |")
    return "\n".join(lines) + "\n"


def clinical_bundles(sources: Sources) -> str:
    """The clinical model's bundles as their builds recorded them (level that passed, parity,
    test metrics, gate drops against PyTorch FP32), from the ``clinical-<target>`` sections of
    the report (``python -m benchmarks run --model clinical|all`` copies each manifest's build
    facts into the report, see benchmarks/README.md)."""
    report = sources.report
    sections = [s for s in report.get("bundles", [])
                if s.get("label", "").startswith("clinical-") and s.get("status") == "ok"]
    if not sections:
        raise ReadmeError("the report has no measured clinical bundle: run `make bench` (or "
                          "`python -m benchmarks run --model all`) after building them with "
                          "`python -m converters build --model clinical --target all --out "
                          "dist/clinical`")
    base = next(r for r in sections[0]["rows"] if r["kind"] == "baseline")
    ref = base["manifest_metrics"]
    limits = next(r["build"]["limits"] for s in sections for r in s["rows"] if r.get("build"))
    artifacts = [r for s in sections for r in s["rows"] if r.get("build")]
    first = sum(r["build"]["attempts"] == 1 for r in artifacts)
    provisional = [s["label"] for s in sections
                   if any(r["build"]["gate"] == "provisional" for r in s["rows"] if r.get("build"))]
    seconds = " + ".join(f"{s['build_seconds']:.0f}" for s in sections)
    targets = ", ".join(s["target"] for s in sections)
    text = (f"Built by `python -m converters build --model clinical --target all` for `make "
            f"bench` ({seconds} s for {targets}); the figures are its manifests', copied into the "
            f"report by {_source(report)}. Reference: PyTorch FP32 on `kermany_test_224` "
            f"({ref['n']}), threshold {sections[0]['threshold']:.4f}: AUC {ref['auc']:.4f}, "
            f"sensitivity {ref['sensitivity']:.4f}, specificity {ref['specificity']:.4f}. "
            f"{_drops_against(artifacts)} (gate: sensitivity <= {limits['sensitivity']}, AUC <= "
            f"{limits['auc']}, specificity <= {limits['specificity']}). {first} of "
            f"{len(artifacts)} artifacts passed at their converter's first level (one attempt).")
    if provisional:
        text += (f" Provisional verdicts ({', '.join(provisional)}) were measured on other "
                 "providers than the target asks for (no GPU here); `python -m runtime verify` "
                 "on the device confirms them.")
    lines = [_wrap(text),
             "| bundle | artifact | level (attempts) | size | parity (max abs) | test AUC | sens | "
             "spec | sens drop | AUC drop | spec drop | gate |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for section in sections:
        for row in (r for r in section["rows"] if r.get("build")):
            b, m = row["build"], row["manifest_metrics"]
            default = " (default)" if row.get("is_default") else ""
            lines.append(
                f"| {section['target']} | `{row['name']}`{default} | {b['level']} "
                f"({b['attempts']}) | {_num(row.get('size_bytes') and row['size_bytes'] / 1024, ',.0f', ' KiB')} | "
                f"{b['parity_max_abs_diff']:.1e} | {m['auc']:.4f} | {m['sensitivity']:.4f} | "
                f"{m['specificity']:.4f} | {b['drops']['sensitivity']:.4f} | "
                f"{b['drops']['auc']:.4f} | {b['drops']['specificity']:.4f} | {b['gate']} |")
    return "\n".join(lines) + "\n"


def _drops_against(artifacts: list[dict]) -> str:
    """Where the gate's drops were measured: the validation split (reports without ``split``
    come from builds that gated on the test split, against the reference above)."""
    if all(r["build"].get("split", "test") == "test" for r in artifacts):
        return "Drops are against it"
    return ("Drops are the gate's, on the validation split against the reference's validation "
            "metrics (the test figures are reported, never used to choose)")


def models_side_by_side(sources: Sources) -> str:
    """Both reference models per target, each against its own PyTorch FP32 baseline of the same
    run (:func:`benchmarks.report.side_by_side_table`, the table at the top of report.md)."""
    from benchmarks.report import side_by_side_table

    table = side_by_side_table(sources.report)
    if not table:
        raise ReadmeError("the report holds one model only: run `make bench` (or `python -m "
                          "benchmarks run --model all`) to measure both side by side")
    return _wrap(f"Measured by {_source(sources.report)}{_busy(sources.report)}; each model "
                 "against its own PyTorch FP32 model in the same run (× = speed-up), quality of "
                 "the default artifact at its bundle threshold:") + "\n" + "\n".join(table) + "\n"


def _busy(report: dict) -> str:
    """A warning when other work shared the machine (load average above its usable cores)."""
    machine = report["machine"]
    load = machine.get("load_average_start")
    cores = machine["cpu"].get("usable_cpus")
    if not load or not cores or load[0] <= cores:
        return ""
    return (f", with a load average of {load[0]:.1f} on {cores} cores at its start (other work "
            "shared the machine: timings and their ratios are noisy)")


def _first_quality(section: dict) -> dict:
    for row in section["rows"]:
        if row.get("quality"):
            return row["quality"]
    raise ReadmeError(f"no row of the '{section['label']}' bundle has quality figures")


def triage_throughput(sources: Sources) -> str:
    """End-to-end triage speed of the cpu bundle's default artifact against decoding alone."""
    report = sources.report
    section = _bundle(report, "cpu")
    default = next((row for row in section["rows"] if row.get("is_default")), None)
    e2e = (default or {}).get("e2e") or {}
    decode = section.get("decode_only") or {}
    if e2e.get("status") != "ok" or decode.get("status") != "ok":
        raise ReadmeError("the report has no end-to-end triage measurement of the cpu bundle's "
                          "default artifact: rerun `python -m benchmarks run` without --no-e2e")
    return _wrap(
        f"Measured by {_source(report)} over the {e2e['images']} full-size Kermany JPEGs with "
        f"the CPU bundle's default artifact (`{default['name']}`, batch {e2e['batch']}, "
        f"{e2e['workers']} decode threads): {e2e['images_per_second']:,.0f} images/s in the "
        f"triage loop, peak memory {e2e['peak_rss_mib']:.0f} MiB; decoding alone (no model) "
        f"reaches {decode['images_per_second']:,.0f} images/s with {decode['workers']} threads.")


def serve_load_test(sources: Sources) -> str:
    """The REST service under load beside single-process triage (``python -m benchmarks load``)."""
    if sources.load_test is None:
        raise ReadmeError(f"the load test report is missing ({DEFAULT_LOAD_TEST}): run "
                          "`python -m benchmarks load`")
    from benchmarks.load_test import summary_text

    try:
        return summary_text(sources.load_test)
    except KeyError as exc:
        raise ReadmeError(f"the load test report lacks {exc}: rerun `python -m benchmarks "
                          "load`") from None


def ray_comparison(sources: Sources) -> str:
    """The single-process runner against archive triage on Ray, same folder, same run."""
    report = sources.ray
    if report is None:
        raise ReadmeError(f"the Ray comparison is missing ({DEFAULT_RAY_REPORT}): run "
                          "`python -m benchmarks ray`")
    try:
        cpu, machine = report["machine"]["cpu"], report["machine"]
        before, after = machine["load_average_before"][0], machine["load_average_after"][0]
        lines = [_wrap(
            f"Measured by `{report['command']}` on {report['created_at'][:10]} ({cpu['model']}, "
            f"{cpu['usable_cpus']} usable cores, shared: load average {before:.1f} before, "
            f"{after:.1f} after; Ray {_ray_version(report)}), {report['images']:,} files of "
            f"`{Path(report['folder']).name}`, each runner in a fresh process:"),
            "| runner | images/s | vs single-process (mean of both) | after start-up | first rows after | "
            "command wall time | peak memory (driver) | rows as single-process |",
            "|---|---:|---:|---:|---:|---:|---:|---|"]
        for run in report["runs"]:
            name = (f"single-process, {run.get('workers')} decode threads"
                    + (" (again, after Ray)" if run.get("again") else "")
                    if run["runner"] == "single-process" else
                    f"Ray, {run['actors']} engine actor{'s' if run['actors'] != 1 else ''}")
            if run["status"] != "ok":
                lines.append(f"| {name} | failed: {run.get('error')} |||||||")
                continue
            ray = run.get("ray") or {}
            match = run.get("rows_match_single_process")
            same = "–" if match is None else (
                f"same (largest probability change {match['max_abs_probability_diff']:g})"
                if match["same"] else f"{match['rows_differing']} differ")
            ratio = run.get("ratio_to_single_process")
            lines.append(
                f"| {name} | {run['images_per_second']:,.1f} | "
                f"{'–' if ratio is None else f'{ratio:.2f}×'} | "
                f"{_num(ray.get('images_per_second_after_first_rows'), ',.1f')} | "
                f"{_num(ray.get('first_rows_after_s'), '.1f', ' s')} | {run['wall_s']:.0f} s | "
                f"{_num(run.get('driver_peak_rss_mib'), '.0f', ' MiB')} | {same} |")
    except KeyError as exc:
        raise ReadmeError(f"the Ray report lacks {exc}: rerun `python -m benchmarks ray`") from None
    return "\n".join(lines) + "\n"


def _ray_version(report: dict) -> str:
    for run in report.get("runs", []):
        if (run.get("ray") or {}).get("ray_version"):
            return run["ray"]["ray_version"]
    return "not run"


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100, break_on_hyphens=False, break_long_words=False) + "\n"


GENERATORS: dict[str, Callable[[Sources], str]] = {
    "reference-model": reference_model,
    "reference-training": reference_training,
    "clinical-model": clinical_model,
    "clinical-training": clinical_training,
    "pneumonia-type-model": pneumonia_type_model,
    "cpu-bundle": cpu_bundle_table,
    "clinical-bundles": clinical_bundles,
    "models-side-by-side": models_side_by_side,
    "triage-throughput": triage_throughput,
    "serve-load-test": serve_load_test,
    "ray-comparison": ray_comparison,
}


def load_report(path: Path = DEFAULT_REPORT, what: str = "benchmark report",
                writer: str = "python -m benchmarks run") -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReadmeError(f"{what} not found: {path} ({writer} writes it)") from None
    except json.JSONDecodeError as exc:
        raise ReadmeError(f"{path} is not valid JSON: {exc}") from None


def load_sources(report: Path = DEFAULT_REPORT, card: Path = DEFAULT_CARD) -> Sources:
    clinical = (load_report(DEFAULT_CLINICAL_CARD, "clinical model card",
                            "python -m converters train --model clinical")
                if DEFAULT_CLINICAL_CARD.is_file() else None)
    load_test = (load_report(DEFAULT_LOAD_TEST, "load test report", "python -m benchmarks load")
                 if DEFAULT_LOAD_TEST.is_file() else None)
    ray = (load_report(DEFAULT_RAY_REPORT, "Ray comparison", "python -m benchmarks ray")
           if DEFAULT_RAY_REPORT.is_file() else None)
    cv = (load_report(DEFAULT_CLINICAL_CV, "clinical cross-validation",
                      "python -m converters train --model clinical --folds 5 --out models/clinical")
          if DEFAULT_CLINICAL_CV.is_file() else None)
    type_card = (load_report(DEFAULT_TYPE_CARD, "pneumonia-type model card",
                             "python -m converters train --model pneumonia_type")
                 if DEFAULT_TYPE_CARD.is_file() else None)
    return Sources(load_report(report),
                   load_report(card, "model card", "python -m converters train"), clinical,
                   load_test, ray, cv, type_card)


def render(readme: str, sources: Sources) -> str:
    """``readme`` with every figure block regenerated from ``sources``."""
    names = [m["name"] for m in BLOCK.finditer(readme)]
    unknown = sorted(set(names) - set(GENERATORS))
    if unknown:
        raise ReadmeError(f"unknown figure block(s) {unknown}; known: {sorted(GENERATORS)}")
    if not names:
        raise ReadmeError("no <!-- figures:NAME --> ... <!-- /figures:NAME --> blocks found")
    return BLOCK.sub(lambda m: m[1] + GENERATORS[m["name"]](sources) + m[4], readme)


def block_names(readme: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(readme)]


def documents(readme: Path) -> list[Path]:
    """The README and the Markdown pages of the ``docs/`` folder beside it: the files that may
    hold figure blocks."""
    readme = Path(readme)
    return [readme, *sorted((readme.parent / DOCS_FOLDER).glob("*.md"))]


def run(readme_path: Path, report_path: Path, check: bool, card_path: Path = DEFAULT_CARD) -> int:
    """Rewrite (or with ``check`` only compare) the figure blocks of the README and of the
    ``docs/`` pages beside it, in whichever file holds each; returns the exit status."""
    try:
        texts = {path: path.read_text() for path in documents(readme_path)}
    except FileNotFoundError:
        print(f"error: README not found: {readme_path}", file=sys.stderr)
        return 2
    texts = {path: text for path, text in texts.items() if block_names(text)}
    if not texts:
        print(f"error: no <!-- figures:NAME --> blocks in {readme_path} or its "
              f"{DOCS_FOLDER}/ pages", file=sys.stderr)
        return 2
    try:
        sources = load_sources(report_path, card_path)
        updated = {path: render(text, sources) for path, text in texts.items()}
    except ReadmeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stale = [path for path in texts if updated[path] != texts[path]]
    for path in texts:
        names = ", ".join(block_names(texts[path]))
        if path not in stale:
            print(f"{path}: figure blocks ({names}) match {report_path} and {card_path}")
        elif check:
            print(f"{path}: figure blocks ({names}) differ from {report_path} and {card_path}: "
                  "run `python -m benchmarks readme`", file=sys.stderr)
        else:
            path.write_text(updated[path])
            print(f"wrote {path}: figure blocks ({names}) from {report_path} and {card_path}")
    return 1 if check and stale else 0
