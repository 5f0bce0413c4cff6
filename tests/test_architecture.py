"""The tree's architecture as checks: no import cycles (lazy imports included), layers only import
downwards, the three subsystems never import one another, and modules and functions stay small
enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .helpers import REPO

PACKAGES = ("schemas", "tokenizers_impl", "pipeline", "jobs", "infra")
SUBSYSTEMS = ("pipeline.tokenize", "pipeline.loader", "pipeline.analytics", "pipeline.export")
# What each layer may import from the project (itself included).
ALLOWED = {
    "schemas": ("schemas",),
    "tokenizers_impl": ("tokenizers_impl",),
    "pipeline": ("pipeline", "schemas", "tokenizers_impl"),
    "infra": ("infra",),
    "jobs": ("jobs", "pipeline", "schemas", "tokenizers_impl"),
}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Project modules a module imports anywhere in its body (function-level imports too); an
    imported name that is a submodule counts as that submodule."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[
                    : len(name.split(".")) - node.level + (1 if is_package else 0)
                ]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                targets.add(sub if sub in MODULES else module)
    return {t for t in targets if t in MODULES and t != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_the_project():
    assert len(MODULES) > 60
    assert "pipeline.tokenize.engine" in GRAPH["jobs.cmd_run"]  # a function-level import
    assert "pipeline.output" in GRAPH["pipeline.tokenize.engine"]


def test_no_import_cycle():
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_layers_only_import_downwards():
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if target.split(".")[0] not in ALLOWED[name.split(".")[0]]
    ]
    assert wrong == []


@pytest.mark.parametrize("subsystem", SUBSYSTEMS)
def test_a_subsystem_never_imports_another(subsystem):
    others = [s for s in SUBSYSTEMS if s != subsystem]
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name == subsystem or name.startswith(subsystem + ".")
        for target in targets
        if any(target == o or target.startswith(o + ".") for o in others)
    ]
    assert wrong == []


def test_modules_and_functions_stay_small():
    too_long = []
    for name, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = node.end_lineno - node.lineno + 1
            hot = "hot loop" in (ast.get_docstring(node) or "").lower()
            if lines > MAX_FUNCTION_LINES and not hot:
                too_long.append(f"function {name}.{node.name}: {lines} lines")
    assert too_long == []


def test_no_reference_to_files_the_repository_does_not_have():
    cited = []
    for path in [*MODULES.values(), *(REPO / "docs").glob("*.md"), REPO / "README.md"]:
        text = path.read_text(encoding="utf-8")
        if "ALGORITHMS.md" in text or "DESIGN.md" in text or "STYLE.md" in text:
            cited.append(str(path.relative_to(REPO)))
    assert cited == []
