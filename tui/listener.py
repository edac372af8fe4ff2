"""Listener screen: the queue of a DICOM listener's folder (``python -m runtime listen --out DIR``),
read from its files every few seconds, as ``python -m runtime listen --status DIR`` prints it.

The counts and the destinations come from :func:`runtime.pacs.status.queue_status` (files only:
results.csv, spool/, sr/, outbox/*/state.json); it is imported when a folder is shown, and
needs neither pynetdicom nor a running listener.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static

from tui import fmt

#: seconds between two readings of the folder
REFRESH_S = 3.0
START_COMMAND = "python -m runtime listen --bundle dist/cpu --out listener"
DESTINATION_COLUMNS = ("destination", "sent", "waiting", "failures in a row", "last failure",
                       "last try")
REFUSED_COLUMNS = ("destination", "why it was refused", "SR")
COUNTS = (("received", "received"), ("triaged", "triaged"),
          ("waiting_for_triage", "waiting for triage"), ("flagged", "flagged"),
          ("out_of_scope", "of which out of scope"), ("errors", "could not be triaged"),
          ("reports", "SRs written"))


def is_listener_folder(folder: Path) -> bool:
    """Whether ``folder`` is a listener's --out folder (it has a spool once the listener ran)."""
    from runtime.pacs.spool import spool_folder

    return spool_folder(folder).is_dir()


def counts_text(status: dict) -> Text:
    """The folder's counts, one per line, the ones that need a look in colour."""
    text = Text()
    for key, label in COUNTS:
        value = status[key]
        style = ""
        if value and key == "flagged":
            style = "bold yellow"
        elif value and key == "errors":
            style = "bold red"
        text.append(f"{label:>22}  ", style="dim")
        text.append(f"{value}\n", style=style)
    return text


def destination_cells(destination: dict) -> list:
    failing = bool(destination["last_error"] and destination["waiting"])
    return [destination["destination"],
            Text(str(destination["sent"]), justify="right"),
            Text(str(destination["waiting"]), justify="right",
                 style="bold yellow" if destination["waiting"] else ""),
            Text(str(destination["failures_in_a_row"]), justify="right",
                 style="bold red" if destination["failures_in_a_row"] else ""),
            Text(destination["last_error"] if failing else "–",
                 style="red" if failing else "dim"),
            destination["last_try"] or "–"]


class ListenerScreen(Screen):
    """What a DICOM listener received, triaged and sent back, and what failed."""

    HELP_TITLE = "Listener"
    BINDINGS = [Binding("o", "open_folder", "Open listener folder"),
                Binding("r", "refresh", "Refresh now"),
                Binding("v", "review", "Review flagged cases")]

    DEFAULT_CSS = """
    ListenerScreen #listener-head { height: auto; padding: 0 1; }
    ListenerScreen #listener-body { height: 1fr; padding: 0 1; }
    ListenerScreen .section-title { text-style: bold; color: $accent; margin-top: 1; }
    ListenerScreen DataTable { height: auto; max-height: 12; }
    ListenerScreen #listener-counts { height: auto; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.shown_status: dict | None = None  # the last reading (None: no folder, or unreadable)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="listener-head")
        with VerticalScroll(id="listener-body"):
            yield Label("Queue", classes="section-title")
            yield Static("", id="listener-counts")
            yield Label("Destinations (where the SRs go back)", classes="section-title")
            yield DataTable(id="destinations", cursor_type="row", zebra_stripes=True)
            yield Label("Failed sends: SRs a destination refused", classes="section-title")
            yield DataTable(id="refused", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        for table_id, columns in (("#destinations", DESTINATION_COLUMNS),
                                  ("#refused", REFUSED_COLUMNS)):
            table = self.query_one(table_id, DataTable)
            for column in columns:
                table.add_column(column, key=column)
        self.refresh_status()
        self.set_interval(REFRESH_S, self.refresh_status)

    def on_screen_resume(self) -> None:
        self.refresh_status()

    def action_refresh(self) -> None:
        self.refresh_status()

    def action_review(self) -> None:
        """Review the folder's flagged cases (a running listener sends each decision back to the
        study as an amended SR)."""
        if self.shown_status is None:
            self.notify("Open a listener folder first (o).", severity="warning")
            return
        self.app.open_review(self.app.listener_folder)

    def action_open_folder(self) -> None:
        from tui.dialogs import AskListenerFolder

        def opened(value: str | None) -> None:
            if value:
                self.app.listener_folder = Path(os.path.expanduser(value))
                self.refresh_status()

        folder = self.app.listener_folder
        self.app.push_screen(AskListenerFolder(str(folder) if folder else ""), opened)

    def refresh_status(self) -> None:
        """Read the folder again and show it (files only: cheap enough for the UI thread)."""
        folder: Path | None = self.app.listener_folder
        head = self.query_one("#listener-head", Static)
        if folder is None or not is_listener_folder(folder):
            self.shown_status = None
            head.update(self._how_to_start(folder))
            self._show({"received": 0, "triaged": 0, "waiting_for_triage": 0, "flagged": 0,
                        "out_of_scope": 0, "errors": 0, "reports": 0, "destinations": []})
            return
        from runtime.pacs.status import queue_status

        try:
            status = queue_status(folder)
        except (OSError, ValueError) as exc:  # results.csv mid-repair, a folder removed
            head.update(Text(f"Cannot read {fmt.shown(folder)}: {exc}", style="bold red"))
            return
        self.shown_status = status
        head.update(Text.assemble(
            ("Listener folder ", "bold"), (fmt.shown(folder), "bold"),
            f" · read every {REFRESH_S:.0f} s (r: now, o: another folder, v: review its flagged "
            "cases). The same as ",
            (f"python -m runtime listen --status {fmt.shown(folder)}", "bold"), "."))
        self._show(status)

    def _how_to_start(self, folder: Path | None) -> Text:
        problem = "" if folder is None else \
            f"{fmt.shown(folder)} is not a listener folder (no spool/ in it). "
        return Text.assemble(
            (problem, "bold red"),
            ("No listener folder open. " if folder is None else "", "bold yellow"),
            "A DICOM listener receives X-rays from the PACS, triages them and sends one SR per "
            "image back to the study. Start one (extra [dicom]) with:\n\n    ",
            (START_COMMAND, "bold"),
            "\n\nthen press o here and give its --out folder (or start the app with "
            "--listener FOLDER). docs/pacs.md says how to connect it to a PACS.")

    def _show(self, status: dict) -> None:
        self.query_one("#listener-counts", Static).update(counts_text(status))
        destinations = self.query_one("#destinations", DataTable)
        refused = self.query_one("#refused", DataTable)
        destinations.clear()
        refused.clear()
        for d in status["destinations"]:
            destinations.add_row(*destination_cells(d))
            for name, why in sorted(d["refused"].items()):
                refused.add_row(d["destination"], Text(why, style="red"), name)
        if not status["destinations"] and self.shown_status is not None:
            destinations.add_row("none (no --send-to or --stow): the SRs stay in sr/",
                                 "", "", "", "", "")

    def palette_commands(self) -> list[tuple[str, str, object]]:
        """What the command palette offers on this screen."""
        return [("Open a listener folder (o)", "the --out folder of python -m runtime listen",
                 self.action_open_folder),
                ("Refresh the listener queue (r)", "read the folder again now",
                 self.action_refresh),
                ("Review the listener's flagged cases (v)",
                 "decisions go back to the study as amended SRs", self.action_review)]
