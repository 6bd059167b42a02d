"""Lists that stop before all their matches, reported as the response's `extensions.truncated`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.types.nodes import SelectedField, Selection

from app.billing import CUT

KEY = "truncated"


class _Under:
    """The response path of `key` inside a resolver field's answer (known once the operation has run)."""

    __slots__ = ("base", "key")

    def __init__(self, base: Any, key: str) -> None:
        self.base, self.key = base, key

    def as_list(self) -> list[Any] | None:
        found = self.base.as_list()
        return None if found is None else [*found, self.key]


def _included(selection: Selection) -> bool:
    directives = getattr(selection, "directives", None) or {}
    return not directives.get("skip", {}).get("if", False) and directives.get("include", {}).get("if", True)


def _response_keys(selected: list[Selection], name: str) -> list[str]:
    """The response keys (aliases or the name) under which the fields in `selected` select their field `name`."""
    keys: dict[str, None] = {}

    def walk(selections: list[Selection]) -> None:
        for s in selections:
            if not _included(s):
                continue
            if isinstance(s, SelectedField):
                if s.name == name:
                    keys[s.alias or s.name] = None
            else:  # an inline fragment or a fragment spread
                walk(s.selections)

    for field in selected:
        walk(field.selections)
    return list(keys)


def note_view_lists(context: Any, path: Any, selected: list[Selection], view: Mapping[str, Any]) -> None:
    """A billing view's lists cut to their first rows (app.billing's `CUT`), noted at every place the operation
    selects them: `selected` is the view field's own selection, `path` its response path."""
    for name, (returned, total) in view.get(CUT, {}).items():
        for key in _response_keys(selected, name):
            context.note(_Under(path, key), returned, total)


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
    """Adds `extensions.truncated` when a List (at the root or reverse) or a billing view's list returned fewer rows
    than there are."""

    def get_results(self) -> dict[str, Any]:
        recorded = getattr(self.execution_context.context, "truncated", None)
        found = notes(recorded) if recorded else []
        return {KEY: found} if found else {}
