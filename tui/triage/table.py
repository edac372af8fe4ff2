"""The results of a run: the scored images, flagged cases first, and apart the files that could not
be read with the reason. Rows arrive in batches while the run goes (:meth:`ResultsTable.add`); the
row the user moves to is announced with :class:`ResultsTable.RowChosen`."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Label

from tui.triage.rows import flagged, order_key, out_of_scope, probability


class ResultsTable(Vertical):
    """Two tables: scored images (``#results``) and unreadable files (``#errors``)."""

    DEFAULT_CSS = """
    ResultsTable { height: 1fr; }
    ResultsTable #results { height: 1fr; }
    ResultsTable #errors { height: auto; max-height: 7; }
    """

    @dataclass
    class RowChosen(Message):
        """The user moved to this row (or the finished run opened on it)."""

        row: dict

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[str, dict] = {}  # every row shown, by path
        self.several = False  # the run's model has several findings: a prediction column

    def compose(self) -> ComposeResult:
        yield Label("Results: flagged cases first (⚑ = needs a doctor first)", classes="step first")
        yield DataTable(id="results", cursor_type="row", zebra_stripes=True)
        yield Label("Files that could not be read: none", id="errors-title", classes="step")
        yield DataTable(id="errors", cursor_type="row")

    def on_mount(self) -> None:
        results = self.query_one("#results", DataTable)
        results.add_column("", key="flag", width=2)
        results.add_column("probability", key="probability")
        results.add_column("file", key="path")
        errors = self.query_one("#errors", DataTable)
        errors.add_column("file", key="path")
        errors.add_column("why it could not be read", key="error")

    def set_findings(self, findings: list[str]) -> None:
        """The run's findings (before its rows come): with several, the table gets a
        ``prediction`` column naming the finding each row is flagged for."""
        several = len(findings) > 1
        if several != self.several:
            self.clear()  # before the run's rows: none of another model's stay
            results = self.query_one("#results", DataTable)
            if several:
                results.add_column("prediction", key="prediction")
            else:
                results.remove_column("prediction")
            self.several = several

    def clear(self) -> None:
        self._rows.clear()
        self.query_one("#results", DataTable).clear()
        self.query_one("#errors", DataTable).clear()
        self.query_one("#errors-title", Label).update("Files that could not be read: none")

    def add(self, rows: list[dict]) -> None:
        """Show ``rows`` too (a path shown already is replaced: its file was read again); the
        cursor stays on the row it was on."""
        if not rows:
            return
        results = self.query_one("#results", DataTable)
        errors = self.query_one("#errors", DataTable)
        keep = self._cursor_key(results)
        for row in rows:
            key = row["path"]
            if key in self._rows:  # a file read again (changed, or an error retried): replaced
                for table in (results, errors):
                    if key in table.rows:
                        table.remove_row(key)
            self._rows[key] = row
            if row.get("status") != "ok":
                errors.add_row(key, row.get("error", ""), key=key)
                continue
            style = "bold red" if flagged(row) else ""
            results.add_row(Text("⚑" if flagged(row) else "", style=style),
                            Text("out" if out_of_scope(row) else f"{probability(row):.3f}",
                                 style=style, justify="right"),
                            Text(key, style="bold" if flagged(row) else ""),
                            *([Text(row.get("prediction", ""), style=style)]
                              if self.several else []),
                            key=key)
        results.sort("path", key=lambda path: order_key(self._rows[path.plain]))
        errors.sort("path")
        self.query_one("#errors-title", Label).update(
            f"Files that could not be read: {errors.row_count or 'none'}")
        if keep is not None and keep in results.rows:
            results.move_cursor(row=results.get_row_index(keep))

    def open_first(self) -> None:
        """Focus the results on the most urgent case and announce it (its preview)."""
        results = self.query_one("#results", DataTable)
        if not results.row_count:
            return
        results.focus()
        results.move_cursor(row=0)
        self.post_message(self.RowChosen(self._rows[self._cursor_key(results)]))

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key is None or not event.data_table.has_focus:
            return  # rows being added highlight a row too: follow the user's cursor only
        row = self._rows.get(event.row_key.value)
        if row is not None:
            self.post_message(self.RowChosen(row))

    @staticmethod
    def _cursor_key(table: DataTable) -> str | None:
        if not table.row_count or table.cursor_row is None:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
