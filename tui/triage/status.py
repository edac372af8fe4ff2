"""What the run is doing: a line and a progress bar above the results (:class:`RunStatus`), the
counts of the results folder and where it was saved below them (:class:`RunSummary`)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from runtime.running.results import RESULTS, SUMMARY
from tui import fmt


class RunStatus(Vertical):
    """One line saying what the run is doing (or what is missing to start one), and its bar."""

    DEFAULT_CSS = """
    RunStatus { height: auto; }
    RunStatus #status { height: auto; }
    RunStatus #progress { margin-bottom: 1; }
    """

    def compose(self) -> ComposeResult:
        yield Static("Pick a folder and a model, then press r.", id="status")
        yield ProgressBar(id="progress", show_eta=False)

    def on_mount(self) -> None:
        self.query_one("#progress", ProgressBar).display = False  # shown once a run starts

    def say(self, text: str | Text) -> None:
        self.query_one("#status", Static).update(text)

    def loading(self, artifact: str) -> None:
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self.say(f"Loading {artifact} (checking its sha256)…")

    def started(self, total: int, described: dict) -> None:
        self.query_one("#progress", ProgressBar).update(total=max(1, total), progress=0)
        self.say(f"Scoring {total} images with {described.get('artifact')} on "
                 f"{described.get('device', 'cpu')}…")

    def progress(self, done: int, failed: int, rate: float, cancelling: bool) -> None:
        self.query_one("#progress", ProgressBar).update(progress=done)
        errors = f", {failed} unreadable" if failed else ""
        self.say(f"{done} done{errors} · {fmt.rate(rate)}"
                 + (" · cancelling…" if cancelling else ""))

    def cancelling(self) -> None:
        self.say("Cancelling… every image done so far is kept in results.csv.")

    def failed(self, error: str) -> None:
        self.say(Text(error, style="bold red"))

    def finished(self, summary: dict, interrupted: bool) -> None:
        """The bar full (or where it stopped) and what this run did, from its summary.json."""
        bar = self.query_one("#progress", ProgressBar)
        if bar.total is None:
            bar.update(total=1, progress=1)
        elif not interrupted:
            bar.update(progress=bar.total)
        run = summary.get("this_run") or {}
        if interrupted:
            self.say(Text(f"Cancelled: {run.get('processed', 0)} of "
                          f"{run.get('found', 0) - run.get('skipped_already_done', 0)} "
                          "images scored in this run; all of them are kept. Press r to "
                          "resume the rest.", style="bold yellow"))
        elif run.get("processed", 0) == 0 and run.get("skipped_already_done"):
            self.say(f"All {run['skipped_already_done']} images were already done in this "
                     "results folder (shown below). Choose another results folder to "
                     "score them again.")
        else:
            self.say(f"Done: {run.get('processed', 0)} images scored"
                     + (f" ({run['skipped_already_done']} kept from an earlier run)"
                        if run.get("skipped_already_done") else "") + ".")


class RunSummary(Vertical):
    """The counts of the whole results folder, the time of this run, and where it was saved."""

    DEFAULT_CSS = """
    RunSummary { height: auto; }
    RunSummary #summary { height: auto; margin-top: 1; }
    RunSummary #where { height: auto; color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="summary")
        yield Static("", id="where")

    def clear(self) -> None:
        self.query_one("#summary", Static).update("")
        self.query_one("#where", Static).update("")

    def show(self, out: Path, summary: dict, interrupted: bool) -> None:
        counts = summary.get("counts") or {}
        run = summary.get("this_run") or {}
        total, flagged, errors = (counts.get("total", 0), counts.get("flagged", 0),
                                  counts.get("errors", 0))
        outside = counts.get("out_of_scope", 0)
        self.query_one("#summary", Static).update(Text.assemble(
            (f"{total} images", "bold"), " · ",
            (f"{flagged} flagged for a doctor", "bold red" if flagged else "bold"),
            (f" ({outside} out of the model's scope)" if outside else "", "bold red"), " · ",
            (f"{errors} could not be read", "bold yellow" if errors else ""), " · ",
            (f"{fmt.seconds(run.get('seconds'))} ({fmt.rate(run.get('images_per_second'))})"
             if run.get("processed") else "nothing new to score"),
            (" · CANCELLED" if interrupted else "", "bold yellow")))
        notes = summary.get("notes") or []
        self.query_one("#where", Static).update(Text.assemble(
            f"Saved: {fmt.shown(out / RESULTS)} (and {SUMMARY}) · opens in any "
            "spreadsheet · v: review the flagged cases",
            *((f"\nNote: {note}", "yellow") for note in notes)))
