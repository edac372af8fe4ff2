"""The app: three screens (modes) switched with 1/2/3, state shared through the app."""

from __future__ import annotations

import os
from pathlib import Path

from textual.app import App
from textual.binding import Binding

DEFAULT_BUNDLE = Path("dist") / "cpu"  # as `python -m runtime triage`

from tui.bundle import BundleScreen
from tui.reports import ReportsScreen
from tui.sources import DEFAULT_REPORT, Choice, find_bundles
from tui.triage import TriageScreen


class CxrApp(App):
    """Chest X-ray triage for clinic staff, offline."""

    TITLE = "Chest X-ray triage"
    SUB_TITLE = "offline · flags X-rays a doctor should read first"
    MODES = {"triage": TriageScreen, "reports": ReportsScreen, "bundle": BundleScreen}
    BINDINGS = [
        Binding("1", "switch_mode('triage')", "Triage"),
        Binding("2", "switch_mode('reports')", "Reports"),
        Binding("3", "switch_mode('bundle')", "Bundle"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, folder: Path | None = None, bundles: list[Path] | None = None,
                 artifact: str | None = None, out: Path | None = None,
                 report: Path | None = None, batch: int = 32,
                 workers: int | None = None, search: list[Path] | None = None) -> None:
        super().__init__()
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
