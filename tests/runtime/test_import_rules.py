"""The runtime never imports torch or textual (not even lazily), nor converters/benchmarks/tui."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {"torch", "textual", "converters", "benchmarks", "tui"}
RUNTIME = Path(__file__).resolve().parents[2] / "runtime"


def test_no_forbidden_imports_anywhere_in_runtime_source():
    offenders = []
    for path in sorted(RUNTIME.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                names = [a.value for a in node.args if isinstance(a, ast.Constant)]
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
