"""The layer rule, checked on every module of `app/`: a module imports only from its own layer or the layers below.

HTTP -> GraphQL layer -> domain (rules, invariants, writes, validation, auth, loading, payers) -> store -> core (FHIR
model, errors, settings, metrics). Only the GraphQL layer and the HTTP app above it may import Strawberry or graphql-core.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"

# Bottom first. A module belongs to the first layer with a prefix matching its dotted name.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("app.fhir", "app.errors", "app.settings", "app.metrics")),
    ("store", ("app.store", "app.embedded")),
    (
        "domain",
        (
            "app.rules",
            "app.invariants",
            "app.billing",
            "app.payers",
            "app.validation",
            "app.writes",
            "app.load",
            "app.demo",
            "app.auth",
            "app.capability",
            "app.payments",
            "app.elements",
            "app.bundles",
            "app.documents",
            "app.events",
            "app.outbound",
            "app.hooks",
            "app.clearinghouse",
            "app.dispatch",
        ),
    ),
    ("graphql", ("app.graphql",)),
    ("http", ("app.http", "app.idempotency", "app.caching", "app.explorer", "app.cli", "app.__main__")),
]
GRAPHQL_LIBRARIES = ("strawberry", "graphql")
MAY_USE_GRAPHQL = {"graphql", "http"}


def _module(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _rank(module: str) -> tuple[int, str]:
    if module == "app":  # the package itself: a docstring, nothing else
        return 0, "core"
    for rank, (name, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank, name
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def _imports(path: Path) -> set[str]:
    """Every module the file imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "app":  # `from app import errors`
                found.update(f"app.{alias.name}" for alias in node.names)
    return found


MODULES = sorted(APP.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(APP.parent)))
def test_a_module_imports_only_from_its_layer_and_below(path: Path) -> None:
    module = _module(path)
    rank, layer = _rank(module)
    for imported in _imports(path):
        root = imported.split(".")[0]
        if imported.startswith("app.") and imported != "app":
            other_rank, other = _rank(imported)
            assert other_rank <= rank, f"{module} ({layer}) imports {imported} ({other}), a layer above it"
        elif root in GRAPHQL_LIBRARIES:
            assert layer in MAY_USE_GRAPHQL, f"{module} ({layer}) imports {imported}: only the GraphQL layer may"


def test_every_module_has_a_layer_and_a_docstring() -> None:
    for path in MODULES:
        _rank(_module(path))
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path.relative_to(APP.parent)} has no module docstring saying what it owns"
