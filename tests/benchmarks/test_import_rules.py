"""benchmarks imports runtime and targets; never tui or textual.

The converters (and torch) are build-side: benchmarks may import them only lazily, inside the
functions named in LAZY_CONVERTERS: the PyTorch FP32 baseline (it rebuilds the model from its
checkpoint) and the loaders of the labelled evaluation data (loading training/test data is build
work and lives in ``converters.datasets``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
NEVER = {"tui", "textual"}
BASELINE_ONLY = {"torch", "converters"}
LAZY_CONVERTERS = {"measure_pytorch", "_test_split", "_default_images"}


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, [node.module.split(".")[0]]


def test_torch_and_converters_only_lazily_in_the_named_functions():
    offenders = []
    for path in sorted(BENCHMARKS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and fn.name in LAZY_CONVERTERS:
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
