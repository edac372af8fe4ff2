"""The rooms of ``runtime/`` and the arrows between them (docs/architecture.md, "Inside runtime/").

Every import counts, lazy ones inside functions too (a lazy import is still an arrow); only imports
under ``if TYPE_CHECKING:`` are left out, since they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "runtime"

#: room -> the rooms it may import (besides itself); a room is a sub-package or a top-level module
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "contract": set(),
    "engines": {"contract"},
    "imaging": {"errors"},
    "preprocess": {"contract"},
    "judging": {"contract", "errors", "imaging"},
    "bundle": {"contract", "engines", "errors", "judging", "preprocess"},
    "running": {"bundle", "contract", "engines", "errors", "imaging", "judging", "preprocess"},
    "clinic": {"bundle", "contract", "errors", "imaging", "running"},
    "serve": {"bundle", "contract", "engines", "errors", "imaging", "judging", "preprocess",
              "running"},
    "pacs": {"bundle", "clinic", "contract", "errors", "imaging", "judging", "running"},
    "__main__": {"bundle", "clinic", "contract", "engines", "errors", "imaging", "judging",
                 "pacs", "preprocess", "running", "serve"},
}
#: what an edge box needs to triage a folder: every room but these
NOT_FOR_THE_EDGE = {"serve", "clinic", "pacs"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def runtime_imports(path: Path) -> set[str]:
    """The runtime modules that ``path`` imports (module-level and lazy)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("runtime.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "runtime":
                found |= {f"runtime.{a.name}" for a in node.names}
            elif node.module.startswith("runtime."):
                for alias in node.names:  # "from runtime.x import submodule" names a module
                    candidate = f"{node.module}.{alias.name}"
                    is_module = (REPO / Path(*candidate.split("."))).with_suffix(".py").is_file()
                    found.add(candidate if is_module else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): runtime_imports(p) for p in sorted(RUNTIME.rglob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle_inside_runtime():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_arrow_is_one_the_architecture_allows():
    graph = import_graph()
    rooms = {room_of(m) for m in graph} - {"__init__"}
    assert rooms == set(MAY_IMPORT), "a room was added or removed: update MAY_IMPORT and the map"
    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                       if room_of(t) != room_of(m)
                       and room_of(t) not in MAY_IMPORT.get(room_of(m), set()))
    assert offenders == []


def test_package_inits_are_docstrings_only():
    """No re-exports: a package's __init__ importing its modules is how cycles come back."""
    for init in sorted(RUNTIME.rglob("__init__.py")):
        body = ast.parse(init.read_text(encoding="utf-8")).body
        assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body), init


def test_the_contract_loads_neither_opencv_nor_an_engine():
    code = ("import sys, runtime.contract.manifest, runtime.contract.formats; "
            "print(sorted(m for m in ('cv2', 'onnxruntime', 'openvino', 'PIL', 'pydicom') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    assert out == "[]"


def test_an_edge_box_triages_without_the_clinic_and_server_rooms():
    code = ("import sys, runtime.running.triage; "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('runtime.')}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    loaded = set(ast.literal_eval(out))
    assert loaded and not loaded & NOT_FOR_THE_EDGE


def test_evaluation_imports_nothing_of_the_kit():
    kit = {"runtime", "converters", "benchmarks", "tui", "targets"}
    for path in sorted((REPO / "evaluation").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & kit, path
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in kit, path
