"""The package layering, read from the source (function-level imports included):

    core < data < models < text < metrics < classify < diffusion < cohorts < experiments < cli

A package imports only packages to its left, so there is no cycle between packages; inside a
package no two files import each other either (directly or through others, lazy imports
included); ``cxraug --help`` imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cxraug"
LAYERS = ["core", "data", "models", "text", "metrics", "classify", "diffusion", "cohorts", "experiments", "cli"]


def _imported_modules(path: Path, root: Path) -> list[tuple[str, int]]:
    """Absolute ``cxraug.*`` modules imported anywhere in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    parts = path.relative_to(root.parent).with_suffix("").parts
    package = parts[:-1]  # a module and a package's __init__ both resolve against their folder
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((name, node.lineno))
    return [(m, line) for m, line in out if m == "cxraug" or m.startswith("cxraug.")]


def package_edges(root: Path = PKG) -> dict[tuple[str, str], list[str]]:
    """``(from, to) -> ["file:line", ...]`` for every import between two cxraug packages."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if len(rel.parts) == 1:
            continue  # cxraug/__init__.py: the version only
        src = rel.parts[0]
        for mod, line in _imported_modules(path, root):
            dst = mod.split(".")[1] if "." in mod else ""
            if dst and dst != src:
                edges.setdefault((src, dst), []).append(f"{rel}:{line}")
    return edges


def test_every_package_has_a_layer():
    packages = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS), "add the new package to LAYERS (and the README's layout section)"
    assert not [p.name for p in PKG.glob("*.py") if p.name != "__init__.py"], \
        "top-level modules belong in a package (the base layer is cxraug.core)"


def test_packages_import_only_lower_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = {f"{a} -> {b}": where for (a, b), where in package_edges().items()
              if b in rank and rank[b] >= rank[a]}
    assert not upward, f"imports against the layering: {upward}"


def test_layer_check_sees_function_level_imports(tmp_path):
    """The checker must see an import hidden inside a function (the way cycles used to hide)."""
    root = tmp_path / "cxraug"
    (root / "core").mkdir(parents=True)
    (root / "core" / "probe.py").write_text("def f():\n    from cxraug.cli import main\n    from ..data import x\n")
    edges = package_edges(root)
    assert edges[("core", "cli")] == ["core/probe.py:2"] and edges[("core", "data")] == ["core/probe.py:3"]


def test_help_imports_no_torch():
    code = "import sys, cxraug.cli.main; print(sorted(m for m in ('torch', 'timm', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_over_400_lines(layer):
    long = {str(p.relative_to(PKG)): n for p in (PKG / layer).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 420}
    assert not long, f"split these by concern: {long}"


def test_function_level_imports_only_in_the_cli():
    """Below the CLI, cxraug modules import each other at module level (no cycles to hide); a
    function-level import must say why it is lazy (a ``# lazy: ...`` comment on the line above)."""
    hidden = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "cli":
            continue  # commands import their packages when they run: `cxraug --help` stays fast
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if (isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("cxraug")
                            and "# lazy:" not in lines[sub.lineno - 2]):
                        hidden.append(f"{rel}:{sub.lineno}")
    assert not hidden, f"move these imports to the top of their module: {hidden}"


# ------------------------------------------------------------------ file-level import circles

def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_edges(root: Path = PKG) -> dict[str, dict[str, int]]:
    """``module -> {imported cxraug module: line}`` for every file under ``root``: imports at
    module level, inside functions and under ``if TYPE_CHECKING`` all count. ``from pkg import
    name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    edges: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out = edges.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            for t in targets:
                while t and t not in files:  # `import cxraug.data.labels as L` etc.
                    t = t.rpartition(".")[0]
                if t and t != name:
                    out.setdefault(t, node.lineno)
    return edges


def import_cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


def test_no_file_level_import_circle():
    """No two cxraug modules import each other, directly or through others (a lazy or
    TYPE_CHECKING import included): each file can be read knowing only the ones it imports."""
    edges = module_edges()
    cycles = import_cycles(edges)
    where = [" -> ".join(f"{a}:{edges[a][b]}" for a, b in zip(c, c[1:] + c[:1]) if b in edges[a])
             for c in cycles]
    assert not cycles, f"import circles (module:line of the import): {where}"


def test_cycle_check_sees_lazy_and_type_checking_imports(tmp_path):
    root = tmp_path / "cxraug"
    (root / "data").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "data" / "__init__.py").write_text("")
    (root / "data" / "a.py").write_text("from cxraug.data.b import x\n")
    (root / "data" / "b.py").write_text("def f():\n    from . import a\n")
    (root / "data" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                        "    from cxraug.data import d\n")
    (root / "data" / "d.py").write_text("import cxraug.data.c as c\nfrom cxraug.data import a\n")
    edges = module_edges(root)
    assert edges["cxraug.data.b"] == {"cxraug.data.a": 2}
    assert edges["cxraug.data.c"] == {"cxraug.data.d": 3}
    assert import_cycles(edges) == [["cxraug.data.a", "cxraug.data.b"], ["cxraug.data.c", "cxraug.data.d"]]
