"""Widgets of the app: a folders-only tree (the X-ray view is tui.xray.XrayView)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

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
