"""How numbers are shown. Timings go through :func:`seconds` and :func:`rate` only, so that the
snapshot tests can pin them (they vary from run to run)."""

from __future__ import annotations

import math
import os
from pathlib import Path


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(round(value)), 60)
    return f"{minutes} min {rest:02d} s"


def rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} images/s"


def number(value, digits: int = 3) -> str:
    """A float, or a dash for a missing/non-finite one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, float)) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def percent(value, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def megabytes(size) -> str:
    return "–" if size is None else f"{size / 1e6:.2f} MB"


def shown(path: str | os.PathLike | None) -> str:
    """A path as the user should see it: relative to the current folder when inside it."""
    if path is None:
        return "–"
    path = Path(path)
    try:
        absolute = Path(os.path.abspath(path))
        relative = absolute.relative_to(Path(os.path.abspath(Path.cwd())))
        return str(relative) if str(relative) != "." else "."
    except (ValueError, OSError):
        return str(path)
