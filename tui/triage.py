"""Triage screen: folder -> model -> run -> flagged cases first, errors apart, preview, summary.

The run happens in a thread worker that calls :func:`runtime.triage.triage`; its progress
callback posts messages back and raises KeyboardInterrupt when Cancel was pressed, which the
runtime turns into a clean stop (rows so far kept, summary.json marked interrupted).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, DataTable, DirectoryTree, Footer, Header, Input, Label, \
    ProgressBar, Select, Static
from textual.worker import get_current_worker

from runtime.results import RESULTS, SUMMARY, ResultsError, read_rows
from tui import fmt
from tui.sources import BUILD_COMMAND, Choice, default_out
from tui.widgets import FolderTree
from tui.xray import XrayView

LIVE_ROWS_EVERY_S = 1.0  # how often the worker re-reads results.csv to show rows during a run
PREVIEW_SIDE = 384  # shorter side a large JPEG is decoded to for the preview (DCT scaling)


# ------------------------------------------------------------------------------------------
# messages from the workers


@dataclass
class FolderCounted(Message):
    folder: Path
    images: int


@dataclass
class TriagePhase(Message):
    text: str


@dataclass
class TriageStarted(Message):
    total: int
    skipped: int
    described: dict


@dataclass
class TriageProgress(Message):
    done: int
    failed: int
    rate: float
    rows: list[dict] | None = None


@dataclass
class TriageFinished(Message):
    out: Path
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    interrupted: bool = False
    error: str | None = None


@dataclass
class PreviewReady(Message):
    path: Path
    image: object | None  # a Pillow image
    error: str | None = None


# ------------------------------------------------------------------------------------------


def _flagged(row: dict) -> bool:
    return row.get("flagged") == "1"


def _out_of_scope(row: dict) -> bool:
    return row.get("scope") == "out"


def _probability(row: dict) -> float:
    try:
        return float(row.get("probability") or "nan")
    except ValueError:
        return float("nan")


def sort_rows(rows: list[dict]) -> list[dict]:
    """Flagged first (out-of-scope rows are flagged: a person reads them), then by probability
    (highest first), then by path."""
    def key(row: dict):
        p = _probability(row)
        return (not _flagged(row), -(p if p == p else -1.0), row.get("path", ""))

    return sorted(rows, key=key)


class TriageScreen(Screen):
    """Pick a folder and a model, run, read the flagged cases."""

    BINDINGS = [
        Binding("r", "run", "Run triage"),
        Binding("c", "cancel", "Cancel run"),
        Binding("f", "focus_folder", "Folder"),
        Binding("m", "focus_model", "Model"),
        Binding("t", "focus_results", "Results"),
        Binding("s", "toggle_setup", "Hide/show setup"),
        Binding("v", "review", "Review", tooltip="review every flagged and out-of-scope case of "
                "these results, one at a time (decisions go to review.csv)"),
        Binding("o", "open_results", "Open results", tooltip="open the results folder of an "
                "earlier run for review"),
        Binding("x", "write_sr", "DICOM SR", tooltip="write DICOM Structured Reports for these "
                "results into a folder beside them"),
    ]
    # below 110 columns the preview column gives way; hiding the setup column (s) brings it back
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    DEFAULT_CSS = """
    TriageScreen #main { height: 1fr; }
    TriageScreen #left { width: 1fr; min-width: 40; max-width: 48; padding: 0 1; }
    TriageScreen #middle { width: 2fr; padding: 0 1; }
    TriageScreen.-narrow #left { width: 32; min-width: 32; }
    TriageScreen.-narrow #right { display: none; }
    TriageScreen.-setup-hidden #left { display: none; }
    TriageScreen.-narrow.-setup-hidden #right { display: block; }
    TriageScreen #right { width: 1fr; min-width: 24; max-width: 52; padding: 0 1; }
    TriageScreen .step { text-style: bold; color: $accent; margin-top: 1; }
    TriageScreen .first { margin-top: 0; }
    TriageScreen #folder-path { margin: 0; }
    TriageScreen #tree { height: 1fr; min-height: 5; }
    TriageScreen #folder-info, TriageScreen #model-info { color: $text-muted; }
    TriageScreen #buttons { height: auto; margin-top: 1; }
    TriageScreen #buttons Button { margin-right: 1; min-width: 12; }
    TriageScreen #status { height: auto; }
    TriageScreen #progress { margin-bottom: 1; }
    TriageScreen #results { height: 1fr; }
    TriageScreen #errors { height: auto; max-height: 7; }
    TriageScreen #summary { height: auto; margin-top: 1; }
    TriageScreen #where { height: auto; color: $text-muted; }
    TriageScreen #preview-info { height: auto; }
    TriageScreen #preview Middle { align-vertical: top; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.folder: Path | None = None
        self.running = False
        self.finished_runs = 0  # how many runs have reported back (tests wait on it)
        self._cancel = threading.Event()
        self._auto_out: str | None = None
        self._rows: dict[str, dict] = {}
        self._started_at = 0.0
        self._preview_path: Path | None = None
        self.preview_shown: Path | None = None  # the file the preview shows now (tests wait on it)
        self._last_out: Path | None = None

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        app = self.app
        start = app.start_folder if app.start_folder is not None else Path.cwd()
        yield Header(show_clock=False)
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Label("1 · Folder of X-rays", classes="step first")
                yield Input(placeholder="type a folder path, Enter", id="folder-path")
                yield FolderTree(start, id="tree")
                yield Static("Choose a folder: arrows, then Enter.", id="folder-info")
                yield Label("2 · Model", classes="step")
                if app.choices:
                    yield Select([(c.label(), i) for i, c in enumerate(app.choices)],
                                 allow_blank=False, value=app.choice_index, id="model")
                else:
                    yield Select([], prompt="no bundle found", id="model")
                yield Static("", id="model-info")
                yield Label("3 · Results folder", classes="step")
                yield Input(id="out", placeholder="results/<folder>-<model>")
                with Horizontal(id="buttons"):
                    yield Button("Run triage (r)", id="run", variant="primary")
                    yield Button("Cancel (c)", id="cancel", variant="error", disabled=True)
            with Vertical(id="middle"):
                yield Static("Pick a folder and a model, then press r.", id="status")
                yield ProgressBar(id="progress", show_eta=False)
                yield Label("Results: flagged cases first (⚑ = needs a doctor first)",
                            classes="step first")
                yield DataTable(id="results", cursor_type="row", zebra_stripes=True)
                yield Label("Files that could not be read: none", id="errors-title",
                            classes="step")
                yield DataTable(id="errors", cursor_type="row")
                yield Static("", id="summary")
                yield Static("", id="where")
            with Vertical(id="right"):
                yield Label("Preview", classes="step first")
                yield Static("", id="preview-info")
                yield XrayView(id="preview")
        yield Footer()

    def on_mount(self) -> None:
        results = self.query_one("#results", DataTable)
        results.add_column("", key="flag", width=2)
        results.add_column("probability", key="probability")
        results.add_column("file", key="path")
        errors = self.query_one("#errors", DataTable)
        errors.add_column("file", key="path")
        errors.add_column("why it could not be read", key="error")
        self._fill_models()
        self.query_one("#progress", ProgressBar).display = False  # shown once a run starts
        app = self.app
        if app.out is not None:
            self.query_one("#out", Input).value = str(app.out)
        if app.start_folder is not None:
            self.set_folder(app.start_folder)
        self.query_one("#tree").focus()

    def _fill_models(self) -> None:
        app = self.app
        choices: list[Choice] = app.choices
        if not choices:
            problems = "; ".join(app.bundle_problems)
            self.query_one("#model-info", Static).update(
                Text.assemble(("No bundle found in dist/. ", "bold red"),
                              f"Build one with `{BUILD_COMMAND}` or start with --bundle PATH."
                              + (f" ({problems})" if problems else "")))
            return
        self._show_model(choices[app.choice_index])

    # -- folder ------------------------------------------------------------------------------

    def set_folder(self, folder: Path) -> None:
        self.folder = folder
        self.query_one("#folder-path", Input).value = fmt.shown(folder)
        self.query_one("#folder-info", Static).update(f"{fmt.shown(folder)}: counting images…")
        self._update_out()
        self.count_images(folder)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, group="count")
    def count_images(self, folder: Path) -> None:
        from runtime.triage import walk

        worker = get_current_worker()
        n = 0
        for _ in walk(folder):
            n += 1
            if worker.is_cancelled:
                return
        self.post_message(FolderCounted(folder, n))

    @on(FolderCounted)
    def _counted(self, message: FolderCounted) -> None:
        if message.folder != self.folder:
            return
        if message.images:
            text = f"{fmt.shown(message.folder)}: {message.images} images (subfolders included)"
        else:
            text = (f"{fmt.shown(message.folder)}: no images found "
                    "(JPEG, PNG, BMP, TIFF or DICOM, subfolders included)")
        self.query_one("#folder-info", Static).update(text)

    @on(DirectoryTree.DirectorySelected)
    def _tree_selected(self, event: DirectoryTree.DirectorySelected) -> None:
        event.stop()
        self.set_folder(Path(event.path))

    @on(Input.Submitted, "#folder-path")
    def _path_typed(self, event: Input.Submitted) -> None:
        path = Path(os.path.expanduser(event.value.strip() or "."))
        if not path.is_dir():
            self.query_one("#folder-info", Static).update(
                Text(f"{path} is not a folder", style="bold red"))
            return
        self.query_one("#tree", FolderTree).path = path
        self.set_folder(path)
        self.query_one("#tree").focus()

    # -- model --------------------------------------------------------------------------------

    @on(Select.Changed, "#model")
    def _model_changed(self, event: Select.Changed) -> None:
        if not isinstance(event.value, int):
            return
        self.app.choice_index = event.value
        self._show_model(self.app.choices[event.value])
        self._update_out()

    def _show_model(self, choice: Choice) -> None:
        test = choice.test_metrics
        parts = [f"{fmt.shown(choice.bundle)} · {choice.artifact}"
                 + (" (bundle default)" if choice.is_default else ""),
                 f"target {choice.target}, precision {choice.entry.precision}",
                 f"test sensitivity {fmt.number(test.sensitivity)}, "
                 f"specificity {fmt.number(test.specificity)}"
                 + (" (provisional)" if choice.entry.gate.status == "provisional" else ""),
                 f"flags at probability ≥ {fmt.number(choice.threshold)} "
                 + (f"(site calibration \"{choice.site_in_force.site}\"; " if choice.site_in_force
                    else "(") + "details: 3)"]
        self.query_one("#model-info", Static).update("\n".join(parts))

    def _update_out(self) -> None:
        out = self.query_one("#out", Input)
        if self.folder is None or (out.value and out.value != self._auto_out):
            return  # the user typed a folder (or --out was given): keep it
        value = str(default_out(self.folder, self.app.choice))
        self._auto_out = value
        out.value = value

    # -- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "run":
            return None if self.running else True
        if action == "cancel":
            return True if self.running else None
        if action in ("review", "write_sr"):
            return None if self.running else True
        return True

    def results_folder(self) -> Path | None:
        """The results of the last run, else the results folder typed in step 3 when it holds
        results."""
        if self._last_out is not None:
            return self._last_out
        typed = self.query_one("#out", Input).value.strip()
        if typed and (Path(os.path.expanduser(typed)) / RESULTS).is_file():
            return Path(os.path.expanduser(typed))
        return None

    def action_review(self) -> None:
        if self.running:
            return
        results = self.results_folder()
        if results is None:
            self.action_open_results()
            return
        self.app.open_review(results)

    def action_open_results(self) -> None:
        from tui.dialogs import AskResultsFolder

        typed = self.query_one("#out", Input).value.strip()

        def opened(value: str | None) -> None:
            if value:
                self.app.open_review(Path(os.path.expanduser(value)))

        self.app.push_screen(AskResultsFolder(typed), opened)

    def action_write_sr(self) -> None:
        if not self.running:
            self.app.write_sr(self.results_folder())

    def palette_commands(self) -> list[tuple[str, str, object]]:
        """What the command palette offers on this screen."""
        return [("Run triage (r)", "score every X-ray of the folder", self.action_run),
                ("Review flagged cases (v)", "one at a time; decisions go to review.csv",
                 self.action_review),
                ("Open a results folder for review (o)", "resumes where the reviewer stopped",
                 self.action_open_results),
                ("Write DICOM SR reports (x)", "one Structured Report per DICOM image",
                 self.action_write_sr)]

    def action_toggle_setup(self) -> None:
        self.toggle_class("-setup-hidden")
        if self.has_class("-setup-hidden") and self.focused is not None and \
                self.query_one("#left") in self.focused.ancestors:
            self.query_one("#results").focus()

    def action_focus_folder(self) -> None:
        self.remove_class("-setup-hidden")
        self.query_one("#tree").focus()

    def action_focus_model(self) -> None:
        self.remove_class("-setup-hidden")
        self.query_one("#model").focus()

    def action_focus_results(self) -> None:
        self.query_one("#results").focus()

    @on(Button.Pressed, "#run")
    def _run_pressed(self) -> None:
        self.action_run()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_run(self) -> None:
        if self.running:
            return
        status = self.query_one("#status", Static)
        choice = self.app.choice
        if self.folder is None:
            status.update(Text("Choose a folder first (step 1): arrows, then Enter.", "bold red"))
            self.query_one("#tree").focus()
            return
        if choice is None:
            status.update(Text(f"No model to run: build a bundle with `{BUILD_COMMAND}`.",
                               "bold red"))
            return
        out_text = self.query_one("#out", Input).value.strip()
        out = Path(os.path.expanduser(out_text)) if out_text else default_out(self.folder, choice)
        self._rows.clear()
        self._fill_tables([])
        self.query_one("#summary", Static).update("")
        self.query_one("#where", Static).update("")
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self._cancel = threading.Event()
        self.running = True
        self._set_buttons()
        status.update(f"Loading {choice.artifact} (checking its sha256)…")
        self._last_out = out
        self.triage_worker(self.folder, choice.bundle, choice.artifact, out, self._cancel)

    def action_cancel(self) -> None:
        if not self.running:
            return
        self._cancel.set()
        self.query_one("#status", Static).update(
            "Cancelling… every image done so far is kept in results.csv.")

    def _set_buttons(self) -> None:
        self.query_one("#run", Button).disabled = self.running
        self.query_one("#cancel", Button).disabled = not self.running
        self.refresh_bindings()

    # -- the worker ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="triage", exit_on_error=False)
    def triage_worker(self, folder: Path, bundle_path: Path, artifact: str, out: Path,
                      cancel: threading.Event) -> None:
        from runtime.bundle import BundleError, load_bundle
        from runtime.selfcheck import SelfCheckError
        from runtime.triage import triage

        post = self.post_message
        try:
            bundle = load_bundle(bundle_path, artifact)
        except BundleError as exc:
            post(TriageFinished(out, error=f"The model cannot be used: {exc}"))
            return
        except Exception as exc:  # an engine that fails to open: say so, keep the app alive
            post(TriageFinished(out, error=f"The model failed to load: {type(exc).__name__}: {exc}"))
            return
        described = bundle.describe()
        csv_path = out / RESULTS
        state = {"start": time.perf_counter(), "last_rows": 0.0}

        def on_total(total: int) -> None:
            state["start"] = time.perf_counter()
            post(TriageStarted(total, 0, described))

        def progress(done: int, failed: int) -> None:
            if cancel.is_set():
                raise KeyboardInterrupt  # the runtime stops cleanly and keeps what is done
            now = time.perf_counter()
            elapsed = now - state["start"]
            rows = None
            if now - state["last_rows"] >= LIVE_ROWS_EVERY_S:
                state["last_rows"] = now
                try:
                    rows = read_rows(csv_path)
                except (OSError, ResultsError):
                    rows = None
            post(TriageProgress(done, failed, done / elapsed if elapsed > 0 else 0.0, rows))

        interrupted = False
        try:
            triage(folder, bundle, out, batch=self.app.batch, workers=self.app.decode_workers,
                   progress=progress, on_total=on_total)
        except KeyboardInterrupt:
            interrupted = True
        except (ResultsError, SelfCheckError, FileNotFoundError, OSError) as exc:
            post(TriageFinished(out, error=str(exc)))
            return
        except Exception as exc:
            post(TriageFinished(out, error=f"Triage failed: {type(exc).__name__}: {exc}"))
            return
        try:
            rows = read_rows(csv_path)
            summary = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError, ResultsError) as exc:
            post(TriageFinished(out, error=f"Results were written but cannot be read back: {exc}"))
            return
        post(TriageFinished(out, rows, summary, interrupted))

    @on(TriageStarted)
    def _started(self, message: TriageStarted) -> None:
        self._started_at = time.monotonic()
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=max(1, message.total), progress=0)
        d = message.described
        device = d.get("device", "cpu")
        self.query_one("#status", Static).update(
            f"Scoring {message.total} images with {d.get('artifact')} on {device}…")

    @on(TriageProgress)
    def _progress(self, message: TriageProgress) -> None:
        self.query_one("#progress", ProgressBar).update(progress=message.done)
        errors = f", {message.failed} unreadable" if message.failed else ""
        self.query_one("#status", Static).update(
            f"{message.done} done{errors} · {fmt.rate(message.rate)}"
            + (" · cancelling…" if self._cancel.is_set() else ""))
        if message.rows is not None:
            self._fill_tables(message.rows)

    @on(TriageFinished)
    def _finished(self, message: TriageFinished) -> None:
        self.running = False
        self.finished_runs += 1
        self._set_buttons()
        status = self.query_one("#status", Static)
        if message.error:
            status.update(Text(message.error, style="bold red"))
            return
        self._fill_tables(message.rows)
        bar = self.query_one("#progress", ProgressBar)
        counts = message.summary.get("counts") or {}
        run = message.summary.get("this_run") or {}
        if bar.total is None:
            bar.update(total=1, progress=1)
        elif not message.interrupted:
            bar.update(progress=bar.total)
        total, flagged, errors = (counts.get("total", 0), counts.get("flagged", 0),
                                  counts.get("errors", 0))
        outside = counts.get("out_of_scope", 0)
        if message.interrupted:
            status.update(Text(f"Cancelled: {run.get('processed', 0)} of "
                               f"{run.get('found', 0) - run.get('skipped_already_done', 0)} "
                               "images scored in this run; all of them are kept. Press r to "
                               "resume the rest.", style="bold yellow"))
        elif run.get("processed", 0) == 0 and run.get("skipped_already_done"):
            status.update(f"All {run['skipped_already_done']} images were already done in this "
                          "results folder (shown below). Choose another results folder to "
                          "score them again.")
        else:
            status.update(f"Done: {run.get('processed', 0)} images scored"
                          + (f" ({run['skipped_already_done']} kept from an earlier run)"
                             if run.get("skipped_already_done") else "") + ".")
        line = Text.assemble(
            (f"{total} images", "bold"), " · ",
            (f"{flagged} flagged for a doctor", "bold red" if flagged else "bold"),
            (f" ({outside} out of the model's scope)" if outside else "", "bold red"), " · ",
            (f"{errors} could not be read", "bold yellow" if errors else ""), " · ",
            (f"{fmt.seconds(run.get('seconds'))} ({fmt.rate(run.get('images_per_second'))})"
             if run.get("processed") else "nothing new to score"),
            (" · CANCELLED" if message.interrupted else "", "bold yellow"))
        self.query_one("#summary", Static).update(line)
        notes = message.summary.get("notes") or []
        self.query_one("#where", Static).update(Text.assemble(
            f"Saved: {fmt.shown(message.out / RESULTS)} (and {SUMMARY}) · opens in any "
            "spreadsheet · v: review the flagged cases",
            *((f"\nNote: {note}", "yellow") for note in notes)))
        results = self.query_one("#results", DataTable)
        if results.row_count:  # ready to read: cursor on the most urgent case, with its preview
            results.focus()
            results.move_cursor(row=0)
            self.preview(results.coordinate_to_cell_key(results.cursor_coordinate).row_key.value)
        if notes:
            self.notify("\n".join(notes), title="Note", severity="warning", timeout=10)

    # -- tables and preview -------------------------------------------------------------------

    def _fill_tables(self, rows: list[dict]) -> None:
        results = self.query_one("#results", DataTable)
        errors = self.query_one("#errors", DataTable)
        keep = None
        if results.row_count and results.cursor_row is not None:
            try:
                keep = results.coordinate_to_cell_key(results.cursor_coordinate).row_key.value
            except Exception:
                keep = None
        self._rows = {row["path"]: row for row in rows}
        ok = sort_rows([r for r in rows if r.get("status") == "ok"])
        bad = sorted((r for r in rows if r.get("status") != "ok"), key=lambda r: r["path"])
        results.clear()
        for row in ok:
            flagged = _flagged(row)
            style = "bold red" if flagged else ""
            results.add_row(Text("⚑" if flagged else "", style=style),
                            Text("out" if _out_of_scope(row) else f"{_probability(row):.3f}",
                                 style=style, justify="right"),
                            Text(row["path"], style="bold" if flagged else ""),
                            key=row["path"])
        errors.clear()
        for row in bad:
            errors.add_row(row["path"], row.get("error", ""), key=row["path"])
        self.query_one("#errors-title", Label).update(
            f"Files that could not be read: {len(bad)}" if bad else
            "Files that could not be read: none")
        if keep is not None and keep in self._rows and self._rows[keep].get("status") == "ok":
            results.move_cursor(row=results.get_row_index(keep))

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or not event.data_table.has_focus:
            return  # rows being added highlight a row too: follow the user's cursor only
        self.preview(event.row_key.value)

    def preview(self, key: str) -> None:
        """Show the file of the row ``key`` (decoded and scaled in a worker)."""
        if key not in self._rows or self.folder is None:
            return
        row = self._rows[key]
        path = self.folder / row["path"]
        self._preview_path = path
        info = self.query_one("#preview-info", Static)
        if row.get("status") == "ok" and _out_of_scope(row):
            info.update(Text.assemble(
                (row["path"], "bold"), "\n", ("⚑ OUT OF SCOPE: ", "bold red"),
                (row.get("scope_reason", ""), "bold red"),
                f"\n(model probability {_probability(row):.3f}, not to be relied on)"))
        elif row.get("status") == "ok":
            flagged = _flagged(row)
            info.update(Text.assemble(
                (row["path"], "bold"), "\n",
                (f"probability {_probability(row):.3f} · {row.get('prediction', '')}",
                 "bold red" if flagged else ""),
                ("\n⚑ flagged: a doctor should read this one first" if flagged else
                 "\nbelow the threshold: not flagged")))
        else:
            info.update(Text.assemble((row["path"], "bold"), "\n",
                                      (row.get("error", ""), "yellow")))
        self.query_one("#preview", XrayView).show_message("loading…")
        self.load_preview(path)

    @work(thread=True, exclusive=True, group="preview")
    def load_preview(self, path: Path) -> None:
        from PIL import Image as PILImage

        from runtime.decode import DecodeError, decode_file

        worker = get_current_worker()
        try:
            decoded = decode_file(path, reduce_to=PREVIEW_SIDE)
        except DecodeError as exc:
            self.post_message(PreviewReady(path, None, str(exc)))
            return
        except OSError as exc:
            self.post_message(PreviewReady(path, None, f"cannot read the file: {exc}"))
            return
        if worker.is_cancelled:
            return
        image = PILImage.fromarray(decoded.pixels)
        image.thumbnail((2 * PREVIEW_SIDE, 2 * PREVIEW_SIDE), PILImage.Resampling.LANCZOS)
        self.post_message(PreviewReady(path, image))

    @on(PreviewReady)
    def _preview_ready(self, message: PreviewReady) -> None:
        if message.path != self._preview_path:
            return
        preview = self.query_one("#preview", XrayView)
        if message.image is None:
            preview.show_message(f"cannot show this file: {message.error}")
        else:
            preview.show(message.image)
        self.preview_shown = message.path

    def on_unmount(self) -> None:
        self._cancel.set()  # leaving the app: stop a run cleanly, keeping what is done
