"""Small modal screens: the reviewer's name, a free-text note, a results folder or a listener's
folder to open, help."""

from __future__ import annotations

import os
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from runtime.running.results import ResultsError

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{ width: 72; height: auto; max-height: 90%; border: thick $accent;
    background: $surface; padding: 1 2; }}
{name} .title {{ text-style: bold; margin-bottom: 1; }}
{name} .hint {{ color: $text-muted; margin-top: 1; }}
{name} .error {{ color: $error; margin-top: 1; }}
"""


class AskText(ModalScreen[str | None]):
    """Ask for one line of text: Enter gives it (when not empty), Escape gives None."""

    DEFAULT_CSS = DIALOG_CSS.format(name="AskText")
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, hint: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self._title, self._hint, self._value, self._placeholder = title, hint, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self._title, classes="title")
            yield Input(self._value, placeholder=self._placeholder, id="text")
            yield Static(self._hint, classes="hint")
            yield Static("", id="error", classes="error")

    @on(Input.Submitted, "#text")
    def _submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            self.query_one("#error", Static).update("Type something first (Escape cancels).")
            return
        problem = self.check(value)
        if problem:
            self.query_one("#error", Static).update(problem)
            return
        self.dismiss(value)

    def check(self, value: str) -> str | None:
        """Why ``value`` cannot be accepted (None: it can)."""
        return None

    def action_cancel(self) -> None:
        self.dismiss(None)


def ask_reviewer(last: str) -> AskText:
    return AskText("Who is reviewing? Your name or initials",
                   "Written with every decision in review.csv; asked once per session.",
                   value=last, placeholder="e.g. A. Moreau or AM")


def ask_note(case: str) -> AskText:
    return AskText(f"Note on {case}", "Enter saves the note in review.csv; Escape cancels.",
                   placeholder="free text, one line")


class AskResultsFolder(AskText):
    """Ask for a results folder of an earlier triage run (it must hold results.csv)."""

    def __init__(self, value: str = "") -> None:
        super().__init__("Open a results folder to review",
                         "The folder a triage run wrote (results.csv, run.json); the review "
                         "resumes at the first case without a decision.", value=value,
                         placeholder="results/<folder>-<model>")

    def check(self, value: str) -> str | None:
        from tui.review_queue import open_review

        try:
            open_review(Path(os.path.expanduser(value)))
        except (ResultsError, OSError) as exc:
            return str(exc)
        return None


class AskListenerFolder(AskText):
    """Ask for the --out folder of a DICOM listener (``python -m runtime listen``)."""

    def __init__(self, value: str = "") -> None:
        super().__init__("Open a listener folder",
                         "The --out folder of python -m runtime listen (it holds spool/, "
                         "results.csv, sr/ and outbox/); its queue is read every few seconds.",
                         value=value, placeholder="listener")

    def check(self, value: str) -> str | None:
        from tui.listener import is_listener_folder

        folder = Path(os.path.expanduser(value))
        if not is_listener_folder(folder):
            return (f"{value} is not a listener folder (no spool/ in it): give the --out folder "
                    "of a listener that has started")
        return None


class HelpScreen(ModalScreen[None]):
    """Every key of the screen underneath, with what it does."""

    DEFAULT_CSS = DIALOG_CSS.format(name="HelpScreen") + """
    HelpScreen > Vertical { width: 84; }
    HelpScreen VerticalScroll { height: auto; max-height: 30; }
    """
    BINDINGS = [Binding("escape,question_mark,f1,q", "close", "Close")]

    def __init__(self, title: str, groups: list[tuple[str, list[Binding]]], note: str = "") -> None:
        super().__init__()
        self._title, self._groups, self._note = title, groups, note

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for heading, bindings in self._groups:
            table.add_row(Text(heading, style="bold"), "")
            for binding in bindings:
                table.add_row(key_label(binding), binding.tooltip or binding.description)
        with Vertical():
            yield Label(self._title, classes="title")
            with VerticalScroll():
                yield Static(table)
            if self._note:
                yield Static(self._note, classes="hint")
            yield Static("Escape closes this help. Ctrl+P: the command palette.", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)


_KEY_NAMES = {"question_mark": "?", "escape": "Esc", "down": "↓", "up": "↑", "left": "←",
              "right": "→", "plus": "+", "minus": "-", "equals_sign": "=",
              "left_square_bracket": "[", "right_square_bracket": "]", "comma": ",",
              "full_stop": ".", "ctrl+z": "Ctrl+Z", "f1": "F1", "ctrl+p": "Ctrl+P"}


def key_label(binding: Binding) -> str:
    """The keys of a binding as a person types them: ``j / ↓``."""
    if binding.key_display:
        return binding.key_display
    return " / ".join(_KEY_NAMES.get(k.strip(), k.strip()) for k in binding.key.split(","))
