"""The project's import graph, read statically from the source: no circles, and cores free of I/O.

Every import counts, wherever it stands: one inside a function that only postpones a circular import is
still a circle. Only imports between the project's own modules make edges. Importing ``a.b.c`` also runs
the package ``a.b`` first, but that is no edge: a package that imports its own modules is no circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("nodeapps", "experiments", "topologies", "benchmarks")

# The sans-IO cores (docs/esp.md, docs/mobility.md, docs/vcm-runtime.md, docs/links.md): bytes, events and
# ``now`` in; bytes, events and timers out.
CORE_PACKAGES = ("nodeapps.esp", "nodeapps.mobility", "nodeapps.vcm")
CORE_MODULES = ("nodeapps.ipv6", "nodeapps.probe.core", "nodeapps.probe.packet", "nodeapps.linkemu.model")
# What a core must not reach, directly or through the project's other modules.
IO_LIBRARIES = ("time", "socket", "select", "selectors", "asyncio", "subprocess", "mininet")
IO_SHELLS = ("nodeapps.node", "nodeapps.runtime", "nodeapps.roles", "nodeapps.cli", "nodeapps.probe.__main__",
             "nodeapps.linkemu.emulator", "nodeapps.linkemu.netem", "experiments", "topologies", "benchmarks")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under the packages."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _own_module(name: str, modules) -> str | None:
    """The project module that ``name`` lives in (``a.b.f`` -> ``a.b``), or None for another library."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules) -> set[str]:
    """Every module ``module`` imports, anywhere in its source, resolved as Python does: ``from a import b``
    is the module ``a.b`` when there is one, else the name ``b`` out of ``a``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            names.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in node.names)
    return names


def import_graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between the project's modules, other libraries' modules each one imports)."""
    edges, external = {}, {}
    for module, path in modules.items():
        names = imports_of(module, path, modules)
        edges[module] = {_own_module(n, modules) for n in names} - {None, module}
        external[module] = {n for n in names if _own_module(n, modules) is None}
    return edges, external


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _describe(component: list[str], edges) -> str:
    return "; ".join(f"{m} -> {', '.join(sorted(edges[m] & set(component)))}" for m in component)


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for w in edges.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


MODULES = module_files(ROOT)
EDGES, EXTERNAL = import_graph(MODULES)
CORES = sorted(m for m in MODULES if _within(m, CORE_PACKAGES) or m in CORE_MODULES)


def test_the_graph_sees_the_imports_it_must_judge():
    assert len(MODULES) > 80 and {"nodeapps.node", "nodeapps.runtime.daemon", "experiments.records"} <= set(MODULES)
    assert {"nodeapps.runtime.daemon", "nodeapps.roles.mobile_node"} <= EDGES["nodeapps.node"]
    assert "nodeapps.mobility.messages" in EDGES["nodeapps.roles.common"]   # `from pkg import module`
    assert "time" in EXTERNAL["nodeapps.runtime.daemon"]
    assert len(CORES) >= 30


def test_no_import_circles():
    found = cycles(EDGES)
    assert not found, "import circles: " + " | ".join(_describe(c, EDGES) for c in found)


@pytest.mark.parametrize("core", CORES)
def test_core_reaches_no_io(core):
    reached = reachable(core, EDGES)
    shells = sorted(m for m in reached if _within(m, IO_SHELLS))
    assert not shells, f"{core} imports I/O shells: {shells}"
    io = sorted(f"{lib} (via {m})" for m in reached for lib in EXTERNAL[m] if _within(lib, IO_LIBRARIES))
    assert not io, f"{core} imports I/O: {io}"


def test_a_circle_postponed_into_a_function_is_still_found(tmp_path):
    pkg = tmp_path / "nodeapps"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from nodeapps.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n    return g\n")
    (pkg / "c.py").write_text("import nodeapps.a\nimport time\n")
    (pkg / "d.py").write_text("from nodeapps import a\n")
    edges, external = import_graph(module_files(tmp_path, ("nodeapps",)))
    assert cycles(edges) == [["nodeapps.a", "nodeapps.c", "nodeapps.sub.b"]]
    assert edges["nodeapps.d"] == {"nodeapps.a"} and "time" in external["nodeapps.c"]
    assert "nodeapps.c" in reachable("nodeapps.d", edges)
