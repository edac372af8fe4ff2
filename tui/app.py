"""The app: four screens (modes) switched with 1/2/3/4, state shared through the app; the review
screen opens on top of the triage screen (v), or at start with ``--review RESULTS``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

DEFAULT_BUNDLE = Path("dist") / "cpu"  # as `python -m runtime triage`

from runtime.running.results import ResultsError
from tui import fmt
from tui.bundle import BundleScreen
from tui.dialogs import HelpScreen
from tui.listener import ListenerScreen
from tui.reports import ReportsScreen
from tui.sources import DEFAULT_REPORT, Choice, find_bundles
from tui.triage.screen import TriageScreen


class CxrApp(App):
    """Chest X-ray triage for clinic staff, offline."""

    TITLE = "Chest X-ray triage"
    SUB_TITLE = "offline · flags X-rays a doctor should read first"
    MODES = {"triage": TriageScreen, "reports": ReportsScreen, "bundle": BundleScreen,
             "listener": ListenerScreen}
    BINDINGS = [
        Binding("1", "switch_mode('triage')", "Triage"),
        Binding("2", "switch_mode('reports')", "Reports"),
        Binding("3", "switch_mode('bundle')", "Bundle"),
        Binding("4", "switch_mode('listener')", "Listener"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, folder: Path | None = None, bundles: list[Path] | None = None,
                 artifact: str | None = None, out: Path | None = None,
                 report: Path | None = None, batch: int = 32,
                 workers: int | None = None, search: list[Path] | None = None,
                 review: Path | None = None, listener: Path | None = None) -> None:
        super().__init__()
        self.listener_folder = listener  # a DICOM listener's --out folder, shown by mode 4
        self.start_review = review  # a results folder to open for review at start
        self.reviewer = ""  # asked once per session, when the first review opens
        self.start_folder = folder
        self.out = out
        self.report_path = report if report is not None else DEFAULT_REPORT
        self.batch = batch
        self.decode_workers = workers or max(1, min(4, os.cpu_count() or 1))
        explicit = list(bundles or [])
        self.choices, self.bundle_problems = find_bundles(
            explicit, search if search is not None else [Path("dist")])
        self.choice_index = self._first_choice(explicit, artifact)

    def _first_choice(self, explicit: list[Path], artifact: str | None) -> int:
        """The --bundle's (else dist/cpu's, the runtime CLI's default, else the first bundle's)
        --artifact, else its default artifact."""
        if not self.choices:
            return 0
        found = {os.path.realpath(c.bundle) for c in self.choices}
        cpu = os.path.realpath(DEFAULT_BUNDLE)
        first = os.path.realpath(explicit[0]) if explicit else \
            (cpu if cpu in found else os.path.realpath(self.choices[0].bundle))
        mine = [i for i, c in enumerate(self.choices) if os.path.realpath(c.bundle) == first]
        if artifact:
            for i in mine:
                e = self.choices[i].entry
                if artifact in (e.path, e.format):
                    return i
        return mine[0] if mine else 0

    @property
    def choice(self) -> Choice | None:
        return self.choices[self.choice_index] if self.choices else None

    def on_mount(self) -> None:
        self.switch_mode("triage")
        if self.start_review is not None:
            self.open_review(self.start_review)

    def open_review(self, results: Path) -> bool:
        """Open the review of a results folder on top of the current screen."""
        from tui.review import ReviewScreen
        from tui.review_queue import open_review

        try:
            folder = open_review(results)
        except (ResultsError, OSError) as exc:
            self.notify(str(exc), title="Cannot open the review", severity="error", timeout=10)
            return False
        self.push_screen(ReviewScreen(folder))
        return True

    # -- help and command palette -------------------------------------------------------------

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        screen = self.screen
        from tui.xray import detect_graphics

        title = getattr(screen, "HELP_TITLE", type(screen).__name__.removesuffix("Screen"))
        groups = [(f"{title} screen",
                   [b for b in type(screen).BINDINGS if isinstance(b, Binding)]),
                  ("Everywhere", [b for b in self.BINDINGS if isinstance(b, Binding)]
                   + [Binding("ctrl+p", "command_palette",
                              "Command palette: every action by name")])]
        self.push_screen(HelpScreen("Keys", groups,
                                    f"X-rays are drawn with {detect_graphics()} in this terminal."))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help: every key", "the keys of this screen", self.action_help)
        for title, help_text, callback in getattr(screen, "palette_commands", lambda: [])():
            yield SystemCommand(title, help_text, callback)

    # -- DICOM Structured Reports (runtime.clinic.report_sr, optional) -------------------------------

    def write_sr(self, results: Path | None) -> None:
        """Write the SRs of a results folder into ``<results>-sr`` beside it, in a worker."""
        if results is None:
            self.notify("Run triage or open a results folder first.", severity="warning")
            return
        self.notify(f"Writing DICOM SR reports for {fmt.shown(results)}…")
        self._sr_worker(results)

    @work(thread=True, exclusive=True, group="sr", exit_on_error=False)
    def _sr_worker(self, results: Path) -> None:
        from tui.archive import write_sr

        ok, text = write_sr(results)
        self.call_from_thread(self.notify, text, title="DICOM SR",
                              severity="information" if ok else "warning", timeout=12)
