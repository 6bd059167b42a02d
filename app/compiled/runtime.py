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


def _close(pending: list[tuple[int, Any]]) -> None:
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
        awaiting: list[tuple[int, Any]] = []
        try:
            for i, (field, _, source) in enumerate(level):
                kwargs = arguments.get(field.index)
                if kwargs is None:
                    kwargs = arguments[field.index] = _arguments(field, executor)
                result = field.resolve(source, info, **kwargs)
                if isawaitable(result):
                    awaiting.append((i, result))
                else:
                    results[i] = result
        except Exception:
            _close(awaiting)
            raise Fallback from None
        if awaiting:
            # One gather per level: the Context's DataLoaders see every key of the level in one tick.
            done = await asyncio.gather(*(a for _, a in awaiting), return_exceptions=True)
            for (i, _), value in zip(awaiting, done, strict=True):
                if isinstance(value, BaseException):
                    raise Fallback
                results[i] = value
        for (field, target, _), value in zip(level, results, strict=True):
            target[field.key] = field.complete(value, queue)
    return data
