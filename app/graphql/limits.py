"""Query limits enforced before execution: tokens, depth, aliases, cost; the body size and a timeout."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Hashable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import orjson
from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
    validate,
    visit,
)
from graphql.language import Lexer, Source, TokenKind, Visitor
from graphql.validation import NoSchemaIntrospectionCustomRule
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult

from app import errors, store
from app.billing import ITEMS_SHOWN, PAYMENTS_SHOWN
from app.graphql.billing import TYPE_NAMES as BILLING_TYPES
from app.graphql.compat import graphql_schema, validate_document
from app.graphql.lists import element_key
from app.settings import Settings

DEFAULT_COUNT = 20  # what a list without `_count` returns
MAX_COUNT = 1000  # the most a list may ask for (`app.graphql.context.check_count`)


@dataclass(frozen=True)
class Limits:
    """One app's limits, read from Settings once; the defaults are the README's."""

    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5_000
    max_cost: int = 50_000
    max_body_bytes: int = 1_048_576
    request_timeout: float = 10.0
    introspection: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})

    def without_introspection(self) -> Limits:
        return dataclasses.replace(self, introspection=False)


DEFAULT_LIMITS = Limits()


def too_complex(message: str) -> GraphQLError:
    """A GraphQL error that `app.http.format_error` reports as QUERY_TOO_COMPLEX."""
    return GraphQLError(message, original_error=errors.FinGateError(errors.QUERY_TOO_COMPLEX, message))


def _introspection_off(message: str) -> errors.FinGateError:
    return errors.FinGateError(
        errors.FORBIDDEN,
        f"{message} (on this server introspection needs FINGATE_INTROSPECTION=true and, with auth on, a token with a read scope)",
    )


def _limits_of(execution_context: Any) -> Limits:
    return getattr(execution_context.context, "limits", None) or DEFAULT_LIMITS


# -- tokens: counted before parsing, so a huge document never becomes an AST ---------------------


@lru_cache(maxsize=1024)
def _too_many_tokens(query: str, limit: int) -> bool:
    lexer = Lexer(Source(query))
    try:
        for _ in range(limit + 1):
            if lexer.advance().kind == TokenKind.EOF:
                return False
    except GraphQLError:
        return False  # the parser reports the syntax error itself
    return True


class TokenLimit(SchemaExtension):
    """`FINGATE_MAX_TOKENS`: runs before the parser (and its cache)."""

    def on_parse(self) -> Iterator[None]:
        limit = _limits_of(self.execution_context).max_tokens
        query = self.execution_context.query
        if self.execution_context.graphql_document is None and query and _too_many_tokens(query, limit):
            raise too_complex(
                f"the document has more than {limit} tokens (FINGATE_MAX_TOKENS): split it into smaller queries"
            )
        yield


# -- depth, aliases and cost: one walk of each operation, as a validation rule -------------------


_BILLING_VIEWS = frozenset(BILLING_TYPES.values())
_VIEW_LISTS = {"payments": PAYMENTS_SHOWN, "items": ITEMS_SHOWN}  # the lists a billing view returns, at their longest


@dataclass(frozen=True)
class Measure:
    depth: int
    aliases: int
    cost: int  # resources fetched: each list its `_count`, nested lists and references multiply


class _Walker:
    """Measures selection sets; each (selection set, type) once, so fragment reuse stays linear."""

    def __init__(
        self, context: ValidationContext, variables: dict[str, Any], operation: OperationDefinitionNode
    ) -> None:
        self.schema: GraphQLSchema = context.schema
        self.context = context
        self.variables = dict(variables)
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            if self.variables.get(name) is None and isinstance(definition.default_value, IntValueNode):
                self.variables[name] = int(definition.default_value.value)
        self.roots = {t for t in (self.schema.query_type, self.schema.mutation_type) if t is not None}
        self.memo: dict[tuple[int, str], Measure] = {}

    def _count(self, node: FieldNode) -> int:
        """The `_count` given, else the page size of the `_cursor` given alone (it carries its search), else 20."""
        given: dict[str, Any] = {}
        for arg in node.arguments or ():
            value: Any = None
            if isinstance(arg.value, IntValueNode):
                value = int(arg.value.value)
            elif isinstance(arg.value, StringValueNode):
                value = arg.value.value
            elif isinstance(arg.value, VariableNode):
                value = self.variables.get(arg.value.name.value)
            given[arg.name.value] = value
        value = _page_size(given.get("_count"))
        if value is None:
            value = _page_size(given.get("_cursor"))
        # Above MAX_COUNT the resolver answers BAD_USER_INPUT.
        return DEFAULT_COUNT if value is None else max(0, min(value, MAX_COUNT))

    def _fetches(self, parent: GraphQLNamedType, name: str, field: Any, node: FieldNode) -> int | None:
        """How many resources one instance of this field returns (None for plain data); `_count: 0` returns none."""
        if element_key(field) is not None:  # a repeating element: its `_count` only shortens what was read
            return None
        if "_count" in field.args:
            return self._count(node)
        if parent in self.roots:
            return DEFAULT_COUNT if is_list_type(get_nullable_type(field.type)) else 1
        if parent.name == "Reference" and name == "resource":
            return 1
        if name == "billing" and parent.name in BILLING_TYPES:  # a computed view: one settlement read
            return 1
        if parent.name in _BILLING_VIEWS and name in _VIEW_LISTS:
            return _VIEW_LISTS[name]
        return None

    def measure(
        self, node: SelectionSetNode, parent: GraphQLNamedType, active: frozenset[str] = frozenset()
    ) -> Measure:
        key = (id(node), parent.name)
        if key in self.memo:
            return self.memo[key]
        depth = aliases = cost = 0
        for sel in node.selections:
            if isinstance(sel, FieldNode):
                aliases += sel.alias is not None
                name = sel.name.value
                field = getattr(parent, "fields", {}).get(name)
                if name.startswith("__") or field is None:
                    continue  # introspection is bounded by the schema, not by the data
                inner = (
                    self.measure(sel.selection_set, get_named_type(field.type), active)
                    if sel.selection_set
                    else Measure(0, 0, 0)
                )
                n = self._fetches(parent, name, field, sel)
                depth = max(depth, inner.depth + 1)
                aliases += inner.aliases
                # A list's rows, each with what is nested in it; `_count: 0` is one count and nothing nested.
                cost += inner.cost if n is None else n + n * inner.cost if n else 1
                continue
            if isinstance(sel, InlineFragmentNode):
                target = self.schema.get_type(sel.type_condition.name.value) if sel.type_condition else parent
                inner = self.measure(sel.selection_set, target or parent, active)
            elif isinstance(sel, FragmentSpreadNode):
                fragment: FragmentDefinitionNode | None = self.context.get_fragment(sel.name.value)
                if fragment is None or sel.name.value in active:
                    continue
                target = self.schema.get_type(fragment.type_condition.name.value)
                inner = self.measure(fragment.selection_set, target or parent, active | {sel.name.value})
            else:
                continue
            depth, aliases, cost = max(depth, inner.depth), aliases + inner.aliases, cost + inner.cost
        self.memo[key] = result = Measure(depth, aliases, cost)
        return result


class _LimitsRule(ValidationRule):
    limits: Limits = DEFAULT_LIMITS
    variables: dict[str, Any] = {}

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        root = self.context.schema.get_root_type(node.operation)
        if root is None:
            return
        m = _Walker(self.context, self.variables, node).measure(node.selection_set, root)
        name = f"operation {node.name.value!r}" if node.name else "the operation"
        checks = (
            (m.depth, self.limits.max_depth, "fields nested", "FINGATE_MAX_DEPTH", "ask for fewer levels"),
            (m.aliases, self.limits.max_aliases, "aliases", "FINGATE_MAX_ALIASES", "send several requests"),
            (
                m.cost,
                self.limits.max_cost,
                "as cost (resources asked for: each list its _count, nested lists multiply)",
                "FINGATE_MAX_COST",
                "lower _count or nest fewer lists",
            ),
        )
        for value, limit, what, setting, fix in checks:
            if value > limit:
                self.report_error(
                    too_complex(f"{name} has {value} {what}, over the limit of {limit} ({setting}): {fix}")
                )


def limit_rules(limits: Limits, variables: dict[str, Any] | None) -> list[type[ValidationRule]]:
    rule = type("LimitsRule", (_LimitsRule,), {"limits": limits, "variables": variables or {}})
    return [rule] if limits.introspection else [rule, NoSchemaIntrospectionCustomRule]


@dataclass
class _Checked:
    """What the checks before execution found for one query text (on one schema, with one rule set), so a
    repeated query is not walked again: each walk of a billing screen's query costs milliseconds."""

    errors: list[GraphQLError]  # the standard validation's
    count_variables: tuple[str, ...]  # the variables given as `_count` or `_cursor`: the only ones the cost reads
    within: set[Hashable] = field(default_factory=set)  # (limits, page sizes) found within limits

    def verdict_key(self, limits: Limits, variables: dict[str, Any] | None) -> Hashable:
        given = variables or {}
        return (limits, tuple(map(_page_size, map(given.get, self.count_variables))))


def _page_size(value: Any) -> int | None:
    """A page size from a `_count` (an int) or a `_cursor` (a string: the size it carries)."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        return store.cursors.page_size(value)
    return None


def _count_variables(document: DocumentNode) -> tuple[str, ...]:
    names: set[str] = set()

    class _Counts(Visitor):
        def enter_argument(self, node: ArgumentNode, *_: Any) -> None:
            if node.name.value in ("_count", "_cursor") and isinstance(node.value, VariableNode):
                names.add(node.value.name.value)

    visit(document, _Counts())
    return tuple(sorted(names))


class _Checks:
    """`_Checked` per (schema, query text, rules), bounded. Strawberry's `ValidationCache` keys on the document
    itself, and a graphql-core AST hashes its every node on each lookup; the text is the same key, since the
    parser cache maps one text to one document."""

    MAX = 2048

    def __init__(self) -> None:
        self._by_text: dict[Hashable, _Checked] = {}

    def of(self, ec: Any) -> _Checked:
        schema, document = graphql_schema(ec.schema), ec.graphql_document
        key = (schema, ec.query, tuple(ec.validation_rules))
        checked = self._by_text.get(key) if ec.query else None
        if checked is None:
            errors = validate_document(schema, document, ec.validation_rules)
            checked = _Checked(errors, _count_variables(document))
            if ec.query:  # a document without its text cannot be keyed cheaply: checked every time
                if len(self._by_text) >= self.MAX:
                    self._by_text.clear()
                self._by_text[key] = checked
        return checked


_CHECKS = _Checks()


class QueryLimits(SchemaExtension):
    """Validates the document, then runs the limit rules once it is valid; both verdicts cached per query text."""

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        assert ec.graphql_document is not None
        checked = _CHECKS.of(ec)
        if ec.pre_execution_errors is None:
            ec.pre_execution_errors = checked.errors
        if not ec.pre_execution_errors:
            limits = _limits_of(ec)
            verdict = checked.verdict_key(limits, ec.variables)
            found = (
                []
                if verdict in checked.within
                else validate(graphql_schema(ec.schema), ec.graphql_document, limit_rules(limits, ec.variables))
            )
            if not found:
                if len(checked.within) >= _Checks.MAX:  # a client may vary `_count` without end
                    checked.within.clear()
                checked.within.add(verdict)
            else:  # limit errors carry QUERY_TOO_COMPLEX; graphql-core's introspection rule's are FORBIDDEN
                ec.pre_execution_errors = [
                    e
                    if e.original_error
                    else GraphQLError(e.message, e.nodes, original_error=_introspection_off(e.message))
                    for e in found
                ]
        yield


# -- per request: the timeout and the body size -------------------------------------------------------


# The last part of a request's time that the database never gets: half of it lets the GraphQL
# layer cut the request, the other half lets a probe tell a dead or stalled database (UNAVAILABLE)
# from a request that asked too much of a live one (QUERY_TOO_COMPLEX).
_RESERVE = 0.5
_SHORTEST_PROBE = 0.1  # a live database answers a ping well within this, even on a busy machine


class Database(Protocol):
    async def ping(self, seconds: float | None = None) -> bool: ...


async def within(seconds: float, operation: Awaitable[Any], database: Database | None = None) -> Any:
    """The operation's result, or an error result after `seconds` (writes roll back).

    Every database call in it, commits included, ends before then (`app.store.deadline`).
    """
    reserve = min(_RESERVE, seconds / 4)
    with store.deadline(seconds - reserve):
        try:
            result = await asyncio.wait_for(operation, seconds - reserve / 2)
        except TimeoutError:
            message = f"the request ran over {seconds:g} s (FINGATE_REQUEST_TIMEOUT): ask for less, or page"
            result = ExecutionResult(
                data=None, errors=[GraphQLError(message, original_error=errors.RanOutOfTime(message))]
            )
    ran_out = [e for e in result.errors or () if isinstance(e.original_error, errors.RanOutOfTime)]
    if ran_out and database is not None and not await database.ping(max(reserve / 2, _SHORTEST_PROBE)):
        outage = errors.unavailable()
        result.errors = [
            GraphQLError(outage.message, e.nodes, path=e.path, original_error=outage)
            if isinstance(e.original_error, errors.RanOutOfTime)
            else e
            for e in result.errors
        ]
    return result


class BodyLimit:
    """HTTP 413 for a body over `max_bytes`; reads the body once and hands it on."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        message = f"the request body is over {self.max_bytes} bytes (FINGATE_MAX_BODY_BYTES)"
        body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": errors.QUERY_TOO_COMPLEX}}]})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
