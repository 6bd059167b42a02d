"""Compiles a validated query operation into Python source specialised to its selection sets.

The generated code completes plain data (dict `.get` reads, list comprehensions, dict
literals); every field with a Python resolver (root reads and searches, `Reference.resource`,
reverse lists) is queued instead, so the runtime can run a whole level of them together and
the DataLoaders of the Context batch it into one command. Anything the generated code cannot
complete exactly as graphql-core would (a null in a non-null position, a value of the wrong
shape, a scalar that does not serialize) raises `Fallback`: the caller then runs the operation
on the reference path.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    OperationType,
    Undefined,
    VariableNode,
    visit,
)
from graphql.execution.collect_fields import FieldDetails, collect_fields, collect_subfields
from graphql.execution.values import get_argument_values
from graphql.language import DirectiveNode, DocumentNode, OperationDefinitionNode, Visitor

from app.graphql.lists import FIRST, SLICE, directive_given, element_key
from app.graphql.lists import select as select_items
from app.graphql.naming import JSON_NAMES
from app.graphql.resolvers import BatchResolver, resolve_data_field, resolve_resource_type
from app.graphql.scalars import serialize_decimal

BatchForms = Mapping[tuple[str, str], BatchResolver]  # (type, field) -> its resolver's batch form

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
# Leaf types whose common Python value is already the serialized value: `type(v) is <class>`.
_FAST_LEAVES = {"String": "str", "ID": "str", "Int": "int", "Boolean": "bool"}
# Leaf serializers that return a value or raise, never None: called as they are (a raise is a Fallback).
_DIRECT_LEAVES = {"Decimal": serialize_decimal}
# Objects of plain data up to this many fields, nested this deep, are completed inline (no function call).
_INLINE_FIELDS, _INLINE_DEPTH = 6, 2


class Fallback(Exception):  # noqa: N818 - a signal, not an error
    """The compiled path cannot produce graphql-core's exact answer: run the reference path."""


class Unsupported(Exception):  # noqa: N818
    """The operation uses something the compiler does not compile (introspection, a mutation...)."""


def _fallback(*_: Any) -> Any:
    raise Fallback


@dataclass(eq=False)
class ResolverField:
    """A field with a Python resolver: queued by the generated code, run a level at a time."""

    index: int
    key: str  # response key (alias or name)
    resolve: Callable[..., Any]  # the GraphQLField's resolver (Strawberry's wrapper: same argument conversion)
    field_def: GraphQLField
    details: list[FieldDetails]
    has_args: bool
    batch: BatchResolver | None  # its batch form (the engine's `batch_forms`): one call per level
    complete: Callable[[Any, list[Any]], Any] = _fallback  # set once its completer is generated


@dataclass(eq=False)
class Plan:
    """A compiled operation: `root(root_value, queue)` builds the root dict and queues root fields."""

    root: Callable[[Any, list[Any]], dict[str, Any]]
    fields: list[ResolverField]
    source: str = field(repr=False)


def skip_include_variables(document: DocumentNode) -> tuple[str, ...]:
    """The variables read by @skip/@include anywhere in the document: part of the plan cache key."""
    names: list[str] = []

    class _Directives(Visitor):
        def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
            if node.name.value in ("skip", "include"):
                for arg in node.arguments or ():
                    if isinstance(arg.value, VariableNode):
                        names.append(arg.value.name.value)

    visit(document, _Directives())
    return tuple(sorted(set(names)))


class _Compiler:
    def __init__(self, schema: GraphQLSchema, executor: Any, batch_forms: BatchForms) -> None:
        self.schema = schema
        self.batch_forms = batch_forms
        self.fragments = executor.fragments
        self.variables = executor.variable_values
        self.operation: OperationDefinitionNode = executor.operation
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {"Fallback": Fallback, "_fb": _fallback, "_dict": dict, "_list": list}
        self.names = itertools.count()
        self.objects: dict[tuple[str, tuple[int, ...]], str] = {}
        self.fields: list[ResolverField] = []
        self.pending: list[tuple[ResolverField, GraphQLOutputType]] = []
        self.completers: list[tuple[ResolverField, str]] = []
        self.inline_depth = 0

    # -- helpers -----------------------------------------------------------------------------

    def _name(self, prefix: str) -> str:
        return f"{prefix}{next(self.names)}"

    def _bind(self, prefix: str, value: Any) -> str:
        name = self._name(prefix)
        self.namespace[name] = value
        return name

    def _emit(self, *lines: str) -> None:
        self.lines.extend(lines)
        self.lines.append("")

    # -- entry -------------------------------------------------------------------------------

    def compile(self) -> Plan:
        if self.operation.operation != OperationType.QUERY:
            raise Unsupported("only queries are compiled")
        root_type = self.schema.query_type
        assert root_type is not None
        collected = collect_fields(self.schema, self.fragments, self.variables, root_type, self.operation)
        if collected.new_defer_usages or collected.forbidden_directive_instances:
            raise Unsupported("@defer")
        root = self._object_body(root_type, collected.grouped_field_set, "root")
        # Completers of resolver fields may queue more resolver fields: generate until none is left.
        while self.pending:
            rf, rtype = self.pending.pop()
            fn = self._name("c")
            self._emit(f"def {fn}(v, q):", f"    return {self._value(rtype, rf.details, 'v')}")
            self.completers.append((rf, fn))
        source = "\n".join(self.lines)
        exec(compile(source, "<fingate-compiled>", "exec"), self.namespace)  # noqa: S102 - our own generated code
        for rf, fn in self.completers:
            rf.complete = self.namespace[fn]
        return Plan(root=self.namespace[root], fields=self.fields, source=source)

    # -- objects -----------------------------------------------------------------------------

    def _object(self, type_: GraphQLObjectType, details: list[FieldDetails]) -> str:
        """The generated function completing a dict as `type_` with the sub-selections of `details`."""
        key = (type_.name, tuple(id(d.node) for d in details))
        if key in self.objects:
            return self.objects[key]
        collected = collect_subfields(self.schema, self.fragments, self.variables, self.operation, type_, details)
        if collected.new_defer_usages or collected.forbidden_directive_instances:
            raise Unsupported("@defer")
        name = self._name("o")
        self.objects[key] = name
        self._object_body(type_, collected.grouped_field_set, name)
        return name

    def _inline(self, type_: GraphQLObjectType, details: list[FieldDetails], v: str) -> str | None:
        """A small object of plain data (a Money, a Coding) as an expression inside its parent's dict literal,
        saving a function call per object; None when it needs a function (resolver fields, size, depth)."""
        if self.inline_depth >= _INLINE_DEPTH or type_.is_type_of is not None:
            return None
        collected = collect_subfields(self.schema, self.fragments, self.variables, self.operation, type_, details)
        grouped = collected.grouped_field_set
        if collected.new_defer_usages or collected.forbidden_directive_instances or len(grouped) > _INLINE_FIELDS:
            return None
        fields: dict[str, tuple[str, GraphQLField] | None] = {}  # response key -> (stored key, field); None: __typename
        for response_key, field_details in grouped.items():
            name = field_details[0].node.name.value
            if name == "__typename":
                fields[response_key] = None
                continue
            field_def = type_.fields.get(name)
            key = None if field_def is None else self._data_key(field_def)
            if field_def is None or key is None:  # unknown (introspection), or a field with a resolver
                return None
            fields[response_key] = (key, field_def)
        self.inline_depth += 1
        var = f"v{self.inline_depth}"
        items = []
        try:
            for response_key, found in fields.items():
                if found is None:
                    value = repr(type_.name)
                else:
                    key, field_def = found
                    read = self._read(field_def, grouped[response_key], f"{v}.get({key!r})")
                    value = self._value(field_def.type, grouped[response_key], var, f"({var} := {read})")
                items.append(f"{response_key!r}: {value}")
        finally:
            self.inline_depth -= 1
        return f"({{{', '.join(items)}}} if {v}.__class__ is _dict else _fb())"

    def _object_body(self, type_: GraphQLObjectType, grouped: dict[str, list[FieldDetails]], name: str) -> str:
        if type_.is_type_of is not None:
            raise Unsupported(f"{type_.name} has is_type_of")
        body = [f"def {name}(s, q):"]
        if name != "root":
            body.append("    if s.__class__ is not _dict: raise Fallback")
            body.append("    g = s.get")
        items: list[str] = []
        queued: list[str] = []
        for response_key, details in grouped.items():
            field_name = details[0].node.name.value
            if field_name == "__typename":
                items.append(f"{response_key!r}: {type_.name!r}")
                continue
            if field_name.startswith("__"):
                raise Unsupported("introspection")
            field_def = type_.fields.get(field_name)
            if field_def is None:
                raise Unsupported(f"{type_.name}.{field_name}")
            key = self._data_key(field_def)
            if key is None:
                rf = self._resolver_field(
                    response_key, field_def, details, self.batch_forms.get((type_.name, field_name))
                )
                items.append(f"{response_key!r}: None")
                queued.append(f"    q.append(({self._bind('F', rf)}, r, s))")
                continue
            if name == "root":
                raise Unsupported("a plain data field on the root type")
            # The dict literal reads each field where its completion first needs it: `(v := g(key))`.
            read = self._read(field_def, details, f"g({key!r})")
            items.append(f"{response_key!r}: {self._value(field_def.type, details, 'v', f'(v := {read})')}")
        if queued:
            body.append("    r = {" + ", ".join(items) + "}")
            body.extend(queued)
            body.append("    return r")
        else:
            body.append("    return {" + ", ".join(items) + "}")
        self._emit(*body)
        return name

    @staticmethod
    def _data_key(field_def: GraphQLField) -> str | None:
        """The stored JSON key of a plain data field; None for a field with a resolver."""
        definition = field_def.extensions.get("strawberry-definition")
        if definition is None:
            raise Unsupported("a field not made by Strawberry")
        if definition.extensions or definition.permission_classes:
            raise Unsupported("field extensions and permissions run on the reference path")
        if definition.base_resolver is not None:
            return None
        key = element_key(field_def)  # a repeating element: its arguments are applied by `_read`
        if key is not None:
            return key
        if (
            not getattr(field_def.resolve, "_is_default", False)
            or definition.default_resolver is not resolve_data_field
        ):
            raise Unsupported("a plain field with an unknown default resolver")
        python: str = definition.python_name
        return JSON_NAMES.get(python, python)

    def _read(self, field_def: GraphQLField, details: list[FieldDetails], read: str) -> str:
        """The expression reading a data field: `read`, or for a repeating element given arguments or @first,
        the items they select (as its `element_list` resolver selects them on the reference path)."""
        if element_key(field_def) is None:
            return read
        nodes = [d.node for d in details]
        first = directive_given(nodes, FIRST)
        if directive_given(nodes, SLICE):
            raise Unsupported("@slice notes the stored items' slice names by response path")
        if not nodes[0].arguments and not first:
            return read
        if any(isinstance(a.value, VariableNode) for a in nodes[0].arguments or ()):
            raise Unsupported("a repeating element's arguments from variables (plans are cached by text)")
        arguments = get_argument_values(field_def, nodes[0], self.variables)
        select = self._bind("E", lambda items: select_items(items, arguments, first))
        return f"{select}({read})"

    def _resolver_field(
        self, response_key: str, field_def: GraphQLField, details: list[FieldDetails], batch: BatchResolver | None
    ) -> ResolverField:
        if field_def.resolve is None:
            raise Unsupported("a field without resolver")
        node = details[0].node
        # Arguments left out are not passed (none has a default): the batch form answers such a field.
        has_args = bool(node.arguments)
        rf = ResolverField(
            index=len(self.fields),
            key=response_key,
            resolve=field_def.resolve,
            field_def=field_def,
            details=details,
            has_args=has_args,
            batch=None if has_args else batch,
        )
        self.fields.append(rf)
        self.pending.append((rf, field_def.type))
        return rf

    # -- values ------------------------------------------------------------------------------

    def _value(self, type_: GraphQLOutputType, details: list[FieldDetails], v: str, first: str = "") -> str:
        """An expression completing the value in variable `v` as graphql-core's complete_value would.

        `first`, when given, is what the expression evaluates first instead of `v`: a walrus reading the value.
        """
        first = first or v
        nullable = not isinstance(type_, GraphQLNonNull)
        inner = type_ if nullable else type_.of_type  # type: ignore[union-attr]
        if isinstance(inner, GraphQLScalarType) and inner.name in _FAST_LEAVES:
            return self._fast_leaf(inner, v, first, nullable)
        if nullable:
            return f"(None if {first} is None else {self._present(inner, details, v)})"
        return f"(_fb() if {first} is None else {self._present(inner, details, v)})"

    def _fast_leaf(self, type_: GraphQLScalarType, v: str, first: str, nullable: bool) -> str:
        """The common value passes as it is (`type(v) is str`); anything else, None included, is completed
        by graphql-core's serializer (which refuses a None in a non-null position: a fallback)."""
        fast, slow = _FAST_LEAVES[type_.name], self._bind("L", _leaf(type_))
        check = f"{first}.__class__ is {fast}"
        if fast == "int":
            check += f" and {_INT_MIN} <= {v} <= {_INT_MAX}"
        otherwise = f"(None if {v} is None else {slow}({v}))" if nullable else f"{slow}({v})"
        return f"({v} if {check} else {otherwise})"

    def _present(self, type_: GraphQLOutputType, details: list[FieldDetails], v: str) -> str:
        """Completion of a value known not to be None."""
        if isinstance(type_, GraphQLScalarType) and _DIRECT_LEAVES.get(type_.name) is type_.coerce_output_value:
            return f"{self._bind('S', type_.coerce_output_value)}({v})"
        if isinstance(type_, GraphQLScalarType | GraphQLEnumType):
            return f"{self._bind('L', _leaf(type_))}({v})"
        if isinstance(type_, GraphQLList):
            fn = self._name("l")
            item = self._value(type_.of_type, details, "x")
            self._emit(
                f"def {fn}(v, q):",
                "    if v.__class__ is not _list: raise Fallback",
                f"    return [{item} for x in v]",
            )
            return f"{fn}({v}, q)"
        if isinstance(type_, GraphQLObjectType):
            return self._inline(type_, details, v) or f"{self._object(type_, details)}({v}, q)"
        if isinstance(type_, GraphQLUnionType):
            table = {member.name: member for member in self.schema.get_possible_types(type_)}
            functions = {name: self._object(member, details) for name, member in sorted(table.items())}
            table_name = self._name("T")
            fn = self._name("u")
            if type_.resolve_type is resolve_resource_type:  # the served type named by `resourceType`, else an error
                self._emit(f"def {fn}(v, q):", f"    return {table_name}.get(v.get('resourceType'), _fb)(v, q)")
            else:
                resolve_type, union = self._bind("R", type_.resolve_type), self._bind("U", type_)
                self._emit(
                    f"def {fn}(v, q):",
                    "    try:",
                    f"        name = {resolve_type}(v, None, {union})",
                    "    except Exception:",
                    "        raise Fallback from None",
                    f"    return {table_name}.get(name, _fb)(v, q)",
                )
            self.lines.append(f"{table_name} = {{" + ", ".join(f"{k!r}: {f}" for k, f in functions.items()) + "}")
            self.lines.append("")
            return f"{fn}({v}, q)"
        raise Unsupported(f"output type {type_}")


def _leaf(type_: GraphQLScalarType | GraphQLEnumType) -> Callable[[Any], Any]:
    """graphql-core's complete_leaf_value; any failure means the reference path must answer."""
    coerce = type_.coerce_output_value

    def complete(value: Any) -> Any:
        if value is None:
            raise Fallback
        try:
            out = coerce(value)
        except Exception:
            raise Fallback from None
        if out is None or out is Undefined:
            raise Fallback
        return out

    return complete


def compile_operation(schema: GraphQLSchema, executor: Any, batch_forms: BatchForms) -> Plan:
    """The plan of the executor's operation; `Unsupported` when it must run on the reference path."""
    return _Compiler(schema, executor, batch_forms).compile()
