"""benchmarks imports runtime and targets; torch (and the converters' checkpoint loader that
needs it) only lazily, inside the PyTorch baseline's worker function; never tui or textual."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
NEVER = {"tui", "textual"}
BASELINE_ONLY = {"torch", "converters"}


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, [node.module.split(".")[0]]


def test_torch_and_converters_only_inside_the_baseline_worker():
    offenders = []
    for path in sorted(BENCHMARKS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and fn.name == "measure_pytorch":
                allowed |= {id(n) for n in ast.walk(fn)}
        for node, names in _imports(tree):
            for name in names:
                if name in NEVER or (name in BASELINE_ONLY and id(node) not in allowed):
                    offenders.append(f"{path.name}:{node.lineno} {name}")
    assert offenders == []


def test_importing_the_cli_loads_no_torch():
    code = ("import sys, benchmarks.__main__, benchmarks.suite, benchmarks.report, "
            "benchmarks.worker; print(sorted(m for m in ('torch', 'converters', 'textual') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=BENCHMARKS.parent, capture_output=True,
                         text=True, timeout=120, check=True).stdout.strip()
    assert out == "[]"
