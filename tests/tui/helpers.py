"""Pilot helpers and SVG snapshot comparison (no plugin needed).

References live in tests/tui/snapshots/NAME.svg. Regenerate them after an intended change with
``UPDATE_SNAPSHOTS=1 pytest tests/tui`` and look at the SVGs before committing them.
"""

from __future__ import annotations

import difflib
import html
import os
import re
import time
from pathlib import Path

import pytest

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
SIZE = (132, 40)  # fixed terminal size for every snapshot


async def wait_until(pilot, predicate, timeout: float = 60.0, what: str = "condition") -> None:
    """Let the app run until ``predicate()`` is true (workers report back through messages)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)


def text_of(widget) -> str:
    """The plain text a Static/Label shows."""
    rendered = widget.render()
    return getattr(rendered, "plain", None) or str(rendered)


def normalize(svg: str) -> str:
    """Remove what varies between identical screens: the content-hash id rich puts on every
    class, and any long hex digest or timestamp that is shown (masked to the same length)."""
    svg = re.sub(r"terminal-\d+", "terminal", svg)
    svg = re.sub(r"(?<![#0-9a-f])[0-9a-f]{16,}", lambda m: "x" * len(m.group()), svg)
    svg = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", "YYYY-MM-DDThh:mm:ss", svg)
    return svg


def screen_text(svg: str) -> list[str]:
    """Rough text lines of an SVG screenshot, for a readable diff."""
    lines: dict[str, list[str]] = {}
    for y, text in re.findall(r'<text[^>]*y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        lines.setdefault(y, []).append(html.unescape(text).replace("\xa0", " "))
    return ["".join(parts).rstrip() for _, parts in sorted(lines.items(), key=lambda i: float(i[0]))]


def assert_snapshot(app, name: str, tmp_path: Path) -> None:
    svg = normalize(app.export_screenshot(title="Chest X-ray triage"))
    reference = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        reference.write_text(svg, encoding="utf-8")
        return
    if not reference.exists():
        (tmp_path / f"{name}.svg").write_text(svg, encoding="utf-8")
        pytest.fail(f"no reference snapshot {reference}; made one in {tmp_path / (name + '.svg')}"
                    "; run UPDATE_SNAPSHOTS=1 pytest tests/tui to accept it")
    expected = reference.read_text(encoding="utf-8")
    if svg != expected:
        actual = tmp_path / f"{name}.actual.svg"
        actual.write_text(svg, encoding="utf-8")
        diff = "\n".join(difflib.unified_diff(screen_text(expected), screen_text(svg),
                                              "reference", "now", lineterm="", n=1))
        pytest.fail(f"screen {name!r} differs from {reference} (now: {actual}; accept with "
                    f"UPDATE_SNAPSHOTS=1):\n{diff or '(same text, different styles)'}")
