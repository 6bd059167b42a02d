"""Runs a compiled plan level by level: every resolver field met on one level is awaited together."""

from __future__ import annotations

import asyncio
from inspect import isawaitable
from typing import Any

from graphql.execution.values import get_argument_values

from app.graphql.compiled.compiler import Fallback, Plan, ResolverField


class _ResolveInfo:
    """The part of graphql-core's GraphQLResolveInfo that Strawberry's resolver wrapper passes on.

    FinGate's resolvers read `info.context` and `info.path`, and a billing view its field's selection
    (`field_nodes`, `fragments`: made only when asked for, as one is made per root of every batched level);
    fields whose extensions or permissions might read more are not compiled.
    """

    __slots__ = ("context", "root_value", "operation", "variable_values", "schema", "path", "_fragments", "_field")

    def __init__(self, executor: Any, context: Any, root_value: Any) -> None:
        self.context = context
        self.root_value = root_value
        self.operation = executor.operation
        self.variable_values = executor.variable_values
        self.schema = executor.schema
        self._fragments = executor.fragments
        self.path: Any = None
        self._field: ResolverField | None = None

    @property
    def fragments(self) -> dict[str, Any]:
        """As graphql-core's resolve info has them: the definitions (the executor holds them with their signatures)."""
        return {name: f.definition for name, f in self._fragments.items()}

    @property
    def field_nodes(self) -> list[Any]:
        return [] if self._field is None else [d.node for d in self._field.details]

    def at(self, path: Any, field: ResolverField) -> _ResolveInfo:
        """This info for `field` at `path` (a view's lists note their cut by them: app.graphql.truncation)."""
        info = _ResolveInfo.__new__(_ResolveInfo)
        info.context, info.root_value, info.operation = self.context, self.root_value, self.operation
        info.variable_values, info.schema, info._fragments = self.variable_values, self.schema, self._fragments
        info.path, info._field = path, field
        return info


class _Places:
    """Where each object of one compiled run's data sits, found only when a path is asked for (a truncated
    list's, after the run): the generated code builds objects without tracking their place."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.index: dict[int, list[Any]] | None = None
        self.abandoned = False  # the run fell back: graphql-core answers, and records its own paths

    def path(self, target: dict[str, Any], key: str) -> list[Any] | None:
        if self.abandoned:
            return None
        if self.index is None:
            self.index = {}
            _walk(self.data, [], self.index)
        return [*self.index[id(target)], key]


def _walk(value: Any, path: list[Any], index: dict[int, list[Any]]) -> None:
    if isinstance(value, dict):
        index[id(value)] = path
        for key, child in value.items():
            if isinstance(child, dict | list):
                _walk(child, [*path, key], index)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            if isinstance(child, dict | list):
                _walk(child, [*path, i], index)


class _Path:
    """`info.path` of a resolver field on the compiled path: its response path, via `_Places`."""

    __slots__ = ("places", "target", "key")

    def __init__(self, places: _Places, target: dict[str, Any], key: str) -> None:
        self.places, self.target, self.key = places, target, key

    def as_list(self) -> list[Any] | None:
        return self.places.path(self.target, self.key)


def _arguments(field: ResolverField, executor: Any) -> dict[str, Any]:
    if not field.has_args:
        return {}
    first = field.details[0]
    try:
        return get_argument_values(
            field.field_def, first.node, executor.variable_values, first.fragment_variable_values
        )
    except Exception:
        raise Fallback from None


def _close(pending: list[tuple[Any, Any]]) -> None:
    """Never-awaited resolver coroutines would warn: close them before falling back."""
    for _, awaitable in pending:
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()


Item = tuple[ResolverField, dict[str, Any], Any]  # a queued field: (field, the dict it fills, its source)


async def execute(plan: Plan, executor: Any, context: Any, root_value: Any) -> dict[str, Any]:
    """The operation's `data`; raises `Fallback` when only the reference path can answer exactly."""
    info = _ResolveInfo(executor, context, root_value)
    queue: list[Item] = []
    data = plan.root(root_value, queue)
    places = _Places(data)
    try:
        await _levels(queue, info, places, executor, context)
    except Fallback:
        places.abandoned = True
        raise
    return data


async def _levels(queue: list[Item], info: _ResolveInfo, places: _Places, executor: Any, context: Any) -> None:
    arguments: dict[int, dict[str, Any]] = {}
    while queue:
        level, queue = queue, []
        done: list[tuple[Item, Any]] = []  # items whose resolver answered at once
        # Each awaitable with what it answers: one item (a resolver), or a list of items (a batch resolver).
        awaiting: list[tuple[Item | list[Item], Any]] = []
        batched: dict[Any, list[Item]] = {}
        try:
            for item in level:
                field = item[0]
                if field.batch is not None:
                    batched.setdefault(field.batch, []).append(item)
                    continue
                kwargs = arguments.get(field.index)
                if kwargs is None:
                    kwargs = arguments[field.index] = _arguments(field, executor)
                result = field.resolve(item[2], info.at(_Path(places, item[1], field.key), field), **kwargs)
                if isawaitable(result):
                    awaiting.append((item, result))
                else:
                    done.append((item, result))
            for batch, items in batched.items():
                sources = [source for _, _, source in items]
                infos = [info.at(_Path(places, target, f.key), f) for f, target, _ in items]
                awaiting.append((items, batch(context, sources, infos)))
        except Exception:
            _close(awaiting)
            raise Fallback from None
        answers = await _settle(awaiting) if awaiting else []
        try:  # completing queues the next level; any error (a Fallback, a serializer's) is graphql-core's to report
            for (field, target, _), value in done:
                target[field.key] = field.complete(value, queue)
            for (what, _), value in zip(awaiting, answers, strict=True):
                if isinstance(what, list):
                    for (field, target, _), found in zip(what, value, strict=True):
                        target[field.key] = field.complete(found, queue)
                else:
                    field, target, _ = what
                    target[field.key] = field.complete(value, queue)
        except Exception:
            raise Fallback from None


async def _settle(awaiting: list[tuple[Any, Any]]) -> list[Any]:
    """Awaits one level's resolvers together, so the Context's DataLoaders see every key of the level at once."""
    if len(awaiting) == 1:  # the common case, one batch per level: no Task to create
        try:
            return [await awaiting[0][1]]
        except Exception:
            raise Fallback from None
    answers = await asyncio.gather(*(a for _, a in awaiting), return_exceptions=True)
    if any(isinstance(a, BaseException) for a in answers):
        raise Fallback
    return answers
