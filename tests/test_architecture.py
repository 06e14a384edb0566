"""The code's shape: no import cycle inside lipctr or inside experiments, lipctr never importing
experiments, no module of either over 300 lines.

Imports are read from every module's source with `ast`, function-local ones included (a cycle
hidden inside a function is still a cycle). `from lipctr.a import b` counts as an import of the
module lipctr.a.b when that is a module, else of lipctr.a; a module's imports of its own
ancestor packages by a deeper path (`from lipctr.data.config import X` in lipctr/data/...) count
only as the deeper module, as Python initialises the ancestors first anyway.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "lipctr"
PACKAGES = ("lipctr", "experiments")
MAX_LINES = 300


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def all_modules() -> dict[str, Path]:
    """Every module of lipctr and experiments."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path], root: Path = ROOT) -> set[str]:
    """The modules of `modules` that `path` imports anywhere in its body."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(n for n in names if n in modules and n != here)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_function_local_cycle(tmp_path):
    pkg = tmp_path / "lipctr"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from lipctr.sub.b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("import lipctr.sub.a\n")
    modules = {module_name(p, tmp_path): p for p in sorted(pkg.rglob("*.py"))}
    graph = {name: imported_modules(path, modules, tmp_path) for name, path in modules.items()}
    assert graph["lipctr.c"] == {"lipctr.sub.a"}
    assert find_cycle(graph) == ["lipctr.sub.a", "lipctr.sub.b", "lipctr.sub.a"]
    graph["lipctr.sub.b"] = set()
    assert find_cycle(graph) is None


def test_no_import_cycle_in_lipctr_or_experiments():
    modules = all_modules()
    graph = {name: imported_modules(path, modules) for name, path in modules.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_library_never_imports_experiments():
    modules = all_modules()
    wrong = {name: sorted(m for m in imported_modules(path, modules) if m.startswith("experiments"))
             for name, path in library_modules().items()}
    assert not {k: v for k, v in wrong.items() if v}


@pytest.mark.parametrize("name", sorted(all_modules()))
def test_module_is_at_most_300_lines(name):
    lines = all_modules()[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines (> {MAX_LINES}): split it along its jobs"
