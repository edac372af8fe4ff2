"""Report files: ``report.json`` (keys documented in benchmarks/README.md), ``report.md`` (one
table per bundle with ratios against PyTorch FP32 of the same run and a verdict per artifact) and
PNG charts (matplotlib, Agg backend) per bundle: latency + throughput, sensitivity + specificity.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from benchmarks.machine import flag_summary

CHARTS = "charts"
STATUS_WORDS = {"ok": "ok", "failed": "**FAILED**", "not-timed": "not timed"}
#: the test images of each dataset a manifest's provenance.dataset can name
TEST_SPLIT_WORDS = {"pneumoniamnist": "the PneumoniaMNIST test split",
                    "kermany": "the Kermany test folder (`kermany_test_224`)"}


def test_split_words(section: dict) -> str:
    """``the PneumoniaMNIST test split`` / ``the Kermany test folder ...`` for a kit
    checkpoint's section, ``the [data] test of `models/reference/model.toml``` for a config's."""
    if section.get("model_config"):
        return f"the `[data] test` of `{section['model_config']}`"
    dataset = section.get("dataset")
    return TEST_SPLIT_WORDS.get(dataset or "", f"the {dataset or 'unknown'} test split")


def clean(value):
    """JSON-safe: NaN/inf become null, tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_reports(report: dict, out: Path) -> list[Path]:
    """Charts, then report.json and report.md (which link the charts); returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    written = write_charts(report, out)
    json_path, md_path = out / "report.json", out / "report.md"
    _atomic_write(json_path, json.dumps(clean(report), indent=2, allow_nan=False) + "\n")
    _atomic_write(md_path, render_markdown(report))
    return [json_path, md_path, *written]


# --------------------------------------------------------------------------------------------
# charts


def _timed_rows(section: dict) -> list[dict]:
    return [r for r in section["rows"] if r["status"] == "ok" and r.get("latency_ms")]


def _quality_rows(section: dict) -> list[dict]:
    return [r for r in section["rows"] if r["status"] != "failed" and r.get("quality")]


def write_charts(report: dict, out: Path) -> list[Path]:
    """Per bundle: ``<label>-speed.png`` and ``<label>-quality.png`` (stale ones removed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / CHARTS
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for section in report["bundles"]:
        section["charts"] = {}
        title = f"{section['label']}: {((section.get('model') or {}).get('name')) or ''}"
        timed = _timed_rows(section)
        if timed:
            path = folder / f"{section['label']}-speed.png"
            _speed_chart(plt, timed, title, section, path)
            section["charts"]["speed"] = f"{CHARTS}/{path.name}"
            written.append(path)
        rows = _quality_rows(section)
        if rows:
            path = folder / f"{section['label']}-quality.png"
            _quality_chart(plt, rows, title, path, section)
            section["charts"]["quality"] = f"{CHARTS}/{path.name}"
            written.append(path)
    keep = {p.name for p in written}
    for stale in folder.glob("*.png"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return written


def _short(row: dict) -> str:
    return "PyTorch FP32" if row["kind"] == "baseline" else row["name"]


def _wide(values: list[float]) -> bool:
    """A log axis when the values span more than 20x (PyTorch vs INT8 often does)."""
    positive = [v for v in values if v and v > 0]
    return bool(positive) and max(positive) / min(positive) > 20


def _speed_chart(plt, rows: list[dict], title: str, section: dict, path: Path) -> None:
    names = [_short(r) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.7 * len(rows) + 2.6))
    ys = list(range(len(rows)))
    p50 = [r["latency_ms"]["p50"] for r in rows]
    p95 = [r["latency_ms"]["p95"] for r in rows]
    p99 = [r["latency_ms"]["p99"] for r in rows]
    ax1.barh(ys, p50, color=["#888888" if r["kind"] == "baseline" else "#3b75af" for r in rows],
             label="p50")
    ax1.scatter(p95, ys, marker="|", s=250, color="#e08a1e", label="p95", zorder=3)
    ax1.scatter(p99, ys, marker="|", s=250, color="#c0392b", label="p99", zorder=3)
    for y, value in zip(ys, p50):
        ax1.annotate(f" {value:.3g} ms", (value, y), va="center", ha="left", fontsize=7)
    if _wide(p50 + p99):
        ax1.set_xscale("log")
    ax1.set_yticks(ys, names)
    ax1.invert_yaxis()
    ax1.set_xlabel("batch-1 latency, ms (lower is better)")
    ax1.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    batches = sorted({int(b) for r in rows for b in (r.get("throughput") or {})})
    height = 0.8 / max(1, len(batches))
    every: list[float] = []
    for i, batch in enumerate(batches):
        values = [((r.get("throughput") or {}).get(str(batch)) or {}).get("images_per_second", 0)
                  for r in rows]
        every += values
        ax2.barh([y + (i - (len(batches) - 1) / 2) * height for y in ys], values, height,
                 label=f"batch {batch}")
    if _wide(every):
        ax2.set_xscale("log")
    ax2.set_yticks(ys, names)
    ax2.invert_yaxis()
    ax2.set_xlabel("throughput, images/s (higher is better)")
    ax2.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    note = " (CPU fallback, not GPU)" if any((r.get("execution") or {}).get("cpu_fallback")
                                            for r in rows) else ""
    fig.suptitle(f"{title}: speed on this machine{note}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _quality_chart(plt, rows: list[dict], title: str, path: Path, section: dict) -> None:
    names = [_short(r) for r in rows]
    sens = [r["quality"]["sensitivity"] for r in rows]
    spec = [r["quality"]["specificity"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(rows) + 3), 4.2))
    xs = list(range(len(rows)))
    ax.bar([x - 0.2 for x in xs], sens, 0.4, label="sensitivity", color="#c0392b")
    ax.bar([x + 0.2 for x in xs], spec, 0.4, label="specificity", color="#3b75af")
    for x, s, p in zip(xs, sens, spec):
        ax.annotate(f"{s:.3f}", (x - 0.2, s), ha="center", va="bottom", fontsize=7)
        ax.annotate(f"{p:.3f}", (x + 0.2, p), ha="center", va="bottom", fontsize=7)
    low = min(sens + spec)
    ax.set_ylim(max(0.0, low - 0.1), 1.02)
    ax.set_xticks(xs, names, rotation=20, ha="right")
    threshold = rows[0]["quality"].get("threshold")
    data = "test split" if section.get("model_config") else \
        "Kermany test" if section.get("dataset") == "kermany" else "PneumoniaMNIST test"
    ax.set_ylabel(f"{data} (n={rows[0]['quality']['n']}), threshold {threshold:.3f}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(f"{title}: clinical quality")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# markdown


def _f(value, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, float)) and abs(value) >= 1000:
        return f"{value:,.0f}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def _x(value) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _mb(size) -> str:
    return "–" if size is None else f"{size / 1e6:.2f}"


def _pp(value) -> str:
    return "–" if value is None else f"{100 * value:+.1f}"


def _tp(row: dict, batch: int):
    return ((row.get("throughput") or {}).get(str(batch)) or {}).get("images_per_second")


def _engine_cell(row: dict) -> str:
    ex = row.get("execution") or {}
    if row["kind"] == "baseline":
        return f"pytorch [{', '.join(ex.get('active') or ['?'])}] fp32" if ex else "pytorch"
    if not ex:
        return f"{row.get('engine') or '?'} (did not run)"
    active = ", ".join(p.replace("ExecutionProvider", "") for p in ex.get("active") or [])
    text = f"{row.get('engine') or '?'} [{active or '?'}] {_precision_words(row, ex)}"
    if ex.get("cpu_fallback"):
        text += " (CPU fallback)"
    return text.strip()


def _precision_words(row: dict, ex: dict) -> str:
    """What the engine reports it computes in; OpenVINO's is its float inference precision
    (the int8 layers of an int8 IR stay int8)."""
    precision = ex.get("inference_precision", "")
    return f"inference {precision}" if precision and precision != "as-stored" else precision


def _name_cell(row: dict) -> str:
    if row["kind"] == "baseline":
        return "PyTorch FP32 (baseline)"
    marks = [m for m, on in (("default", row.get("is_default")), ("best", row.get("best"))) if on]
    return f"`{row['name']}`" + (f" ({', '.join(marks)})" if marks else "")


def _main_table(section: dict) -> list[str]:
    lines = ["| artifact | format / precision | engine [providers] precision | status | size MB "
             "| peak RSS MiB | p50 ms | b64 img/s | × PyTorch p50 | × PyTorch b64 | e2e img/s "
             "| sensitivity (Δ pp) | specificity (Δ pp) | verdict |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in section["rows"]:
        vs = row.get("vs_pytorch") or {}
        q, d = row.get("quality") or {}, row.get("quality_delta") or {}
        e = row.get("e2e") or {}
        e2e = _f(e.get("images_per_second"), 1) if e.get("status") == "ok" else \
            ("**failed**" if e.get("status") == "failed" else "–")
        sens = "–" if not q else f"{q['sensitivity']:.4f}" + (
            f" ({_pp(d.get('sensitivity'))})" if row["kind"] != "baseline" and d else "")
        spec = "–" if not q else f"{q['specificity']:.4f}" + (
            f" ({_pp(d.get('specificity'))})" if row["kind"] != "baseline" and d else "")
        lines.append(
            f"| {_name_cell(row)} | {row.get('format') or '?'} / {row.get('precision') or '?'} | "
            f"{_engine_cell(row)} | {STATUS_WORDS.get(row['status'], row['status'])} | "
            f"{_mb(row.get('size_bytes'))} | "
            f"{_f((row.get('memory') or {}).get('peak_rss_mib'), 0)} | "
            f"{_f((row.get('latency_ms') or {}).get('p50'), 3)} | {_f(_tp(row, 64), 0)} | "
            f"{_x(vs.get('latency_p50_speedup'))} | "
            f"{_x((vs.get('throughput_ratio') or {}).get('64'))} | {e2e} | {sens} | {spec} | "
            f"{row.get('verdict', '').replace('|', '/')} |")
    return lines


def _findings_table(section: dict) -> list[str]:
    """A model with several findings: each row's quality per finding, one against the rest at the
    bundle's threshold for that finding (empty for a model with one finding)."""
    rows = [r for r in section["rows"] if (r.get("quality") or {}).get("findings")]
    if not rows:
        return []
    lines = ["Quality per finding, each one against the rest at the bundle's threshold for that "
             "finding (Δ against PyTorch FP32 in this run):", "",
             "| artifact | finding | threshold | AUC (Δ) | sensitivity (Δ pp) | "
             "specificity (Δ pp) |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        deltas = (row.get("quality_delta") or {}).get("findings") or {}
        for name, q in row["quality"]["findings"].items():
            d = deltas.get(name) if row["kind"] != "baseline" else None
            auc = _f(q.get("auc"), 4) + (f" ({d['auc']:+.4f})" if d and "auc" in d else "")
            sens = _f(q.get("sensitivity"), 4) + (f" ({_pp(d.get('sensitivity'))})" if d else "")
            spec = _f(q.get("specificity"), 4) + (f" ({_pp(d.get('specificity'))})" if d else "")
            lines.append(f"| {_name_cell(row)} | {name} | {_f(q.get('threshold'), 4)} | {auc} | "
                         f"{sens} | {spec} |")
    return lines


def _detail_table(section: dict) -> list[str]:
    rows = [r for r in section["rows"] if r.get("latency_ms") or r.get("load_ms")]
    if not rows:
        return []
    batches = sorted({int(b) for r in rows for b in (r.get("throughput") or {})})
    head = ("| artifact | load ms | p50 / p95 / p99 ms (runs) | "
            + " | ".join(f"b{b} img/s" for b in batches)
            + " | RSS after load MiB | peak RSS MiB | how it was timed (latency; throughput) |")
    lines = ["Timing and memory details (each row measured in its own fresh process; peak RSS "
             "before the timing engines were opened):", "",
             head, "|---|---:|---|" + "---:|" * len(batches) + "---:|---:|---|"]
    for row in rows:
        lat = row.get("latency_ms") or {}
        mem = row.get("memory") or {}
        lat_cell = (f"{lat['p50']:.3f} / {lat['p95']:.3f} / {lat['p99']:.3f} ({lat['runs']})"
                    if lat else "–")
        lines.append(f"| {_name_cell(row)} | {_f(row.get('load_ms'), 1)} | {lat_cell} | "
                     + " | ".join(_f(_tp(row, b), 0) for b in batches)
                     + f" | {_f(mem.get('rss_after_load_mib'), 0)} | {_f(mem.get('peak_rss_mib'), 0)}"
                     f" | {timing_words(row)} |")
    return lines


def _count(n, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _runner_words(facts: dict) -> str:
    if facts.get("hint"):  # OpenVINO
        words = f"{facts['hint']} hint, {_count(facts.get('requests'), facts.get('api') + ' request')}"
        return words + (f", {_count(facts['streams'], 'stream')}" if facts.get("streams") else "")
    if facts.get("config"):  # ONNX Runtime
        if facts["config"] == "the runtime's session":
            return f"the runtime's session ({facts.get('why')})"
        return (f"{facts['config']} (intra-op {facts.get('intra_op_threads')}, inter-op "
                f"{facts.get('inter_op_threads')}, {facts.get('execution_mode')})")
    return f"{facts.get('api', 'sync')}, {facts.get('threads', 'default')} threads"


def timing_words(row: dict) -> str:
    """How the engine was driven for latency and for throughput (``execution.timing``)."""
    timing = (row.get("execution") or {}).get("timing")
    if not timing:
        return "–"
    latency, throughput = _runner_words(timing["latency"]), _runner_words(timing["throughput"])
    text = latency if latency == throughput else f"{latency}; {throughput}"
    tuning = timing.get("tuning")
    if tuning:
        text += f" (best of {len(tuning['candidates'])} probed)"
    return text.replace("|", "/")


def _benchmark_app_lines(section: dict) -> list[str]:
    rows = [r for r in section["rows"] if r.get("benchmark_app")]
    if not rows:
        return []
    app = rows[0]["benchmark_app"]
    lines = [f"OpenVINO's own `benchmark_app` on the same IR in the same run (batch {app['batch']}, "
             f"{app['hint']} hint, inference precision {app.get('precision') or 'default'}, "
             f"{app['seconds']} s; random inputs) beside the kit's batch-{app['batch']} figure "
             f"(real images, async queue). Target: kit / benchmark_app ≥ {app['target_ratio']}.",
             "", "| artifact | kit img/s | benchmark_app img/s | kit / benchmark_app | command |",
             "|---|---:|---:|---:|---|"]
    for row in rows:
        a = row["benchmark_app"]
        value = _f(a.get("ratio"), 2)
        if a.get("ratio") is not None and a["ratio"] < a["target_ratio"]:
            value += " (below target)"
        figure = _f(a.get("images_per_second"), 0) if a["status"] == "ok" else \
            f"**failed**: {a.get('error')}"
        lines.append(f"| {_name_cell(row)} | {_f(a.get('kit_images_per_second'), 0)} | {figure} "
                     f"| {value} | `{a['command']}` |")
    return lines


def _e2e_lines(section: dict) -> list[str]:
    decode = section.get("decode_only")
    rows = [r for r in section["rows"] if (r.get("e2e") or {}).get("status") in ("ok", "failed")]
    if not decode and not rows:
        return []
    lines = []
    if decode:
        lines.append(
            f"End to end over {decode.get('images', '?')} full-size Kermany JPEGs "
            f"(`{decode.get('folder')}`), `python -m runtime triage` with {decode.get('workers')} "
            f"decoding threads: decode + crop + resize alone runs at "
            f"**{_f(decode.get('images_per_second'), 1)} images/s** (the practical ceiling"
            f"{', reduced JPEG decode' if decode.get('reduced_decode') else ''}).")
        lines.append("")
    if rows:
        lines += ["| artifact | triage img/s | decode-only img/s | triage / decode-only "
                  "| triage peak RSS MiB | status |", "|---|---:|---:|---:|---:|---|"]
        for row in rows:
            e = row["e2e"]
            status = "ok" if e["status"] == "ok" else f"**failed**: {e.get('error')}"
            lines.append(f"| {_name_cell(row)} | {_f(e.get('images_per_second'), 1)} | "
                         f"{_f((decode or {}).get('images_per_second'), 1)} | "
                         f"{_f(e.get('vs_decode_only'), 2)} | {_f(e.get('peak_rss_mib'), 0)} | "
                         f"{status} |")
    return lines


def _published_lines(section: dict) -> list[str]:
    pub = section.get("published_reference")
    if not pub:
        return []
    onnx = [r for r in section["rows"] if r["status"] == "ok" and r["kind"] == "artifact"
            and str(r["name"]).endswith(".onnx") and r.get("latency_ms")]
    lines = [f"**Published reference, not our measurement** — {pub['source']}: {pub['model']}, "
             f"{pub['engine']}: batch 1 {pub['latency_b1_ms']} ms "
             f"({pub['throughput_b1_images_per_second']:.0f} img/s), batch 64 "
             f"{pub['throughput_b64_images_per_second']:,.0f} img/s; FP16 model "
             f"{pub['fp16_model_mb']} MB. {pub.get('caveat', '')}.", ""]
    if onnx:
        lines += ["| | batch-1 ms | b1 img/s | b64 img/s | size MB |", "|---|---:|---:|---:|---:|",
                  f"| UdaciMed published (not measured here) | {pub['latency_b1_ms']} | "
                  f"{pub['throughput_b1_images_per_second']:.0f} | "
                  f"{pub['throughput_b64_images_per_second']:,.0f} | {pub['fp16_model_mb']} (FP16) |"]
        for row in onnx:
            lines.append(f"| this run: `{row['name']}` ({row.get('precision')}) | "
                         f"{row['latency_ms']['p50']:.3f} | {_f(_tp(row, 1), 0)} | "
                         f"{_f(_tp(row, 64), 0)} | {_mb(row.get('size_bytes'))} |")
    return lines


def _section(section: dict) -> list[str]:
    label = section["label"]
    if section["status"] != "ok":
        return [f"## {label}: `{section['path']}`", "",
                f"**{section['status'].upper()}**: {section.get('error')}", ""]
    model = section.get("model") or {}
    q_rows = [r for r in section["rows"] if r.get("quality")]
    n = q_rows[0]["quality"]["n"] if q_rows else "?"
    lines = [f"## {label}: `{section['path']}` (target `{section['target']}`)", "",
             f"Model `{model.get('name')}` ({model.get('architecture')}, "
             f"{model.get('size')}×{model.get('size')} input), threshold "
             f"{section['threshold']:.4f}; quality on {test_split_words(section)} "
             f"(n={n}); "
             f"Δ against PyTorch FP32 in this run. Baseline checkpoint: "
             f"`{(section.get('checkpoint') or {}).get('path')}`.", ""]
    for note in section.get("notes") or []:
        lines += [f"> **Note:** {note}", ""]
    lines += _main_table(section) + [""]
    findings = _findings_table(section)
    if findings:
        lines += findings + [""]
    detail = _detail_table(section)
    if detail:
        lines += detail + [""]
    app_lines = _benchmark_app_lines(section)
    if app_lines:
        lines += app_lines + [""]
    e2e_lines = _e2e_lines(section)
    if e2e_lines:
        lines += e2e_lines + [""]
    published = _published_lines(section)
    if published:
        lines += published + [""]
    failed = [r for r in section["rows"] if r["status"] == "failed"]
    for row in failed:
        lines += [f"- `{row['name']}` failed: {row.get('error')}"]
    if failed:
        lines.append("")
    for kind, alt in (("speed", "latency and throughput"), ("quality", "sensitivity and specificity")):
        if (section.get("charts") or {}).get(kind):
            lines += [f"![{label} {alt}]({section['charts'][kind]})", ""]
    return lines


def side_by_side_table(report: dict) -> list[str]:
    """Per target, every model's bundle on one line each, against ITS OWN PyTorch FP32 baseline
    of the same run: the default artifact and the fastest one within the gate (batch-64
    throughput), with quality on the model's own test images. Empty when the report holds
    fewer than two models."""
    sections = [s for s in report["bundles"] if s["status"] == "ok"]
    if len({(s.get("model") or {}).get("name") for s in sections}) < 2:
        return []
    order = list(dict.fromkeys(s["target"] for s in sections))
    lines = ["| target | model (input) | test images (n) | PyTorch FP32 p50 ms / b64 img/s | "
             "default artifact | p50 ms (× PyTorch) | b64 img/s (× PyTorch) | best within the "
             "gate: b64 img/s (× PyTorch) | AUC | sensitivity | specificity | e2e img/s |",
             "|---|---|---|---:|---|---:|---:|---|---:|---:|---:|---:|"]
    for target in order:
        for section in (s for s in sections if s["target"] == target):
            rows = section["rows"]
            base = next((r for r in rows if r["kind"] == "baseline"), {})
            default = next((r for r in rows if r.get("is_default")), {})
            best = next((r for r in rows if r.get("best")), None)
            model = section.get("model") or {}
            q = default.get("quality") or {}
            vs = default.get("vs_pytorch") or {}
            data = section.get("test_data") or (
                "Kermany" if section.get("dataset") == "kermany" else "PneumoniaMNIST")
            e2e = default.get("e2e") or {}
            if best is not None:
                best_vs = (best.get("vs_pytorch") or {}).get("throughput_ratio") or {}
                best_cell = (f"`{best['name']}` {_f(_tp(best, 64), 0)} "
                             f"({_x(best_vs.get('64'))})")
            else:
                best_cell = "not timed here" if not section.get("timed", True) else "–"
            lines.append(
                f"| {target} | `{model.get('name')}` ({model.get('size')} px) | {data} "
                f"({q.get('n', '?')}) | {_f((base.get('latency_ms') or {}).get('p50'), 3)} / "
                f"{_f(_tp(base, 64), 0)} | `{default.get('name', '?')}` | "
                f"{_f((default.get('latency_ms') or {}).get('p50'), 3)} "
                f"({_x(vs.get('latency_p50_speedup'))}) | {_f(_tp(default, 64), 0)} "
                f"({_x((vs.get('throughput_ratio') or {}).get('64'))}) | {best_cell} | "
                f"{_f(q.get('auc'), 4)} | {_f(q.get('sensitivity'), 4)} | "
                f"{_f(q.get('specificity'), 4)} | "
                f"{_f(e2e.get('images_per_second'), 1) if e2e.get('status') == 'ok' else '–'} |")
    return lines


def _side_by_side_lines(report: dict) -> list[str]:
    table = side_by_side_table(report)
    if not table:
        return []
    return ["## The reference models side by side", "",
            "Each model's bundles against its own PyTorch FP32 model, measured in this run on the "
            "same machine; quality of the default artifact on the model's own test images at "
            "its bundle threshold (PneumoniaMNIST's test split is the same 624 Kermany test "
            "X-rays at 28 px, so the quality columns compare the two models on the same "
            "children). – = not measured (not timed on this host).", "", *table, ""]


def _summary_lines(report: dict) -> list[str]:
    """Per bundle, one bullet: best artifact vs PyTorch FP32, end to end vs decode-only, peak
    memory, sensitivity change per artifact (what a release note quotes)."""
    lines = ["## Summary", ""]
    for section in report["bundles"]:
        label = section["label"]
        if section["status"] != "ok":
            lines.append(f"- **{label}**: {section['status']}: {section.get('error')}")
            continue
        rows = section["rows"]
        base = rows[0] if rows and rows[0]["kind"] == "baseline" else None
        best = next((r for r in rows if r.get("best")), None)
        parts = []
        if not section.get("timed", True):
            parts.append("not timed on this host")
        elif best is not None:
            vs = best.get("vs_pytorch") or {}
            parts.append(f"best `{best['name']}`: {_x(vs.get('latency_p50_speedup'))} PyTorch FP32 "
                         f"at batch 1 (p50 {_f(best['latency_ms']['p50'], 3)} ms vs "
                         f"{_f(((base or {}).get('latency_ms') or {}).get('p50'), 3)} ms), "
                         f"{_x((vs.get('throughput_ratio') or {}).get('64'))} at batch 64 "
                         f"({_f(_tp(best, 64), 0)} vs {_f(_tp(base or {}, 64), 0)} img/s)")
            e, decode = best.get("e2e") or {}, section.get("decode_only") or {}
            if e.get("status") == "ok":
                parts.append(f"end to end {_f(e.get('images_per_second'), 1)} img/s vs decode-only "
                             f"{_f(decode.get('images_per_second'), 1)} img/s")
            parts.append(f"peak RSS {_f((best.get('memory') or {}).get('peak_rss_mib'), 0)} MiB vs "
                         f"PyTorch {_f(((base or {}).get('memory') or {}).get('peak_rss_mib'), 0)} MiB")
        else:
            parts.append("no artifact measured within the gate")
        if any((r.get("execution") or {}).get("cpu_fallback") for r in rows):
            parts.append("CPU fallback, not GPU numbers")
        sens = ", ".join(f"`{r['name']}` {_pp((r.get('quality_delta') or {}).get('sensitivity'))}"
                         for r in rows if r["kind"] == "artifact" and r["status"] != "failed")
        if sens:
            parts.append(f"sensitivity change (pp): {sens}")
        ratios = ", ".join(f"`{r['name']}` {_f(r['benchmark_app'].get('ratio'), 2)}"
                           for r in rows if r.get("benchmark_app"))
        if ratios:
            parts.append(f"kit / OpenVINO benchmark_app at batch 64: {ratios}")
        failed = [r["name"] for r in rows if r["status"] == "failed"]
        if failed:
            parts.append(f"**failed**: {', '.join(failed)}")
        lines.append(f"- **{label}**: " + "; ".join(parts) + ".")
    return lines + [""]


def render_markdown(report: dict) -> str:
    m = report["machine"]
    cpu = m["cpu"]
    settings = report["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    gpus = "; ".join(f"{g['name']} ({g['memory']}, driver {g['driver']})" for g in m["gpus"]) \
        or "none (no nvidia-smi)"
    load = m.get("load_average_start")
    busy = load and cpu.get("usable_cpus") and load[0] > cpu["usable_cpus"]
    kit = m.get("kit") or {}
    lines = [
        "# Benchmark report", "",
        f"Generated {report['created_at']} by `{report['command']}` in {report['duration_s']} s"
        f" (kit commit `{(kit.get('commit') or '?')[:12]}`{', with local changes' if kit.get('dirty') else ''}).",
        "",
        f"- **CPU**: {cpu['model']} ({cpu['architecture']}), {cpu['physical_cores']} physical cores"
        f" / {cpu['logical_cpus']} logical CPUs, {cpu['usable_cpus']} usable by this run; "
        f"{flag_summary(cpu)}; {cpu['memory_gib']} GiB RAM",
        f"- **GPU**: {gpus}; ONNX Runtime providers offered: "
        f"{', '.join(m.get('onnxruntime_providers_available') or []) or 'none'}",
        f"- **Libraries**: {versions}",
        f"- **Load average** (1/5/15 min) at start {load}, at end {m.get('load_average_end')}"
        + (" — **the machine was busy: timings are noisy**" if busy else ""),
        f"- **Settings**: {'quick (CI) mode; ' if settings['quick'] else ''}latency = batch 1, "
        f"{settings['warmup']} warm-up runs then {settings['repeats']} timed runs (p50/p95/p99); "
        f"throughput at batch {', '.join(map(str, settings['batch_sizes']))} over ≥ "
        f"{settings['min_seconds']} s and ≥ {settings['min_runs']} batches each, each engine driven "
        "the way it is fastest (OpenVINO: LATENCY hint + 1 sync request for latency, THROUGHPUT "
        "hint + async queue for throughput; ONNX Runtime: the best of the probed thread settings, "
        "see the details table); engine threads: "
        f"{settings['threads'] or 'each engine default'}; every artifact and the PyTorch baseline "
        "in its own fresh process (peak RSS = kernel high-water mark of that process).",
        "",
        "How to read: **× PyTorch p50** = PyTorch FP32 batch-1 p50 latency / the artifact's (above 1"
        " = faster); **× PyTorch b64** = the artifact's batch-64 images/s / PyTorch FP32's; both "
        "from the same run. Quality: AUC, sensitivity, specificity at the bundle threshold on the "
        "real test split, computed with `evaluation.metrics`; Δ in percentage points against the "
        "PyTorch FP32 model. **e2e** = `python -m runtime triage` over full-size JPEGs. "
        "**best** = fastest at batch 64 among artifacts whose sensitivity stays within the gate.",
        "",
    ]
    lines += _side_by_side_lines(report)
    lines += _summary_lines(report)
    for section in report["bundles"]:
        lines += _section(section)
    s = report["summary"]
    lines += ["---", "",
              f"{s['rows']} rows: {s['ok']} ok, {s['failed']} failed, {s['not_timed']} not timed; "
              f"{s['bundles_missing_or_failed']} bundle(s) missing or unreadable; "
              f"{s['e2e_failed']} end-to-end run(s) failed; "
              f"{s.get('benchmark_app_failed', 0)} benchmark_app run(s) failed. Keys of report.json: "
              "benchmarks/README.md.", ""]
    return "\n".join(lines)
