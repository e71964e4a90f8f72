"""The layering the folders promise, checked on the source: no import cycles, engines that never import each
other, and query understanding and scoring that never reach up into the service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("kb_service", "query_understanding", "scoring")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports, at module level or inside functions alike."""
    modules = {_module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            imported.update(t for t in targets if t in modules and t != name)
        graph[name] = imported
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_import_graph_has_no_cycles():
    graph = _import_graph()
    cycles = sorted(name for name in graph if name in _reachable(graph, name))
    assert cycles == []


@pytest.mark.parametrize(("engine", "other"), [("kb_service.engines.elastic", "kb_service.engines.embedded"),
                                               ("kb_service.engines.embedded", "kb_service.engines.elastic")])
def test_an_engine_never_imports_another(engine, other):
    graph = _import_graph()
    reached = set().union(*(_reachable(graph, name) for name in graph if name.startswith(engine)))
    assert sorted(name for name in reached if name.startswith(other)) == []


@pytest.mark.parametrize("package", ["query_understanding", "scoring"])
def test_lower_layers_never_import_the_service(package):
    graph = _import_graph()
    assert sorted(f"{name} → {target}" for name, targets in graph.items() if name.startswith(package)
                  for target in targets if target.startswith("kb_service")) == []
