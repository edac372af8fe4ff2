"""Review screen: every flagged and out-of-scope case of a results folder, one at a time, the
X-ray large; the doctor confirms, overrules or marks unsure, adds notes, undoes. Each decision is
appended (flushed, fsynced) to ``review.csv`` through :class:`runtime.clinic.review.ReviewLog`; reopening
the folder resumes at the first case without a decision. The full-screen viewer (zoom, pan,
DICOM window/level) is :class:`XrayScreen`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static
from textual.worker import get_current_worker

from runtime.clinic.review import NOTE, REVIEW, CaseReview, ReviewEntry
from runtime.errors import DecodeError
from runtime.running.lock import holder_of
from runtime.running.results import ResultsError
from tui import fmt
from tui.dialogs import ask_note, ask_reviewer
from tui.picture import Picture, View, load_picture, render
from tui.review_queue import Case, ReviewFolder
from tui.xray import XrayView

#: how each decision is shown (word, style)
SHOWN = {"confirmed": ("confirmed", "bold red"), "overruled": ("normal", "bold green"),
         "unsure": ("unsure", "bold yellow"), "": ("–", "dim")}


@dataclass
class PictureReady(Message):
    path: Path
    picture: Picture | None
    image: object | None  # the PIL image to show
    error: str = ""


class ReviewScreen(Screen):
    """One case at a time: picture left, facts and the queue right."""

    HELP_TITLE = "Review"

    BINDINGS = [
        Binding("y", "decide('confirmed')", "Confirm", tooltip="confirm the flag: the finding "
                "named (pneumonia for the reference models) is suspected, the case goes to a "
                "doctor"),
        Binding("n", "decide('overruled')", "Normal", tooltip="overrule the flag: the X-ray is "
                "normal"),
        Binding("u", "decide('unsure')", "Unsure", tooltip="unsure: needs another reader"),
        Binding("c", "note", "Note", tooltip="add a free-text note to this case"),
        Binding("z,ctrl+z", "undo", "Undo", key_display="z",
                tooltip="take back the last decision or note (a correction row is appended)"),
        Binding("j,down,right", "move(1)", "Next", key_display="j/↓",
                tooltip="next case (also ↓ and →)"),
        Binding("k,up,left", "move(-1)", "Prev", key_display="k/↑",
                tooltip="previous case (also ↑ and ←)"),
        Binding("g", "first_unreviewed", "Undecided", tooltip="go to the first case without a "
                "decision"),
        Binding("f,enter", "full", "Full", key_display="f",
                tooltip="the X-ray full screen: zoom, pan, DICOM window/level (also Enter)"),
        Binding("x", "write_sr", "SR", tooltip="write DICOM Structured Reports for these "
                "results into a folder beside them"),
        Binding("escape", "back", "Back", tooltip="back to the triage screen"),
    ]

    DEFAULT_CSS = """
    ReviewScreen #main { height: 1fr; }
    ReviewScreen #xray { width: 1fr; padding: 0 1; }
    ReviewScreen #side { width: 60; padding: 0 1; }
    ReviewScreen #progress { text-style: bold; height: auto; }
    ReviewScreen #case { height: auto; margin-top: 1; }
    ReviewScreen .step { text-style: bold; color: $accent; margin-top: 1; }
    ReviewScreen #cases { height: 1fr; }
    ReviewScreen #where { height: auto; color: $text-muted; }
    """

    def __init__(self, folder: ReviewFolder) -> None:
        super().__init__()
        self.folder = folder
        self.index = 0
        self.view = View()
        self.picture: Picture | None = None  # the current case's picture, once loaded
        self.picture_error = ""
        self.picture_shown: Path | None = None  # the file shown now (tests wait on it)

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="main"):
            yield XrayView(id="xray")
            with Vertical(id="side"):
                yield Static("", id="progress")
                yield Static("", id="case")
                yield Label("Cases: flagged by probability, then out of scope", classes="step")
                yield DataTable(id="cases", cursor_type="row", zebra_stripes=True)
                yield Static(f"Decisions: {fmt.shown(self.folder.out / REVIEW)} (append-only; "
                             "results.csv is never changed)", id="where")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#cases", DataTable)
        table.can_focus = False  # the screen's keys drive it
        table.add_column("decision", key="decision", width=9)
        table.add_column("prob.", key="probability", width=6)
        several = self.folder.several  # the finding each case is flagged for gets a column
        if several:
            table.add_column("finding", key="finding", width=10)
        table.add_column("file", key="path", width=23 if several else 34)
        for case in self.folder.cases:
            finding = [self.folder.finding_of(case) or "–"] if several else []
            table.add_row(Text(""), Text(_probability(case), justify="right"), *finding,
                          case.path, key=case.path)
        self._refresh_marks()
        writer = holder_of(self.folder.out)
        if writer is not None:  # a run still writing these results: its later cases are not here
            self.notify(f"Triage is still writing these results ({writer.words()}): the cases it "
                        "adds appear when the folder is opened again.", title="Run in progress",
                        severity="warning", timeout=10)
        if not self.folder.cases:
            self.query_one("#progress", Static).update("Nothing to review: no case in these "
                                                       "results is flagged or out of scope.")
            self.query_one("#xray", XrayView).show_message("No flagged case.")
            return
        if not self.app.reviewer:
            last = next((e.reviewer for e in reversed(self.folder.log.entries) if e.reviewer), "")
            self.app.push_screen(ask_reviewer(last), self._got_reviewer)
        self.show_case(self.folder.first_unreviewed())

    def _got_reviewer(self, name: str | None) -> None:
        if not name:
            self.app.pop_screen()  # no name, no review: back where the user came from
            return
        self.app.reviewer = name
        self._show_facts()

    # -- showing a case ----------------------------------------------------------------------

    @property
    def case(self) -> Case | None:
        return self.folder.cases[self.index] if self.folder.cases else None

    def show_case(self, index: int) -> None:
        if not self.folder.cases:
            return
        self.index = max(0, min(len(self.folder.cases) - 1, index))
        case = self.folder.cases[self.index]
        self.picture, self.picture_error, self.view = None, "", View()
        self.query_one("#cases", DataTable).move_cursor(row=self.index)
        self._show_facts()
        self.query_one("#xray", XrayView).show_message("loading…")
        self.load(case.file)

    def _show_facts(self) -> None:
        case = self.case
        if case is None:
            return
        total, reviewed = len(self.folder.cases), self.folder.reviewed()
        self.query_one("#progress", Static).update(
            f"Case {self.index + 1} of {total} · {reviewed} of {total} reviewed"
            + (" · all done" if reviewed == total else ""))
        state = self.folder.decisions().get(case.path, CaseReview(case.path))
        word, style = SHOWN[state.decision]
        lines: list = [(case.path, "bold"), "\n"]
        several = self._findings_lines(case)
        if several and case.out_of_scope:
            lines += [("OUT OF SCOPE: ", "bold red"), (case.scope_reason, "bold red"),
                      "\nprobabilities (not to be relied on):", *several]
        elif several:
            lines += [(f"flagged: {self.folder.finding_of(case)}", "bold red"), *several,
                      "\nscope: in (a chest X-ray the model was made for)"]
        elif case.out_of_scope:
            lines += [("OUT OF SCOPE: ", "bold red"), (case.scope_reason, "bold red"),
                      f"\nprobability {_probability(case)} (not to be relied on)"]
        else:
            lines += [(f"probability {_probability(case)}", "bold red"),
                      f" · flags at ≥ {_threshold(self.folder.threshold)}",
                      "\nscope: in (a chest X-ray the model was made for)"]
        lines += ["\ndecision: ", (word, style)]
        if state.decision:
            lines.append(f" by {state.reviewer}")
        for other in state.second_opinions:  # another reviewer's decision, kept beside it
            word, style = SHOWN[other.decision]
            lines += ["\nsecond opinion: ", (word, style), f" by {other.reviewer}"]
        for note in state.notes:
            lines += ["\nnote: ", (note, "italic")]
        if self.picture is not None:
            p = self.picture
            lines.append(f"\n{p.format.upper()} {p.width}×{p.height} · sha256 {p.sha256[:16]}…")
        elif self.picture_error:
            lines += ["\n", (f"cannot show the X-ray: {self.picture_error}", "yellow")]
        lines.append(f"\nreviewer: {self.app.reviewer or '–'} · model: {self.folder.artifact}")
        self.query_one("#case", Static).update(Text.assemble(*lines))

    def _findings_lines(self, case: Case) -> list:
        """A model with several findings: one line per finding (its probability and threshold,
        red where it reached it); empty for one finding or a row without every label's
        probability (the single-finding lines are shown)."""
        p = case.probabilities
        if not self.folder.several or any(f not in p for f in self.folder.thresholds):
            return []
        width = max(len(f) for f in self.folder.thresholds)
        lines: list = []
        for finding, threshold in self.folder.thresholds.items():
            reached = p[finding] >= threshold
            lines.append((f"\n  {finding:<{width}} {p[finding]:.3f} · flags at ≥ "
                          f"{threshold:.3f}", "bold red" if reached and not case.out_of_scope
                          else ""))
        return lines

    def _refresh_marks(self) -> None:
        table = self.query_one("#cases", DataTable)
        state = self.folder.decisions()
        for case in self.folder.cases:
            word, style = SHOWN[state.get(case.path, CaseReview(case.path)).decision]
            table.update_cell(case.path, "decision", Text(word, style=style))

    @work(thread=True, exclusive=True, group="picture")
    def load(self, path: Path) -> None:
        worker = get_current_worker()
        try:
            picture = load_picture(path)
        except DecodeError as exc:
            self.post_message(PictureReady(path, None, None, str(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(PictureReady(path, picture, render(picture, View())))

    @on(PictureReady)
    def _picture_ready(self, message: PictureReady) -> None:
        case = self.case
        if case is None or message.path != case.file:
            return
        xray = self.query_one("#xray", XrayView)
        if message.picture is None:
            self.picture_error = message.error
            xray.show_message(Text(f"Cannot show {case.path}: {message.error}", style="yellow"))
        else:
            self.picture = message.picture
            xray.show(message.image)
        self.picture_shown = message.path
        self._show_facts()

    # -- actions -----------------------------------------------------------------------------

    def _entry(self, action: str, note: str = "") -> ReviewEntry:
        case = self.case
        assert case is not None
        return ReviewEntry(case.path, self.picture.sha256 if self.picture else "", action,
                           note=note, reviewer=self.app.reviewer or "",
                           bundle=self.folder.bundle, artifact=self.folder.artifact,
                           probability=case.row.get("probability", ""),
                           threshold=self.folder.threshold_of(case))

    def _append(self, entry: ReviewEntry) -> bool:
        try:
            self.folder.log.append(entry)
        except (OSError, ValueError, ResultsError) as exc:
            self.notify(f"Not saved: {exc}", title="review.csv", severity="error", timeout=10)
            return False
        return True

    def action_decide(self, decision: str) -> None:
        case = self.case
        if case is None or not self.app.reviewer:
            return
        if self.picture is None:
            self.notify("The X-ray is not shown yet: a decision needs the picture. "
                        + (f"({self.picture_error}) A note (c) can still be added."
                           if self.picture_error else "Wait a moment."),
                        severity="warning")
            return
        if not self._append(self._entry(decision)):
            return
        self._refresh_marks()
        total, reviewed = len(self.folder.cases), self.folder.reviewed()
        if reviewed == total:
            self.notify(f"All {total} cases reviewed; decisions are in "
                        f"{fmt.shown(self.folder.log.path)}.", title="Review complete")
        if self.index + 1 < total:
            self.show_case(self.index + 1)
        else:
            self._show_facts()

    def action_note(self) -> None:
        case = self.case
        if case is None or not self.app.reviewer:
            return

        def save(text: str | None) -> None:
            if text and self._append(self._entry(NOTE, text)):
                self._show_facts()

        self.app.push_screen(ask_note(case.path), save)

    def action_undo(self) -> None:
        """Take back this reviewer's newest decision or note (never another reviewer's)."""
        if not self.app.reviewer:
            self.notify("Nothing to undo.")
            return
        try:
            undo = self.folder.log.undo(self.app.reviewer)
        except (OSError, ValueError, ResultsError) as exc:
            self.notify(f"Not saved: {exc}", title="review.csv", severity="error", timeout=10)
            return
        if undo is None:
            self.notify("Nothing of yours to undo.")
            return
        target = next(e for e in self.folder.log.entries if e.id == undo.undoes)
        what = "note" if target.action == NOTE else SHOWN[target.action][0]
        self.notify(f"Took back the {what} on {target.path}.", title="Undo")
        self._refresh_marks()
        index = self.folder.index_of(target.path)
        if index is not None and index != self.index:
            self.show_case(index)
        else:
            self._show_facts()

    def action_move(self, step: int) -> None:
        if self.folder.cases:
            self.show_case(self.index + step)

    def action_first_unreviewed(self) -> None:
        self.show_case(self.folder.first_unreviewed())

    def action_full(self) -> None:
        if self.picture is None:
            self.notify("No X-ray to show yet.", severity="warning")
            return
        self.app.push_screen(XrayScreen(self.picture, self.case.path if self.case else ""))

    def action_write_sr(self) -> None:
        self.app.write_sr(self.folder.out)

    def action_back(self) -> None:
        self.app.pop_screen()

    @on(DataTable.RowSelected, "#cases")
    def _clicked(self, event: DataTable.RowSelected) -> None:
        if event.cursor_row != self.index:
            self.show_case(event.cursor_row)

    def palette_commands(self) -> list[tuple[str, str, object]]:
        """What the command palette offers on this screen."""
        decide = self.action_decide
        return [("Review: confirm the flag (y)", "the finding named is suspected",
                 lambda: decide("confirmed")),
                ("Review: overrule, normal (n)", "the X-ray is normal",
                 lambda: decide("overruled")),
                ("Review: unsure (u)", "needs another reader", lambda: decide("unsure")),
                ("Review: add a note (c)", "free text in review.csv", self.action_note),
                ("Review: undo the last decision (z)", "appends a correction", self.action_undo),
                ("Review: first case without a decision (g)", "resume",
                 self.action_first_unreviewed),
                ("Review: X-ray full screen (f)", "zoom, pan, DICOM window/level",
                 self.action_full),
                ("Write DICOM SR reports (x)", "one Structured Report per DICOM image",
                 self.action_write_sr)]


class XrayScreen(Screen):
    """The X-ray alone, full screen: zoom, pan, and window/level for DICOM images."""

    HELP_TITLE = "Full-screen X-ray"

    BINDINGS = [
        Binding("plus,equals_sign", "zoom(1)", "Zoom in", key_display="+"),
        Binding("minus", "zoom(-1)", "Zoom out", key_display="-"),
        Binding("left,h", "pan(-0.25, 0)", "Pan", key_display="←↑↓→",
                tooltip="move the zoomed view (arrows or h j k l)"),
        Binding("right,l", "pan(0.25, 0)", "Pan right", show=False),
        Binding("up,k", "pan(0, -0.25)", "Pan up", show=False),
        Binding("down,j", "pan(0, 0.25)", "Pan down", show=False),
        Binding("right_square_bracket", "window(0, 1.25)", "Wider", key_display="]",
                tooltip="DICOM: wider window (less contrast)"),
        Binding("left_square_bracket", "window(0, 0.8)", "Narrower", key_display="[",
                tooltip="DICOM: narrower window (more contrast)"),
        Binding("full_stop", "window(0.1, 1)", "Level up", key_display=".",
                tooltip="DICOM: raise the level (darker)"),
        Binding("comma", "window(-0.1, 1)", "Level down", key_display=",",
                tooltip="DICOM: lower the level (brighter)"),
        Binding("0", "reset", "Reset", tooltip="whole image, the decoder's window"),
        Binding("escape,f,q", "close", "Close", key_display="Esc"),
    ]

    DEFAULT_CSS = """
    XrayScreen #full { height: 1fr; }
    XrayScreen #state { height: 1; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, picture: Picture, name: str) -> None:
        super().__init__()
        self.picture, self.case_name, self.view = picture, name, View()

    def compose(self) -> ComposeResult:
        yield XrayView(id="full")
        yield Static("", id="state")
        yield Footer()

    def on_mount(self) -> None:
        self._draw()

    def _draw(self) -> None:
        self.query_one("#full", XrayView).show(render(self.picture, self.view))
        self.query_one("#state", Static).update(
            f"{self.case_name} · {self.view.describe(self.picture)}")

    def action_zoom(self, step: int) -> None:
        self.view = self.view.zoomed(step)
        self._draw()

    def action_pan(self, dx: float, dy: float) -> None:
        self.view = self.view.panned(dx, dy)
        self._draw()

    def action_window(self, level: float, width: float) -> None:
        if self.picture.window is None:
            self.notify(f"Window/level is for DICOM images; this one is a "
                        f"{self.picture.format.upper()} (its pixels are shown as stored).",
                        severity="warning")
            return
        self.view = self.view.windowed(self.picture, level, width)
        self._draw()

    def action_reset(self) -> None:
        self.view = View()
        self._draw()

    def action_close(self) -> None:
        self.app.pop_screen()


def _probability(case: Case) -> str:
    p = case.probability
    return f"{p:.3f}" if p == p else "–"


def _threshold(value: str) -> str:
    try:
        return f"{float(value):.3f}"
    except ValueError:
        return value or "–"
