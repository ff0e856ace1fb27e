"""The package's import graph: no cycles, and each room imports only the rooms below it.

docs/architecture.md draws the same map. An import only for type checking is an arrow too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "streamq"

# Each room, and the rooms it may import (besides itself). The CLI and the package root are
# the top floor: they may import anything.
ROOMS = {
    "core": set(),
    "responses": {"core"},
    "client": {"core", "responses"},
    "sync": {"core", "responses", "client"},
    "webhooks": {"core", "responses"},
    "worker": {"core", "responses", "admin", "webhooks"},
    "admin": {"core", "client", "webhooks"},
    "gateway": {"core", "responses", "client", "admin"},
    "dev": {"core", "responses", "client", "worker", "gateway", "admin", "cli", "webhooks"},
    "cli": {"core", "responses", "client", "worker", "gateway", "admin", "dev", "webhooks"},
    "root": {
        *("core", "responses", "client", "sync", "worker", "gateway", "admin", "dev", "cli"),
        "webhooks",
    },
}
CLIENT_MODULES = {"streamq.client", "streamq.job", "streamq.multiplexer"}
CLI_MODULES = {"streamq.cli", "streamq.terminal", "streamq.__main__"}
ROOT_MODULES = {"streamq"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    if module in CLIENT_MODULES:
        return "client"
    if module in CLI_MODULES:
        return "cli"
    if module in ROOT_MODULES:
        return "root"
    parts = module.split(".")
    assert len(parts) > 1, f"{module} is in no room"
    assert parts[1] in ROOMS, f"{module} is in no room"
    return parts[1]


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> Iterator[str]:
    """The streamq modules ``path`` imports (at any depth of the file, type checking too)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in known:
                yield name
                break  # `from x import y`: y if it is a module, else x


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imports(path, known)) - {name} for name, path in found.items()}


def test_every_module_is_in_a_room() -> None:
    """A new module lands in one of the rooms docs/architecture.md names."""
    for name in modules():
        room(name)


def test_no_import_cycles() -> None:
    """No module reaches itself through its imports (package roots re-exporting aside)."""
    edges = graph()
    # A package's __init__ re-exports what lives inside it: those arrows point down, and a
    # module importing a sibling through the package would be a cycle we do want to see.
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt.startswith(node + "."):
                continue  # a package importing its own modules
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    "lower", ["core", "client", "sync", "worker", "admin", "gateway", "webhooks"]
)
def test_rooms_import_only_rooms_below(lower: str) -> None:
    """The core imports no other room; the client side never the worker or the gateway; ..."""
    edges = graph()
    wrong = [
        f"{name} -> {target}"
        for name, targets in edges.items()
        if room(name) == lower
        for target in targets
        if room(target) != lower and room(target) not in ROOMS[lower]
    ]
    assert not wrong, f"{lower} imports rooms it must not:\n" + "\n".join(sorted(wrong))


def test_no_private_names_cross_modules() -> None:
    """No module takes a private name (`_x`) from another module of streamq."""
    wrong = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("streamq")
            ):
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and node.module != name:
                        imported = f"{node.module}.{alias.name}"
                        if imported not in modules():  # a private module is fine, a name not
                            wrong.append(f"{name}: from {node.module} import {alias.name}")
    assert not wrong, "\n".join(wrong)
