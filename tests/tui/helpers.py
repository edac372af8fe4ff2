"""Pilot helpers and SVG snapshot comparison (no plugin needed).

References live in tests/tui/snapshots/NAME.svg. Regenerate them after an intended change with
``UPDATE_SNAPSHOTS=1 pytest tests/tui`` and look at the SVGs before committing them.
"""

from __future__ import annotations

import difflib
import html
import json
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


def manifest_digests(bundle: Path) -> dict[str, str]:
    """``{sha256: label}`` for every artifact file the bundle's manifest lists."""
    from runtime.contract import load_manifest

    digests = {}
    for entry in load_manifest(bundle).artifacts:
        for part in entry.all_files():
            digests[part.sha256] = f"sha256({part.path})".ljust(len(part.sha256), "_")
    return digests


def normalize(svg: str, digests: dict[str, str] | None = None) -> str:
    """Remove what varies between identical screens: the content-hash id rich puts on every
    class, and the artifact digests the bundle's manifest holds (each replaced by a label naming
    its file, so a digest shown on the wrong row, or one that is not the manifest's, still
    differs). Nothing else is masked: the manifest's build time is pinned by the fixtures."""
    svg = re.sub(r"terminal-\d+", "terminal", svg)
    for digest, label in (digests or {}).items():
        svg = svg.replace(digest, label)
    return svg


def screen_text(svg: str) -> list[str]:
    """Rough text lines of an SVG screenshot, for a readable diff."""
    lines: dict[str, list[str]] = {}
    for y, text in re.findall(r'<text[^>]*y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        lines.setdefault(y, []).append(html.unescape(text).replace("\xa0", " "))
    return ["".join(parts).rstrip() for _, parts in sorted(lines.items(), key=lambda i: float(i[0]))]


def assert_snapshot(app, name: str, tmp_path: Path, bundle: Path | None = None) -> None:
    """Compare the app's screen with tests/tui/snapshots/NAME.svg; ``bundle`` names the bundle
    whose manifest digests may be shown (they differ between library versions)."""
    svg = app.export_screenshot(title="Chest X-ray triage")
    compare_snapshot(svg, name, tmp_path, manifest_digests(bundle) if bundle else None)


def compare_snapshot(svg: str, name: str, tmp_path: Path,
                     digests: dict[str, str] | None = None) -> None:
    svg = normalize(svg, digests)
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
