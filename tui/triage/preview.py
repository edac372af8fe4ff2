"""The X-ray of the row chosen in the results, decoded and scaled in a worker, with its verdict in
words (probability and flag, the reason a case is out of scope, or why the file cannot be read)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Label, Static
from textual.worker import get_current_worker

from tui.triage.rows import flagged, out_of_scope, probability
from tui.xray import XrayView

PREVIEW_SIDE = 384  # shorter side a large JPEG is decoded to for the preview (DCT scaling)


class PreviewPanel(Vertical):
    """The chosen file's verdict (``#preview-info``) above its picture (``#preview``)."""

    DEFAULT_CSS = """
    PreviewPanel #preview-info { height: auto; }
    PreviewPanel #preview Middle { align-vertical: top; }
    """

    @dataclass
    class Decoded(Message, bubble=False):
        """The preview worker's picture of ``path`` (a Pillow image), or why there is none."""

        path: Path
        image: object | None
        error: str | None = None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._path: Path | None = None  # the file asked for last
        self._row: dict | None = None
        self.shown: Path | None = None  # the file the picture shows now (tests wait on it)

    def compose(self) -> ComposeResult:
        yield Label("Preview", classes="step first")
        yield Static("", id="preview-info")
        yield XrayView(id="preview")

    def show(self, folder: Path, row: dict) -> None:
        """Show the file of ``row`` (a path relative to ``folder``, the run's input folder)."""
        path = folder / row["path"]
        if path == self._path and row == self._row:
            return  # already shown or on its way (the table re-sorted under the cursor)
        self._path, self._row = path, row
        info = self.query_one("#preview-info", Static)
        if row.get("status") == "ok" and out_of_scope(row):
            info.update(Text.assemble(
                (row["path"], "bold"), "\n", ("⚑ OUT OF SCOPE: ", "bold red"),
                (row.get("scope_reason", ""), "bold red"),
                f"\n(model probability {probability(row):.3f}, not to be relied on)"))
        elif row.get("status") == "ok":
            info.update(Text.assemble(
                (row["path"], "bold"), "\n",
                (f"probability {probability(row):.3f} · {row.get('prediction', '')}",
                 "bold red" if flagged(row) else ""),
                ("\n⚑ flagged: a doctor should read this one first" if flagged(row) else
                 "\nbelow the threshold: not flagged")))
        else:
            info.update(Text.assemble((row["path"], "bold"), "\n",
                                      (row.get("error", ""), "yellow")))
        self.query_one("#preview", XrayView).show_message("loading…")
        self.load(path)

    @work(thread=True, exclusive=True, group="preview")
    def load(self, path: Path) -> None:
        from PIL import Image as PILImage

        from runtime.errors import DecodeError
        from runtime.imaging.decode import decode_file

        worker = get_current_worker()
        try:
            decoded = decode_file(path, reduce_to=PREVIEW_SIDE)
        except DecodeError as exc:
            self.post_message(self.Decoded(path, None, str(exc)))
            return
        except OSError as exc:
            self.post_message(self.Decoded(path, None, f"cannot read the file: {exc}"))
            return
        if worker.is_cancelled:
            return
        image = PILImage.fromarray(decoded.pixels)
        image.thumbnail((2 * PREVIEW_SIDE, 2 * PREVIEW_SIDE), PILImage.Resampling.LANCZOS)
        self.post_message(self.Decoded(path, image))

    @on(Decoded)
    def _decoded(self, message: Decoded) -> None:
        if message.path != self._path:
            return
        preview = self.query_one("#preview", XrayView)
        if message.image is None:
            preview.show_message(f"cannot show this file: {message.error}")
        else:
            preview.show(message.image)
        self.shown = message.path
