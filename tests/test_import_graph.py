"""The package layering, read from the source (function-level imports included):

    core < data < models < text < metrics < classify < diffusion < cohorts < experiments < cli

A package imports only packages to its left, so there is no cycle; ``cxraug --help`` imports no
torch."""

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
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
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
