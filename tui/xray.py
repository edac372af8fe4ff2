"""The X-ray on screen with ``textual-image``: Kitty graphics (TGP) or Sixel where the terminal
supports them, coloured half-cells where it does not.

textual-image asks the terminal what it supports, and its cell size in pixels, when it is first
imported; that cannot happen once Textual owns the terminal, so ``python -m tui`` calls
:func:`detect_graphics` before the app starts. ``CXR_TUI_GRAPHICS=halfcell`` forces half-cells
(for a terminal or multiplexer that answers the query but draws nothing).
"""

from __future__ import annotations

import os
from typing import Type

from PIL import Image as PILImage
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Center, Middle
from textual.widget import Widget
from textual.widgets import Static

FORCE_ENV = "CXR_TUI_GRAPHICS"
_detected: tuple[str, Type[Widget]] | None = None


def detect_graphics() -> str:
    """Query the terminal once (before the app starts); the name of the method chosen."""
    global _detected
    if _detected is None:
        from textual_image import widget as images

        forced = os.environ.get(FORCE_ENV, "").strip().lower()
        renderable = getattr(images.Image, "_Renderable", None)
        if images.Image is images.SixelImage:
            chosen, name = images.SixelImage, "Sixel graphics"
        elif renderable is images.TGPRenderable:
            chosen, name = images.TGPImage, "Kitty graphics"
        else:  # no graphics protocol, or not a terminal at all (tests): coloured half-cells
            chosen, name = images.HalfcellImage, "half-cells"
        if forced == "halfcell":
            chosen, name = images.HalfcellImage, "half-cells"
        _detected = (name, chosen)
    return _detected[0]


def image_widget_class() -> Type[Widget]:
    detect_graphics()
    assert _detected is not None
    return _detected[1]


class XrayView(Widget):
    """A grayscale image as large as the widget allows (aspect kept), or a message."""

    DEFAULT_CSS = """
    XrayView { height: 1fr; width: 1fr; }
    XrayView Middle { height: 1fr; width: 1fr; }
    XrayView #image { width: auto; height: auto; max-width: 100%; max-height: 100%; }
    XrayView #message { width: auto; color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._image = image_widget_class()(None, id="image")
        self._message = Static("", id="message")

    def compose(self) -> ComposeResult:
        with Middle():
            with Center():
                yield self._image
            with Center():
                yield self._message

    def show(self, image: PILImage.Image) -> None:
        self._message.update("")
        self._message.display = False
        self._image.display = True
        self._image.image = image

    def show_message(self, message: str | Text) -> None:
        self._image.image = None
        self._image.display = False
        self._message.display = True
        self._message.update(message)
