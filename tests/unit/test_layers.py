"""The rooms and which way imports may point (ARCHITECTURE.md): hubsync -> actors -> scheduler,
crm, events; scheduler is pure; crm and events know nothing of actors or hubsync; no cycles.

Read from the source with ``ast`` (nothing is imported), counting imports inside functions too:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("events", "scheduler", "crm", "actors", "hubsync", "bench")

# package -> the project packages (or single modules) it may import
ALLOWED: dict[str, set[str]] = {
    "scheduler": set(),
    # a sealed token is bound to its fingerprint; HubSpot's numbers: two leaf modules
    "events": {"crm.tokens", "crm.plans"},
    "crm": {"scheduler"},
    "actors": {"events", "scheduler", "crm"},
    "hubsync": {"events", "scheduler", "crm", "actors"},
    "bench": {"events", "scheduler", "crm", "actors", "hubsync"},
}


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _imports(module: str, path: Path) -> set[str]:
    """The project modules one module imports (absolute and relative forms)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


GRAPH = {module: _imports(module, path) for module, path in _modules()}


def _resolve(name: str) -> str | None:
    """The module a dotted import name refers to (``events.model.encode`` -> ``events.model``)."""
    while name and name not in GRAPH:
        name = name.rpartition(".")[0]
    return name or None


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_rooms_below_it(package: str) -> None:
    wrong = sorted(
        f"{module} imports {name}"
        for module, names in GRAPH.items()
        if module.split(".")[0] == package
        for name in names
        if not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED[package] | {package})
    )
    assert not wrong, "\n".join(wrong)


def test_no_module_level_cycles() -> None:
    edges = {
        module: {
            target
            for name in names
            if (target := _resolve(name)) is not None
            and target != module
            # a package's __init__ re-exporting its own modules is not a cycle of meaning
            and not module.startswith(target + ".")
            and not target.startswith(module + ".")
        }
        for module, names in GRAPH.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_check_sees_the_imports_it_judges() -> None:
    # A check that read no imports would pass anything: make sure it reads real ones.
    assert "events.model" in GRAPH["events.streams"] or any(
        n.startswith("events.model") for n in GRAPH["events.streams"]
    )
    assert any(n.startswith("actors.") for n in GRAPH["actors.shells"])
