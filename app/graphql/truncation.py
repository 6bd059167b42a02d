"""Lists that stop before all their matches, reported as the response's `extensions.truncated`."""

from __future__ import annotations

from typing import Any

from strawberry.extensions import SchemaExtension

KEY = "truncated"


def _order(path: list[Any]) -> list[tuple[bool, int, str]]:
    """Paths in one order on both execution paths (which run resolvers in different orders)."""
    return [(isinstance(k, str), k if isinstance(k, int) else 0, k if isinstance(k, str) else "") for k in path]


def notes(recorded: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    """`{path, returned, more: true}` or `{path, returned, total}` per list the Context noted, sorted by path.

    A path whose `as_list()` is None belongs to an abandoned compiled attempt (the reference path ran it again).
    """
    out = []
    for path, note in recorded:
        where = path.as_list() if path is not None else None
        if where is not None:
            out.append({"path": where, **note})
    return sorted(out, key=lambda n: _order(n["path"]))


class Truncation(SchemaExtension):
    """Adds `extensions.truncated` when a List, at the root or reverse, returned fewer rows than match."""

    def get_results(self) -> dict[str, Any]:
        recorded = getattr(self.execution_context.context, "truncated", None)
        found = notes(recorded) if recorded else []
        return {KEY: found} if found else {}
