"""The packages' layering, from their import statements (module level and inside functions):

    karyoflow  <  infra  <  db  <  workers  <  api  <  service

each may import only packages to its left (and itself): the core knows nothing of the service;
the runtime config (infra) and the database layer know neither the workers nor the API; no
package imports another in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("karyoflow", "infra", "db", "workers", "api", "service")


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module a file imports; relative imports resolved against its
    package."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def import_graph() -> dict[str, dict[str, set[str]]]:
    """{top-level package: {imported top-level package: {importing file, ...}}}"""
    graph: dict[str, dict[str, set[str]]] = {layer: {} for layer in LAYERS}
    for layer in LAYERS:
        for path in (REPO / layer).rglob("*.py"):
            relative = path.relative_to(REPO)
            package = ".".join(relative.parent.parts)
            for name in imported_modules(path, package):
                top = name.split(".")[0]
                if top in LAYERS and top != layer:
                    graph[layer].setdefault(top, set()).add(str(relative))
    return graph


def test_each_package_imports_only_the_layers_below_it() -> None:
    graph = import_graph()
    assert graph["api"].keys() >= {"karyoflow", "infra", "db", "workers"}  # the walk sees real imports
    upward = {
        f"{layer} -> {imported}": sorted(files)
        for layer, imports in graph.items()
        for imported, files in imports.items()
        if LAYERS.index(imported) > LAYERS.index(layer)
    }
    assert not upward, upward


def test_no_import_cycles_between_packages() -> None:
    graph = import_graph()
    on_path: list[str] = []
    done: set[str] = set()

    def visit(package: str) -> None:
        if package in on_path:
            cycle = on_path[on_path.index(package) :] + [package]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if package in done:
            return
        on_path.append(package)
        for imported in graph[package]:
            visit(imported)
        on_path.pop()
        done.add(package)

    for package in LAYERS:
        visit(package)


def test_monitoring_asks_the_broker_not_the_worker_code() -> None:
    imported = imported_modules(REPO / "api" / "monitoring.py", "api")
    assert not {name for name in imported if name.split(".")[0] == "workers"}


def test_the_walk_resolves_relative_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from . import sibling\nfrom ..up import thing\nimport os.path\n")
    assert imported_modules(module, "service.client") == {"service.client", "service.up", "os.path"}
