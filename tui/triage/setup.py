"""Steps 1-3 of a run, the setup column: the folder of X-rays (a folder tree, or a typed path, with
the number of images under it), the model (every artifact of every bundle found), the results
folder; and the Run and Cancel buttons, announced with messages."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DirectoryTree, Input, Label, Select, Static
from textual.worker import get_current_worker

from tui import fmt
from tui.sources import BUILD_COMMAND, Choice, default_out
from tui.widgets import FolderTree


class SetupPanel(Vertical):
    """Folder, model and results folder; the model chosen is the app's ``choice_index``."""

    DEFAULT_CSS = """
    SetupPanel #folder-path { margin: 0; }
    SetupPanel #tree { height: 1fr; min-height: 5; }
    SetupPanel #folder-info, SetupPanel #model-info { color: $text-muted; }
    SetupPanel #buttons { height: auto; margin-top: 1; }
    SetupPanel #buttons Button { margin-right: 1; min-width: 12; }
    """

    @dataclass
    class FolderChosen(Message):
        """The folder of X-rays to triage is now ``folder``."""

        folder: Path

    class RunPressed(Message):
        """The Run button was pressed."""

    class CancelPressed(Message):
        """The Cancel button was pressed."""

    @dataclass
    class Counted(Message, bubble=False):
        """The counting worker found ``images`` files under ``folder``."""

        folder: Path
        images: int

    def __init__(self, start: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.start = start  # the folder the tree opens on
        self.folder: Path | None = None
        self._auto_out: str | None = None  # the results folder filled in for the user

    def compose(self) -> ComposeResult:
        app = self.app
        yield Label("1 · Folder of X-rays", classes="step first")
        yield Input(placeholder="type a folder path, Enter", id="folder-path")
        yield FolderTree(self.start, id="tree")
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

    def on_mount(self) -> None:
        app = self.app
        if app.choices:
            self._show_model(app.choices[app.choice_index])
        else:
            problems = "; ".join(app.bundle_problems)
            self.query_one("#model-info", Static).update(
                Text.assemble(("No bundle found in dist/. ", "bold red"),
                              f"Build one with `{BUILD_COMMAND}` or start with --bundle PATH."
                              + (f" ({problems})" if problems else "")))
        if app.out is not None:
            self.query_one("#out", Input).value = str(app.out)
        if app.start_folder is not None:
            self.set_folder(app.start_folder)

    # -- what the screen asks ------------------------------------------------------------------

    def typed_out(self) -> str:
        """The results folder as typed in step 3 (may be empty)."""
        return self.query_one("#out", Input).value.strip()

    def out_folder(self, folder: Path, choice: Choice) -> Path:
        """Where a run of ``choice`` over ``folder`` writes: step 3, else the default."""
        typed = self.typed_out()
        return Path(os.path.expanduser(typed)) if typed else default_out(folder, choice)

    def set_running(self, running: bool) -> None:
        self.query_one("#run", Button).disabled = running
        self.query_one("#cancel", Button).disabled = not running

    def focus_tree(self) -> None:
        self.query_one("#tree").focus()

    def focus_model(self) -> None:
        self.query_one("#model").focus()

    # -- folder --------------------------------------------------------------------------------

    def set_folder(self, folder: Path) -> None:
        self.folder = folder
        self.query_one("#folder-path", Input).value = fmt.shown(folder)
        self.query_one("#folder-info", Static).update(f"{fmt.shown(folder)}: counting images…")
        self._update_out()
        self.count_images(folder)
        self.post_message(self.FolderChosen(folder))

    @work(thread=True, exclusive=True, group="count")
    def count_images(self, folder: Path) -> None:
        from runtime.running.triage import walk

        worker = get_current_worker()
        n = 0
        for _ in walk(folder):
            n += 1
            if worker.is_cancelled:
                return
        self.post_message(self.Counted(folder, n))

    @on(Counted)
    def _counted(self, message: Counted) -> None:
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
        self.focus_tree()

    # -- model ---------------------------------------------------------------------------------

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
                 _flags_at(choice.thresholds)
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

    # -- buttons -------------------------------------------------------------------------------

    @on(Button.Pressed, "#run")
    def _run_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.RunPressed())

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.CancelPressed())


def _flags_at(thresholds: dict[str, float]) -> str:
    """When the model flags, in words (with several findings: each one's threshold)."""
    if len(thresholds) == 1:
        return f"flags at probability ≥ {fmt.number(next(iter(thresholds.values())))} "
    return "flags when a finding reaches its threshold: " + ", ".join(
        f"{label} ≥ {fmt.number(t)}" for label, t in thresholds.items()) + " "
