"""Compiled plans, cached by query text, operation name and the values @skip/@include read."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from graphql.language import DocumentNode

from app.graphql.compiled.compiler import Plan, skip_include_variables

MAX_PLANS = 512

_UNSUPPORTED = object()  # cached too: an operation that cannot be compiled is not retried


class PlanCache:
    """A bounded LRU of plans (and of the operations found not compilable)."""

    def __init__(self, max_plans: int = MAX_PLANS) -> None:
        self.max_plans = max_plans
        self._plans: OrderedDict[Hashable, Any] = OrderedDict()
        self._switches: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._plans)

    def key(
        self, query: str, operation_name: str | None, document: DocumentNode, variables: dict[str, Any]
    ) -> Hashable:
        switches = self._switches.get(query)
        if switches is None:
            if len(self._switches) >= self.max_plans:
                self._switches.clear()
            switches = self._switches[query] = skip_include_variables(document)
        return (query, operation_name, tuple(variables.get(name) for name in switches))

    def plan(self, key: Hashable, build: Callable[[], Plan | None]) -> Plan | None:
        """The cached plan for `key`, built on a miss; None when the operation is not compilable."""
        found = self._plans.get(key)
        if found is not None:
            self._plans.move_to_end(key)
            return None if found is _UNSUPPORTED else found  # type: ignore[no-any-return]
        plan = build()
        self._plans[key] = _UNSUPPORTED if plan is None else plan
        if len(self._plans) > self.max_plans:
            self._plans.popitem(last=False)
        return plan
