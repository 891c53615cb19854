"""No import cycles among the project's own modules (issue 27).

The graph is read from the source with `ast`, not by importing anything: fast, deterministic, and it needs
no optional stack (mmcv) to be installed. An edge is a module-level import, i.e. one that runs when the
module is first imported (class bodies and `try`/`if` blocks included); an import inside a function, or
under `if TYPE_CHECKING:`, is no edge. `from pkg import name` is an edge to `pkg.name` when that is one of
our modules, to `pkg` otherwise.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cacim_core", "benchmarks", "tables", "figures")


def project_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted name -> file for every module inside a package (mmengine config files are not modules)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if not (path.parent / "__init__.py").is_file():
                continue
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets.update(
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            )
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as a path `[a, b, ..., a]`, or [] when there is none (iterative depth-first search)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path = [start], {start}
        pending = [iter(sorted(graph[start]))]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                done.add(path[-1])
                on_path.discard(path.pop())
                pending.pop()
            elif nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                pending.append(iter(sorted(graph[nxt])))
    return []


def test_no_import_cycles() -> None:
    modules = project_modules(ROOT, PACKAGES)
    assert {"cacim_core", "benchmarks.data", "tables.render", "figures.fig2"} <= set(modules)
    cycle = find_cycle(import_graph(modules))
    assert not cycle, "import cycle among module-level imports: " + " -> ".join(cycle)


def test_checker_finds_a_cycle_and_ignores_function_imports(tmp_path: Path) -> None:
    """The checker on a package made for it: a -> b -> (relative) c -> a is found; imports in a function
    or under TYPE_CHECKING are not edges."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    sources = {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "from . import c\n",
        "c.py": "import pkg.a\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.e\n",
        "e.py": "def f():\n    import pkg.d\n",
    }
    for file, text in sources.items():
        (pkg / file).write_text(text)
    graph = import_graph(project_modules(tmp_path, ("pkg",)))
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.a"},
        "pkg.d": set(),
        "pkg.e": set(),
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("")
    assert find_cycle(import_graph(project_modules(tmp_path, ("pkg",)))) == []
