"""Widgets of the app: a folders-only tree and a half-block grayscale image preview."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.widget import Widget
from textual.widgets import DirectoryTree


class FolderTree(DirectoryTree):
    """A directory tree that lists folders only (hidden ones left out)."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        out = []
        for path in paths:
            try:
                if path.is_dir() and not path.name.startswith("."):
                    out.append(path)
            except OSError:
                continue
        return out


@lru_cache(maxsize=65536)
def _cell_style(top: int, bottom: int) -> Style:
    return Style(color=Color.from_rgb(top, top, top), bgcolor=Color.from_rgb(bottom, bottom, bottom))


class HalfBlocks:
    """A grayscale image drawn with '▀': each terminal cell shows two pixels, one above the other
    (foreground = upper pixel, background = lower pixel)."""

    def __init__(self, pixels: np.ndarray):
        pixels = np.asarray(pixels, dtype=np.uint8)
        if pixels.shape[0] % 2:
            pixels = np.vstack([pixels, pixels[-1:]])
        self.pixels = pixels

    def __rich_console__(self, console, options):
        rows, cols = self.pixels.shape
        pad = max(0, (options.max_width - cols) // 2)
        for y in range(0, rows, 2):
            if pad:
                yield Segment(" " * pad)
            top, bottom = self.pixels[y].tolist(), self.pixels[y + 1].tolist()
            for t, b in zip(top, bottom):
                yield Segment("▀", _cell_style(t, b))
            yield Segment.line()

    def __rich_measure__(self, console, options):
        from rich.measure import Measurement

        return Measurement(self.pixels.shape[1], self.pixels.shape[1])


class XrayPreview(Widget):
    """Shows a downscaled grayscale image (pixels prepared off the UI thread), or a message."""

    DEFAULT_CSS = """
    XrayPreview { height: 1fr; width: 1fr; }
    """

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self._pixels: np.ndarray | None = None
        self._message = "Select a result to see the X-ray."

    def cells(self) -> tuple[int, int]:
        """(columns, pixel rows) available for an image: two pixel rows per line."""
        size = self.content_size
        return max(4, size.width), max(4, 2 * size.height)

    def show_pixels(self, pixels: np.ndarray) -> None:
        self._pixels, self._message = pixels, ""
        self.refresh()

    def show_message(self, message: str) -> None:
        self._pixels, self._message = None, message
        self.refresh()

    def render(self):
        if self._pixels is None:
            return Text(self._message, style="dim", justify="center")
        return HalfBlocks(self._pixels)
