"""Runs a compiled plan level by level: every resolver field met on one level is awaited together."""

from __future__ import annotations

import asyncio
from inspect import isawaitable
from typing import Any

from graphql.execution.values import get_argument_values

from app.compiled.compiler import Fallback, Plan, ResolverField


class _ResolveInfo:
    """The part of graphql-core's GraphQLResolveInfo that Strawberry's resolver wrapper passes on.

    FinGate's resolvers read only `info.context`; fields whose extensions or permissions might
    read more are not compiled.
    """

    __slots__ = ("context", "root_value", "operation", "variable_values", "schema")

    def __init__(self, executor: Any, context: Any, root_value: Any) -> None:
        self.context = context
        self.root_value = root_value
        self.operation = executor.operation
        self.variable_values = executor.variable_values
        self.schema = executor.schema


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


async def execute(plan: Plan, executor: Any, context: Any, root_value: Any) -> dict[str, Any]:
    """The operation's `data`; raises `Fallback` when only the reference path can answer exactly."""
    info = _ResolveInfo(executor, context, root_value)
    arguments: dict[int, dict[str, Any]] = {}
    queue: list[tuple[ResolverField, dict[str, Any], Any]] = []
    data = plan.root(root_value, queue)
    while queue:
        level, queue = queue, []
        results: list[Any] = [None] * len(level)
        # Each awaitable with the level's items it answers: one item (a resolver), or a list (a batch resolver).
        awaiting: list[tuple[int | list[int], Any]] = []
        batched: dict[Any, list[int]] = {}
        try:
            for i, (field, _, source) in enumerate(level):
                if field.batch is not None:
                    batched.setdefault(field.batch, []).append(i)
                    continue
                kwargs = arguments.get(field.index)
                if kwargs is None:
                    kwargs = arguments[field.index] = _arguments(field, executor)
                result = field.resolve(source, info, **kwargs)
                if isawaitable(result):
                    awaiting.append((i, result))
                else:
                    results[i] = result
            for batch, items in batched.items():
                awaiting.append((items, batch(context, [level[i][2] for i in items])))
        except Exception:
            _close(awaiting)
            raise Fallback from None
        if awaiting:
            await _settle(awaiting, results)
        try:
            for (field, target, _), value in zip(level, results, strict=True):
                target[field.key] = field.complete(value, queue)
        except Exception:  # Fallback, or a leaf serializer's error: graphql-core reports it
            raise Fallback from None
    return data


async def _settle(awaiting: list[tuple[int | list[int], Any]], results: list[Any]) -> None:
    """Awaits one level's resolvers together, so the Context's DataLoaders see every key of the level at once."""
    if len(awaiting) == 1:  # the common case, one batch per level: no Task to create
        try:
            done = [await awaiting[0][1]]
        except Exception:
            raise Fallback from None
    else:
        done = await asyncio.gather(*(a for _, a in awaiting), return_exceptions=True)
    for (items, _), value in zip(awaiting, done, strict=True):
        if isinstance(value, BaseException):
            raise Fallback
        if isinstance(items, int):
            results[items] = value
        else:
            for i, found in zip(items, value, strict=True):
                results[i] = found
