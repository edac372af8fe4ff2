"""An X-ray as the reviewer sees it: decoded by the runtime, with zoom, pan and (DICOM only)
window/level. Plain numpy and Pillow, no Textual: the screens call these from workers or on
key presses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from runtime.imaging.decode import decode_bytes, read_bytes
from runtime.imaging.dicom import WindowValues, apply_window, window_values

#: shorter side a large JPEG is decoded to (DCT scaling): enough for a full-screen view
VIEW_SIDE = 1024
#: longest side of the image handed to the terminal (the renderers scale it to the cells)
MAX_SIDE = 1600
ZOOMS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


@dataclass(frozen=True)
class Picture:
    """One decoded X-ray: display pixels, the file's sha256, and DICOM values for windowing."""

    path: Path
    pixels: np.ndarray  # (H, W) uint8, as runtime.imaging.decode shows it
    sha256: str  # of the file's bytes, as read for this picture
    format: str
    width: int  # original size
    height: int
    window: WindowValues | None = None  # DICOM grayscale only


def load_picture(path: Path) -> Picture:
    """Read a file once: its sha256, its pixels (runtime decoders) and, for a DICOM, its values
    before the window. Raises runtime.errors.DecodeError in plain words."""
    data = read_bytes(path)
    decoded = decode_bytes(data, path, reduce_to=VIEW_SIDE)
    window = None
    if decoded.format == "dicom":
        window = window_values(data)
    return Picture(path, decoded.pixels, hashlib.sha256(data).hexdigest(), decoded.format,
                   decoded.width, decoded.height, window)


@dataclass(frozen=True)
class View:
    """How the picture is shown: zoom (1 = whole image), centre (fractions of the image), and the
    window (None: the decoder's display pixels)."""

    zoom: float = 1.0
    cx: float = 0.5
    cy: float = 0.5
    center: float | None = None
    width: float | None = None

    def zoomed(self, step: int) -> "View":
        index = min(range(len(ZOOMS)), key=lambda i: abs(ZOOMS[i] - self.zoom))
        zoom = ZOOMS[max(0, min(len(ZOOMS) - 1, index + step))]
        return replace(self, zoom=zoom) if zoom > 1 else replace(self, zoom=1.0, cx=0.5, cy=0.5)

    def panned(self, dx: float, dy: float) -> "View":
        """Move by a fraction of the visible part (no effect at zoom 1)."""
        half = 0.5 / self.zoom
        clamp = lambda v: min(1 - half, max(half, v))
        return replace(self, cx=clamp(self.cx + dx / self.zoom), cy=clamp(self.cy + dy / self.zoom))

    def windowed(self, picture: Picture, level_step: float = 0, width_factor: float = 1) -> "View":
        """Change level (by a fraction of the current width) and width (by a factor)."""
        if picture.window is None:
            return self
        center = picture.window.center if self.center is None else self.center
        width = picture.window.width if self.width is None else self.width
        return replace(self, center=center + level_step * width,
                       width=max(1.0, width * width_factor))

    def describe(self, picture: Picture) -> str:
        parts = [f"zoom {self.zoom:g}×"]
        if picture.window is not None:
            if self.center is None:
                parts.append(f"window: as decoded (default C {picture.window.center:g} "
                             f"W {picture.window.width:g})")
            else:
                parts.append(f"window C {self.center:.0f} W {self.width:.0f}")
        return " · ".join(parts)


def render(picture: Picture, view: View) -> PILImage.Image:
    """The visible part of the picture as a grayscale Pillow image (at most MAX_SIDE pixels)."""
    if picture.window is not None and view.center is not None:
        gray = apply_window(picture.window.values, view.center, view.width or 1.0,
                            picture.window.invert)
    else:
        gray = picture.pixels
    height, width = gray.shape[:2]
    if view.zoom > 1:
        w, h = max(2, round(width / view.zoom)), max(2, round(height / view.zoom))
        x = min(width - w, max(0, round(view.cx * width - w / 2)))
        y = min(height - h, max(0, round(view.cy * height - h / 2)))
        gray = gray[y:y + h, x:x + w]
    image = PILImage.fromarray(np.ascontiguousarray(gray))
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), PILImage.Resampling.LANCZOS)
    return image
