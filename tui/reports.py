"""Reports screen: one table per target from ``benchmarks/reports/report.json``.

Keys read (written by benchmarks.suite / benchmarks.report): ``created_at``, ``command``,
``settings.quick``, ``machine.cpu.model``, ``bundles[]`` with ``label``, ``path``, ``status``,
``error``, ``target``, ``notes``, ``threshold``, ``rows[]`` with ``name``, ``kind``
(baseline/artifact), ``status``, ``format``, ``precision``, ``size_bytes``, ``is_default``,
``best``, ``latency_ms.p50/p95``, ``throughput["64"].images_per_second``,
``memory.peak_rss_mib``, ``quality.auc/sensitivity/specificity`` (a model with several
findings: also ``quality.findings``, a second table per finding), ``quality_delta`` and
``verdict``, read through the typed report (runtime.contract.manifest.BenchmarkReport): an optional
value that is missing shows as a dash.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static

from runtime.contract.manifest import QualityNumbers, ReportRow
from tui import fmt
from tui.sources import REPORT_COMMAND, read_report

COLUMNS = ("artifact", "format", "p50 / p95 ms", "img/s b64", "peak MiB", "MB", "AUC (Δ)",
           "sens (Δ pp)", "spec (Δ pp)", "status")
FINDING_COLUMNS = ("artifact", "finding", "threshold", "AUC (Δ)", "sens (Δ pp)", "spec (Δ pp)")
STATUS = {"ok": "ok", "failed": "FAILED", "not-timed": "not timed"}


def _quality(row: ReportRow, key: str, quality: QualityNumbers | None = None,
             delta: dict | None = None) -> Text:
    """One quality figure with its change against the baseline: the row's first finding's, or
    ``quality`` and ``delta`` (one finding's)."""
    if quality is None:
        quality, delta = row.quality, row.quality_delta
    value = getattr(quality, key, None) if quality else None
    if value is None:
        return Text("–", justify="right")
    text = Text(f"{value:.3f}", justify="right")
    delta = (delta or {}).get(key)
    if row.kind != "baseline" and isinstance(delta, (int, float)):
        style = "red" if delta < -0.0005 else ("green" if delta > 0.0005 else "dim")
        text.append(f" {100 * delta:+.1f}" if key != "auc" else f" {delta:+.3f}", style=style)
    return text


def row_cells(row: ReportRow) -> list:
    name = "PyTorch FP32" if row.kind == "baseline" else row.name
    label = Text(("★ " if row.best else "  ") + name, style="bold green" if row.best else "")
    if row.is_default:
        label.append(" ◆", style="cyan")
    status = STATUS.get(row.status, row.status)
    latency = row.latency_ms or {}
    p50, p95 = latency.get("p50"), latency.get("p95")
    return [
        label,
        f"{row.format or '?'} {row.precision or ''}".strip(),
        Text("–" if p50 is None else f"{fmt.number(p50)} / {fmt.number(p95)}", justify="right"),
        Text(fmt.number(row.images_per_second(64), 0), justify="right"),
        Text(fmt.number((row.memory or {}).get("peak_rss_mib"), 0), justify="right"),
        Text(fmt.number(row.size_bytes / 1e6, 2) if row.size_bytes else "–", justify="right"),
        _quality(row, "auc"),
        _quality(row, "sensitivity"),
        _quality(row, "specificity"),
        Text(status, style="bold red" if status == "FAILED" else ("dim" if status != "ok" else "")),
    ]


def finding_cells(row: ReportRow) -> list[list]:
    """A row of a model with several findings: one line per finding (its threshold, AUC,
    sensitivity and specificity, one against the rest); none for a model with one finding."""
    findings = (row.quality.findings if row.quality else None) or {}
    deltas = (row.quality_delta or {}).get("findings") or {}
    name = "PyTorch FP32" if row.kind == "baseline" else row.name
    return [[name, finding, Text(fmt.number(q.threshold, 3), justify="right"),
             *(_quality(row, key, q, deltas.get(finding))
               for key in ("auc", "sensitivity", "specificity"))]
            for finding, q in findings.items()]


class ReportsScreen(Screen):
    """Which hardware target and artifact is fast and safe enough."""

    BINDINGS = [Binding("r", "reload", "Reload report")]

    DEFAULT_CSS = """
    ReportsScreen #report-head { height: auto; padding: 0 1; }
    ReportsScreen #report-body { height: 1fr; padding: 0 1; }
    ReportsScreen .section-title { text-style: bold; color: $accent; margin-top: 1; }
    ReportsScreen .section-notes { color: $warning; }
    ReportsScreen DataTable { height: auto; max-height: 12; }
    ReportsScreen #verdict { height: auto; padding: 0 1; border-top: solid $primary; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._loaded_stamp: tuple | None = None
        self._verdicts: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="report-head")
        yield VerticalScroll(id="report-body")
        yield Static("", id="verdict")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    def on_screen_resume(self) -> None:
        self.load()

    def action_reload(self) -> None:
        self.load(force=True)

    def _stamp(self, path: Path) -> tuple | None:
        try:
            info = os.stat(path)
            return (info.st_mtime_ns, info.st_size)
        except OSError:
            return None

    def load(self, force: bool = False) -> None:
        path: Path = self.app.report_path
        stamp = self._stamp(path)
        if not force and stamp is not None and stamp == self._loaded_stamp:
            return
        self._loaded_stamp = stamp
        body = self.query_one("#report-body", VerticalScroll)
        body.remove_children()
        self._verdicts.clear()
        head = self.query_one("#report-head", Static)
        verdict = self.query_one("#verdict", Static)
        report, problem = read_report(path)
        if report is None:
            head.update(Text.assemble(
                ("No benchmark report yet" if problem is None else "The benchmark report cannot "
                 "be read", "bold yellow"),
                f" ({fmt.shown(path)}{': ' + problem if problem else ''}).\n\n"
                "Make one (a few minutes per target) from the kit's folder with:\n\n    ",
                (REPORT_COMMAND, "bold"),
                "\n\nthen press r here to reload. Use --target gpu/arm/all for the other "
                "targets."))
            verdict.update("")
            return
        cpu = (report.machine.get("cpu") or {}).get("model") or "?"
        quick = report.settings.get("quick")
        head.update(Text.assemble(
            ("Benchmark report", "bold"), f" {fmt.shown(path)} · made {report.created_at or '?'}"
            f" on {cpu}",
            ("  (quick mode: rough numbers)" if quick else "", "yellow"), "\n",
            "★ recommended = fastest at batch 64 whose sensitivity stays within the gate; "
            "◆ = the bundle's default. "
            "Δ = change against PyTorch FP32 (the baseline row) measured in the same run; "
            "pp = percentage points."))
        widgets = []
        for index, section in enumerate(report.bundles):
            label = section.label or section.target or "?"
            title = f"{label}: {section.path or '?'}"
            if section.target:
                title += f" (target {section.target}"
                if section.threshold is not None:
                    title += f", threshold {section.threshold:.3f}"
                title += ")"
            widgets.append(Label(title, classes="section-title"))
            if section.status != "ok":
                widgets.append(Static(Text(f"{section.status.upper()}: {section.error}",
                                           style="bold red")))
                continue
            for note in section.notes:
                widgets.append(Static(f"• {note}", classes="section-notes"))
            table = DataTable(id=f"report-{index}", cursor_type="row", zebra_stripes=True)
            for column in COLUMNS:
                table.add_column(column)
            for number, row in enumerate(section.rows):
                key = f"{index}:{number}"
                table.add_row(*row_cells(row), key=key)
                self._verdicts[key] = (f"{row.name}: {row.verdict or ''}"
                                       + (f" — {row.error}" if row.error else ""))
            widgets.append(table)
            per_finding = [cells for row in section.rows for cells in finding_cells(row)]
            if per_finding:
                widgets.append(Static("Quality per finding, each one against the rest at the "
                                      "bundle's threshold for it:"))
                findings = DataTable(id=f"report-{index}-findings", cursor_type="row",
                                     zebra_stripes=True)
                for column in FINDING_COLUMNS:
                    findings.add_column(column)
                for cells in per_finding:
                    findings.add_row(*cells)
                widgets.append(findings)
        body.mount_all(widgets)
        verdict.update(Text("Tab into a table and move through it to read each artifact's verdict.", style="dim"))

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.data_table.has_focus and \
                event.row_key.value in self._verdicts:
            self.query_one("#verdict", Static).update(self._verdicts[event.row_key.value])

    def on_descendant_focus(self, event) -> None:
        table = event.widget
        if isinstance(table, DataTable) and table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            if key in self._verdicts:
                self.query_one("#verdict", Static).update(self._verdicts[key])
