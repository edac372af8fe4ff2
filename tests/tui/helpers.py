"""Pilot helpers, and the app the snapshot tests photograph (pytest-textual-snapshot).

Snapshots live in tests/tui/__snapshots__/<test file>/<test>.svg (syrupy). Regenerate them after
an intended change with ``pytest tests/tui --snapshot-update`` and look at the SVGs before
committing them (a failing run writes snapshot_report.html with both pictures side by side).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

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


async def bundle_screen_text(pilot, app) -> str:
    """The bundle screen's text for the chosen bundle, once its check has run (one line)."""
    import os

    from rich.console import Console

    await pilot.press("3")
    await wait_until(pilot, lambda: "verified" in text_of(app.screen.query_one("#verify")))
    console = Console(width=200, record=True, file=open(os.devnull, "w"))
    console.print(app.screen.render_choice(app.choice))
    return " ".join(console.export_text().split())


def manifest_digests(bundle: Path) -> dict[str, str]:
    """``{sha256: label}`` for every artifact file the bundle's manifest lists."""
    from runtime.contract.manifest import load_manifest

    digests = {}
    for entry in load_manifest(bundle).artifacts:
        for part in entry.all_files():
            digests[part.sha256] = f"sha256({part.path})".ljust(len(part.sha256), "_")
    return digests


def normalize(svg: str, digests: dict[str, str] | None = None) -> str:
    """Remove what varies between identical screens: the artifact digests the bundle's manifest
    holds (they differ between library versions; each is replaced by a label naming its file, so
    a digest shown on the wrong row, or one that is not the manifest's, still differs), and the
    content-hash id rich puts on every class (it hashes the unmasked text). Nothing else is
    masked: the manifest's build time is pinned by the fixtures, timings by ``stable_timings``."""
    svg = re.sub(r"terminal-\d+", "terminal", svg)
    for digest, label in (digests or {}).items():
        svg = svg.replace(digest, label)
    return svg


def snapshot_app(bundle: Path | None = None, **kwargs):
    """A CxrApp whose screenshots mask ``bundle``'s manifest digests (see :func:`normalize`)."""
    from tui.app import CxrApp

    digests = manifest_digests(bundle) if bundle else {}

    class SnapshotApp(CxrApp):
        def export_screenshot(self, *, title: str | None = None, simplify: bool = False) -> str:
            return normalize(super().export_screenshot(title=title, simplify=simplify), digests)

    return SnapshotApp(**kwargs)
