"""Compiled execution: plain-data queries run as generated Python instead of graphql-core's executor.

It plugs in as a Strawberry schema extension on the `execute` step, so parsing, validation
(with every rule the schema has), the operation-type checks and error processing are the
normal path's own. It sets the result only when the compiled plan completed the whole
operation without any error; otherwise graphql-core executes it as usual, with the same
Context (its DataLoader cache already holds what the compiled attempt read), and produces
the exact partial data and error paths. See README "Compiled execution".
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from graphql import DocumentNode, Executor
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from app.graphql.compat import graphql_schema
from app.graphql.compiled import runtime
from app.graphql.compiled.cache import PlanCache
from app.graphql.compiled.compiler import BatchForms, Fallback, Plan, Unsupported, compile_operation

__all__ = ["CompiledEngine", "compiled_execution"]

log = logging.getLogger("fingate.compiled")


class CompiledEngine:
    """The plans of one schema and the counts of how operations were answered."""

    def __init__(self, schema: Any, batch_forms: BatchForms) -> None:
        self.schema = graphql_schema(schema)
        self.batch_forms = batch_forms
        self.plans = PlanCache()
        # compiled | unsupported | fallback: tests and benchmarks read it.
        self.stats: Counter[str] = Counter()

    def _compile(self, executor: Executor) -> Plan | None:
        try:
            return compile_operation(self.schema, executor, self.batch_forms)
        except Unsupported as reason:
            log.debug("not compiled: %s", reason)
            return None

    async def execute(self, ec: Any) -> GraphQLExecutionResult | None:
        """The result of the Strawberry ExecutionContext's operation, or None: run the reference path."""
        query, document = ec.query, ec.graphql_document
        if query is None or document is None or ec.operation_type is not OperationType.QUERY:
            self.stats["unsupported"] += 1
            return None
        return await self.run(query, document, ec.context, ec.variables, ec.operation_name, ec.root_value)

    async def run(
        self,
        query: str,
        document: DocumentNode,
        context: Any,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        root_value: Any = None,
    ) -> GraphQLExecutionResult | None:
        """The execute step alone, for a parsed and validated `document` (the text of `query`): its result,
        or None when only the reference path can answer (the benchmark times this against graphql-core's
        `execute()`)."""
        executor = Executor.build(self.schema, document, root_value, context, variables, operation_name)
        if isinstance(executor, list):  # variable coercion errors: graphql-core reports them
            self.stats["unsupported"] += 1
            return None
        key = self.plans.key(query, operation_name, document, executor.variable_values.coerced)
        plan = self.plans.plan(key, lambda: self._compile(executor))
        if plan is None:
            self.stats["unsupported"] += 1
            return None
        try:
            data = await runtime.execute(plan, executor, context, root_value)
        except Fallback:
            self.stats["fallback"] += 1
            return None
        self.stats["compiled"] += 1
        return GraphQLExecutionResult(data=data, errors=None)


class CompiledExecution(SchemaExtension):
    """Answers the execute step from a compiled plan when it can; otherwise leaves it to graphql-core."""

    engine: CompiledEngine

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        if ec.result is None:  # an earlier extension may have answered already
            result = await self.engine.execute(ec)
            if result is not None:
                ec.result = result
        yield


def _compilable(schema: Any) -> str | None:
    """Why the schema's own machinery would make the two paths differ, if it would."""
    if schema.directives:
        return "schema directives run per resolver"
    for ext in schema.extensions:
        cls = ext if isinstance(ext, type) else type(ext)
        if not issubclass(cls, SchemaExtension):
            return f"extension factory {ext!r} cannot be checked"
        if cls.resolve is not SchemaExtension.resolve:
            return f"{cls.__name__} wraps every resolver"
    return None


def compiled_execution(schema: Any, batch_forms: BatchForms, enabled: bool) -> tuple[Any, CompiledEngine | None]:
    """The schema to execute and its engine: when `enabled` (and the schema allows it), a shallow copy of
    `schema` with one more extension, answered by a new engine that knows `batch_forms`; else `schema`, None.
    The copy shares everything else with `schema` (types, caches)."""
    if not enabled:
        return schema, None
    if reason := _compilable(schema):
        log.warning("compiled execution off: %s", reason)
        return schema, None
    engine = CompiledEngine(schema, batch_forms)
    compiled = copy.copy(schema)
    compiled.extensions = (*schema.extensions, type("CompiledExecution", (CompiledExecution,), {"engine": engine}))
    return compiled, engine
