"""The triage screen: folder -> model -> run -> flagged cases first, errors apart, preview, summary.

It composes its parts (setup column, run status, results, preview) and carries the messages
between them: the setup panel's buttons and folder, the run's messages (:mod:`tui.triage.run`),
the row chosen in the results; the parts never reach into each other.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header

from runtime.running.results import RESULTS
from tui.sources import BUILD_COMMAND
from tui.triage.preview import PreviewPanel
from tui.triage.run import (
    RunRequest,
    TriageFinished,
    TriageProgress,
    TriageRows,
    TriageStarted,
    run_triage,
)
from tui.triage.setup import SetupPanel
from tui.triage.status import RunStatus, RunSummary
from tui.triage.table import ResultsTable


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
    """

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self.finished_runs = 0  # how many runs have reported back (tests wait on it)
        self._cancel = threading.Event()
        self._run_folder: Path | None = None  # the input folder of the rows shown
        self._last_out: Path | None = None

    def compose(self) -> ComposeResult:
        start = self.app.start_folder if self.app.start_folder is not None else Path.cwd()
        yield Header(show_clock=False)
        with Horizontal(id="main"):
            yield SetupPanel(start, id="left")
            with Vertical(id="middle"):
                yield RunStatus()
                yield ResultsTable()
                yield RunSummary()
            yield PreviewPanel(id="right")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(SetupPanel).focus_tree()

    @property
    def folder(self) -> Path | None:
        """The folder of X-rays chosen in the setup column."""
        return self.query_one(SetupPanel).folder

    @property
    def preview_shown(self) -> Path | None:
        """The file the preview shows now (tests wait on it)."""
        return self.query_one(PreviewPanel).shown

    # -- actions ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "cancel":
            return True if self.running else None
        if action in ("run", "review", "write_sr"):
            return None if self.running else True
        return True

    def results_folder(self) -> Path | None:
        """The results of the last run, else the results folder typed in step 3 when it holds
        results."""
        if self._last_out is not None:
            return self._last_out
        typed = self.query_one(SetupPanel).typed_out()
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

        def opened(value: str | None) -> None:
            if value:
                self.app.open_review(Path(os.path.expanduser(value)))

        self.app.push_screen(AskResultsFolder(self.query_one(SetupPanel).typed_out()), opened)

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
        self.query_one(SetupPanel).focus_tree()

    def action_focus_model(self) -> None:
        self.remove_class("-setup-hidden")
        self.query_one(SetupPanel).focus_model()

    def action_focus_results(self) -> None:
        self.query_one("#results").focus()

    def action_run(self) -> None:
        if self.running:
            return
        setup, status = self.query_one(SetupPanel), self.query_one(RunStatus)
        choice = self.app.choice
        if setup.folder is None:
            status.say(Text("Choose a folder first (step 1): arrows, then Enter.", "bold red"))
            setup.focus_tree()
            return
        if choice is None:
            status.say(Text(f"No model to run: build a bundle with `{BUILD_COMMAND}`.",
                            "bold red"))
            return
        out = setup.out_folder(setup.folder, choice)
        self.query_one(ResultsTable).clear()
        self.query_one(RunSummary).clear()
        status.loading(choice.artifact)
        self._cancel = threading.Event()
        self._set_running(True)
        self._run_folder, self._last_out = setup.folder, out
        self.triage_worker(RunRequest(setup.folder, choice.bundle, choice.artifact, out,
                                      self.app.batch, self.app.decode_workers), self._cancel)

    def action_cancel(self) -> None:
        if not self.running:
            return
        self._cancel.set()
        self.query_one(RunStatus).cancelling()

    def _set_running(self, running: bool) -> None:
        self.running = running
        self.query_one(SetupPanel).set_running(running)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, group="triage", exit_on_error=False)
    def triage_worker(self, request: RunRequest, cancel: threading.Event) -> None:
        run_triage(request, self.post_message, cancel)

    # -- messages from the parts ----------------------------------------------------------------

    @on(SetupPanel.FolderChosen)
    def _folder_chosen(self) -> None:
        self.refresh_bindings()

    @on(SetupPanel.RunPressed)
    def _run_pressed(self) -> None:
        self.action_run()

    @on(SetupPanel.CancelPressed)
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    @on(ResultsTable.RowChosen)
    def _row_chosen(self, message: ResultsTable.RowChosen) -> None:
        if self._run_folder is not None:
            self.query_one(PreviewPanel).show(self._run_folder, message.row)

    # -- messages from the run ------------------------------------------------------------------

    @on(TriageStarted)
    def _started(self, message: TriageStarted) -> None:
        self.query_one(RunStatus).started(message.total, message.described)
        self.query_one(ResultsTable).set_findings(list(message.described.get("thresholds", {})))
        self.query_one(ResultsTable).add(message.earlier)

    @on(TriageRows)
    def _rows_written(self, message: TriageRows) -> None:
        self.query_one(ResultsTable).add(message.rows)

    @on(TriageProgress)
    def _progress(self, message: TriageProgress) -> None:
        self.query_one(RunStatus).progress(message.done, message.failed, message.rate,
                                           cancelling=self._cancel.is_set())

    @on(TriageFinished)
    def _finished(self, message: TriageFinished) -> None:
        self._set_running(False)
        self.finished_runs += 1
        if message.error:
            self.query_one(RunStatus).failed(message.error)
            return
        self.query_one(RunStatus).finished(message.summary, message.interrupted)
        self.query_one(RunSummary).show(message.out, message.summary, message.interrupted)
        self.query_one(ResultsTable).open_first()  # the most urgent case, with its preview
        notes = message.summary.get("notes") or []
        if notes:
            self.notify("\n".join(notes), title="Note", severity="warning", timeout=10)

    def on_unmount(self) -> None:
        self._cancel.set()  # leaving the app: stop a run cleanly, keeping what is done
