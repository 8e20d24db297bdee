"""The package layers: workloads/ at the bottom (its run_dir owns every path), cluster/ and analysis/ on it,
orchestrator/ on top; no
package imports one above it, and no module imports itself back through others (imports inside functions
count too: they are how circles used to hide).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workloads", "cluster", "analysis", "orchestrator")
# package -> the packages it may import
ALLOWED = {"workloads": set(), "cluster": {"workloads"}, "analysis": {"workloads"},
           "orchestrator": {"workloads", "cluster", "analysis"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """Internal modules `path` imports anywhere in it (`from a.b import c` counts a.b.c when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {i for i in imports(p, set(mods)) if i in mods and i != m} for m, p in mods.items()}


def test_no_package_imports_one_above_it() -> None:
    bad = [(m, i) for m, deps in graph().items() for i in deps
           if i.split(".")[0] != m.split(".")[0] and i.split(".")[0] not in ALLOWED[m.split(".")[0]]]
    assert not bad, bad


def test_no_module_imports_itself_back() -> None:
    g = graph()
    # a package's __init__ importing its own modules, and those importing siblings through the package, is
    # the package's public face, not a circle: edges into a package __init__ from inside it are left out
    edges = {m: {i for i in deps if not (m.startswith(i + ".") and i in g)} for m, deps in g.items()}
    index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, circles


@pytest.mark.parametrize("module", ["workloads.config"])
def test_the_config_module_imports_at_the_top(module: str) -> None:
    tree = ast.parse(modules()[module].read_text())
    inner = [n for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f)
             if isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] in PACKAGES]
    assert not inner, [n.module for n in inner]
