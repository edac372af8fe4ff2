"""The human-readable build report (``report.md``) rendered from a bundle's manifest."""

from __future__ import annotations

from runtime.contract.manifest import GatePolicy, Manifest


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


_SPLIT_WORDS = {"val": "validation", "test": "test"}
_TEST_ONLY_REPORTS = " (it also chose the INT8 level and the default; the test split only reports)"


def _first_of_several(m: Manifest) -> str:
    findings = m.model.finding_labels
    return "" if len(findings) < 2 else \
        f" ({findings[0]}, the first of {len(findings)} findings: every one under Findings)"


def _agreement_rule(gate: GatePolicy) -> str:
    """The gate's decision-agreement rule, for bundles built since it exists."""
    return "" if gate.min_agreement is None else \
        f", decisions unchanged on >= {100 * gate.min_agreement:.0f}% of images"


def render_report(manifest: Manifest) -> str:
    """Markdown: what was built, how each artifact measured, next to the PyTorch reference."""
    m = manifest
    ref_speed = m.reference.speed
    ref_tput = ref_speed.throughput_b64 if ref_speed else None
    test = m.reference.metrics.test
    prov = m.provenance
    lines = [
        f"# Build report: `{m.target}` bundle",
        "",
        f"- model: {m.model.name} (`{prov.architecture}`), input {m.model.input.shape}; "
        f"checkpoint `{prov.checkpoint}` (sha256 {prov.checkpoint_sha256[:12]}…)",
        f"- data: {prov.dataset or 'dataset not recorded'} `{prov.data}` (md5 {prov.data_md5}); calibration: {prov.calibration_images} "
        f"training images (seed {prov.calibration_seed}); parity: validation split "
        f"(n={m.threshold_info.val.n}); metrics: test split (n={test.n})",
        f"- threshold {m.threshold:.4f}{_first_of_several(m)}: chosen on the validation split "
        f"with the PyTorch FP32 model for sensitivity >= {m.threshold_info.sensitivity}",
        f"- gate: sensitivity drop <= {100 * m.gate.max_sensitivity_drop:.1f} pp, AUC drop <= "
        f"{m.gate.max_auc_drop}, specificity drop <= {100 * m.gate.max_specificity_drop:.1f} pp"
        f"{_agreement_rule(m.gate)} vs the FP32 reference, measured on the "
        f"{_SPLIT_WORDS.get(m.gate.split, m.gate.split)} split{_TEST_ONLY_REPORTS if m.gate.split == 'val' else ''}; \"provisional\" = passes, "
        "but measured on other providers than "
        "the target asks for: `python -m runtime verify` on the device confirms it",
        f"- default artifact: `{m.default_artifact}` ({m.default_artifact_reason})",
    ]
    if m.reference_set is not None:
        lines.append(f"- reference set: `{m.reference_set.path}`, {m.reference_set.n} "
                     f"{m.reference_set.split} images (seed {m.reference_set.seed}) with every "
                     "artifact's probabilities, re-run on the device by `python -m runtime verify`")
    lines.append("- parity: max abs diff over every output column; agreement: the share of "
                 "validation images with the same decision on every finding at its threshold")
    lines += [
        f"- built {prov.built_at} on {prov.machine} in {m.build.seconds:.1f} s",
        "",
        "| artifact | format | engine (ran on) | size | parity max abs diff | agreement | "
        "AUC | sensitivity | specificity | accuracy | gate | build time | latency b1 | "
        "throughput b64 | vs PyTorch |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        f"| PyTorch FP32 (reference) | torch | pytorch (cpu) | – | 0 | 1.000 | "
        f"{test.auc:.4f} | {test.sensitivity:.4f} | {test.specificity:.4f} | "
        f"{test.accuracy:.4f} | – | – | {_num(ref_speed and ref_speed.latency_b1_ms, '.3f')} ms | "
        f"{_num(ref_tput, '.0f')} img/s | 1.00× |",
    ]
    notes: list[str] = []
    for art in m.artifacts:
        t = art.metrics.test
        tput = art.speed.throughput_b64 if art.speed else None
        ratio = f"{tput / ref_tput:.2f}×" if tput and ref_tput else "–"
        ran = art.measured_with
        where = ", ".join(ran.active)
        if ran.fell_back:
            where += " **(fallback)**"
        if art.gate.status == "provisional":
            notes.append(f"`{art.path}`: gate **provisional**: measured on "
                         f"{', '.join(art.gate.measured_on)}; the target asks for "
                         f"{', '.join(art.gate.asked_for)}, not usable on the build machine. "
                         "Run `python -m runtime verify` on the device.")
        lines.append(
            f"| `{art.path}` | {art.format} | {art.engine} ({where}) "
            f"| {_size(art.total_bytes)} | {art.parity.max_abs_diff:.2e} | "
            f"{art.parity.agreement:.3f} | {t.auc:.4f} | {t.sensitivity:.4f} | "
            f"{t.specificity:.4f} | {t.accuracy:.4f} | {art.gate.status} | "
            f"{art.build.seconds:.1f} s | "
            f"{_num(art.speed and art.speed.latency_b1_ms, '.3f')} ms | {_num(tput, '.0f')} img/s "
            f"| {ratio} |")
        if len(art.build.attempts) > 1:
            tried = "; ".join(f"{a.level}: {a.gate.status}" for a in art.build.attempts)
            notes.append(f"`{art.path}` attempts: {tried}.")
    for skipped in m.skipped:
        notes.append(f"`{skipped.path}` NOT built: {skipped.reason}")
    threads = prov.threads or "library default"
    load = prov.load_average
    lines += ["", "Speed: measured in the same run on the build machine (median batch-1 latency; "
              f"batch-64 images per second); threads: {threads}"
              + (f"; load average at the end of the build: {load}" if load else "")
              + ". A busy machine makes these numbers noisy; they are recorded, never used to "
              "choose an artifact.", ""]
    lines += findings_lines(m)
    lines += test_files_lines(m)
    lines += scope_guard_lines(m)
    lines += population_check_lines(m)
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


#: the manifest's ``extra`` key holding the PyTorch reference's metrics per finding
REFERENCE_FINDING_METRICS = "reference_finding_metrics"


def findings_lines(m: Manifest) -> list[str]:
    """Every finding of a model with several, one against the rest at its own threshold (chosen
    on validation): the reference's and each artifact's validation and test metrics. The table
    above is the first finding's."""
    if len(m.model.finding_labels) < 2:
        return []
    kind = "one sigmoid per label" if m.model.task == "multilabel" else "softmax over the labels"
    lines = ["## Findings", "",
             f"{m.model.task} model ({kind}); findings {', '.join(m.model.finding_labels)}. Each "
             "finding is scored against the rest at its own threshold, chosen on the validation "
             "split with the PyTorch FP32 model; a case is flagged when any finding reaches its "
             "threshold. The gate checks every finding's validation drops; the table at the top "
             f"is the first finding's ({m.model.positive_class}).", "",
             "| finding | model | threshold | val AUC | val sensitivity | val specificity | "
             "test AUC | test sensitivity | test specificity |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    reference = m.extra.get(REFERENCE_FINDING_METRICS, {})
    thresholds = m.thresholds()
    for name in m.model.finding_labels:
        info = m.finding_threshold_info.get(name)
        ref_test = (reference.get(name) or {}).get("test")
        if info is not None:
            v = info.val
            test = "| – | – | – |" if ref_test is None else (
                f"| {ref_test['auc']:.4f} | {ref_test['sensitivity']:.4f} | "
                f"{ref_test['specificity']:.4f} |")
            lines.append(f"| {name} | PyTorch FP32 (reference) | {thresholds[name]:.4f} | "
                         f"{v.auc:.4f} | {v.sensitivity:.4f} | {v.specificity:.4f} {test}")
        for art in m.artifacts:
            metrics = art.finding_metrics.get(name)
            if metrics is None:
                continue
            v, t = metrics.val, metrics.test
            lines.append(f"| {name} | `{art.path}` | {thresholds[name]:.4f} | {v.auc:.4f} | "
                         f"{v.sensitivity:.4f} | {v.specificity:.4f} | {t.auc:.4f} | "
                         f"{t.sensitivity:.4f} | {t.specificity:.4f} |")
    return lines + [""]


def test_files_lines(m: Manifest) -> list[str]:
    """The same test X-rays as image files through the runtime (what triage of that folder
    gives), when the test split above is another rendering of them."""
    ref = m.reference.metrics.test_files
    if ref is None or m.provenance.test_files is None:
        return []
    lines = ["## The test X-rays as files", "",
             f"The table above measured the test split as the model's training data renders it. "
             f"`{m.provenance.test_files}` holds the same X-rays as image files; through the "
             "runtime's own decoding and preprocessing, at the same threshold (what "
             "`python -m runtime triage` of that folder gives):", "",
             "| artifact | AUC | sensitivity | specificity | accuracy |", "|---|---:|---:|---:|---:|",
             f"| PyTorch FP32 (reference) | {ref.auc:.4f} | {ref.sensitivity:.4f} | "
             f"{ref.specificity:.4f} | {ref.accuracy:.4f} |"]
    for art in m.artifacts:
        t = art.metrics.test_files
        if t is not None:
            lines.append(f"| `{art.path}` | {t.auc:.4f} | {t.sensitivity:.4f} | "
                         f"{t.specificity:.4f} | {t.accuracy:.4f} |")
    return lines + [""]


def scope_guard_lines(m: Manifest) -> list[str]:
    """The report's scope guard section: method, where it was fitted, in-scope rates."""
    g = m.scope_guard
    if g is None:
        return ["## Scope guard", "", "No feature-space guard in this bundle: scope is judged by "
                "the rules only (docs/scope-and-calibration.md).", ""]
    blocks = f" in {len(g.blocks)} blocks of {', '.join(map(str, g.blocks))}" if g.blocks else ""
    lines = ["## Scope guard", "",
             f"- method: {g.description}; `{g.path}` ({g.dim} features from the `{g.output}` "
             f"output{blocks}; Ledoit-Wolf shrinkage {g.shrinkage:.4g})",
             f"- reference fitted on: {g.fitted_on}; limit set on: {g.limit_set_on}, so that "
             f"{100 * g.share:g}% are in scope; the test split is measured, never used", "",
             "| artifact | limit | validation in scope | test in scope |", "|---|---:|---:|---:|"]
    for name, r in g.artifacts.items():
        lines.append(f"| `{name}` | {r.limit:.3f} | {100 * r.val_in_scope:.1f}% of {r.val_n} | "
                     f"{100 * r.test_in_scope:.1f}% of {r.test_n} |")
    return lines + [""]


def population_check_lines(m: Manifest) -> list[str]:
    """The report's population check section (docs/population-check.md), when there is one."""
    p = m.population_check
    if p is None:
        return []
    return ["## Population check", "",
            f"- `{p.path}`: {p.method}",
            f"- fitted on: {p.fitted_on}",
            f"- limit {p.limit:.4f}, set so that {100 * p.share:g}% of the validation X-rays are "
            f"in scope; this build re-measured {100 * p.val_in_scope:.1f}% of {p.val_n}. Beyond "
            f"it a row is out of scope: \"looks like {p.looks_like}\"", "",
            *population_card_lines(p.card)]


def population_card_lines(card: dict | None) -> list[str]:
    """The fit's own figures (its card): in-scope rate per set, and the cross-source fits."""
    if not card:
        return []
    lines = [f"What the fit measured (its card; `{card.get('command', '')}`):", "",
             "| set | in scope | images |", "|---|---:|---:|"]
    outside = str(card.get("fitted_on", "")).split("out of population:")[-1]
    for name, rate in card.get("in_scope", {}).items():
        share = rate.get("in_scope")
        fitted = " (fitted on: in-sample)" if f" {name} (" in outside else ""
        lines.append(f"| {name}{fitted} | {'n/a' if share is None else f'{100 * share:.1f}%'} | "
                     f"{rate.get('n', 0)} |")
    cross = card.get("cross_source") or {}
    if cross:
        lines += ["", ("Cross-source (fitted without one out-of-population folder, measured on "
                       "it; limit at the same share of validation):"), "",
                  "| left out | out of scope | images |", "|---|---:|---:|"]
        for name, c in cross.items():
            lines.append(f"| {name} | {100 * c['out_of_scope']:.1f}% | {c['n']} |")
    return lines + [""]
