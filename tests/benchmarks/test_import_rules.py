"""benchmarks imports runtime and targets; never tui or textual.

The converters (and torch) are build-side: benchmarks may import them only lazily, inside the
functions named in LAZY_CONVERTERS: the FP32 baselines (they rebuild the model from its
checkpoint or model config: the timed one and the naive whole-process script) and the loaders of the labelled evaluation data (loading training/test data is build
work and lives in ``converters.data``).

The one arrow the other way: the build times its artifacts with the benchmarks' timing harness,
so that the build and the reports measure the same way (one harness, not two). The converters may
import exactly the modules in HARNESS (``benchmarks.measure``: the loops; ``benchmarks.runners``:
how each engine is driven), and those must import neither torch nor the converters, so that
there is no import cycle and the harness stays usable on a machine without the build tools."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
CONVERTERS = BENCHMARKS.parent / "converters"
HARNESS = {"benchmarks.measure", "benchmarks.runners"}
NEVER = {"tui", "textual"}
BASELINE_ONLY = {"torch", "converters"}
LAZY_CONVERTERS = {"measure_pytorch", "_reference_model", "_measure_reference", "_test_split",
                   "_default_images", "naive_probabilities"}


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


def _module_names(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, [node.module] + [f"{node.module}.{a.name}" for a in node.names]


def test_converters_import_only_the_timing_harness_of_benchmarks():
    used, offenders = set(), []
    for path in sorted(CONVERTERS.rglob("*.py")):
        for node, names in _module_names(ast.parse(path.read_text(encoding="utf-8"))):
            first = names[0]
            if first == "benchmarks" or first.startswith("benchmarks."):
                if first in HARNESS:
                    used.add(first)
                else:
                    offenders.append(f"{path.name}:{node.lineno} {first}")
    assert offenders == []
    assert used == HARNESS  # the build does use the harness (no second timing loop)


def test_the_harness_imports_neither_torch_nor_the_converters():
    code = ("import sys, benchmarks.measure, benchmarks.runners; print(sorted(m for m in "
            "('torch', 'converters', 'textual', 'tui') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=BENCHMARKS.parent, capture_output=True,
                         text=True, timeout=120, check=True).stdout.strip()
    assert out == "[]"
