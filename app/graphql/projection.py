"""Read only what is selected: per resource type, the stored top-level elements an operation needs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    get_named_type,
    get_operation_ast,
)
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from app.fhir.model import SERVED_RESOURCES
from app.graphql.compat import graphql_schema
from app.graphql.naming import JSON_NAMES

# Read whatever is selected: `resourceType` (union members and `is_type_of` dispatch on it), `id` (reverse
# lists and Connections point at it; the store keys on it), `contained` (a `#x` reference resolves into it).
ALWAYS = frozenset({"id", "resourceType", "contained"})
_SERVED = frozenset(SERVED_RESOURCES)
_REVERSE = {f"{x}{kind}" for x in SERVED_RESOURCES for kind in ("List", "Connection")}
WHOLE = None  # a type one of whose selected fields computes from the whole resource (`billing`)
Elements = Mapping[str, frozenset[str] | None]
_CACHE_SIZE = 512


def _needs(field: GraphQLField) -> frozenset[str] | None:
    """What one selected field of a resource type reads of the stored resource."""
    definition = field.extensions.get("strawberry-definition")
    if definition is None:
        return WHOLE
    if definition.base_resolver is None:  # plain data: the element of that JSON name
        python: str = definition.python_name
        return frozenset({JSON_NAMES.get(python, python)})
    if definition.graphql_name in _REVERSE or definition.python_name in _REVERSE:
        return frozenset()  # the resources pointing at this one: its `id`, always read
    return WHOLE


class _Walk:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode) -> None:
        self.schema = schema
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        self.out: dict[str, set[str] | None] = {}
        self.seen: set[tuple[str, int]] = set()

    def note(self, type_name: str, needs: frozenset[str] | None) -> None:
        if type_name in self.out and self.out[type_name] is WHOLE:
            return
        if needs is WHOLE:
            self.out[type_name] = WHOLE
        else:
            current = self.out.setdefault(type_name, set(ALWAYS))
            assert current is not None
            current |= needs

    def selections(self, parent: Any, selection_set: SelectionSetNode) -> None:
        key = (parent.name, id(selection_set))
        if key in self.seen:
            return
        self.seen.add(key)
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                self.field(parent, node)
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                self.selections(target, node.selection_set)
            elif isinstance(node, FragmentSpreadNode):
                fragment = self.fragments.get(node.name.value)
                if fragment is not None:
                    self.selections(self.schema.get_type(fragment.type_condition.name.value), fragment.selection_set)

    def field(self, parent: Any, node: FieldNode) -> None:
        name = node.name.value
        if name.startswith("__"):
            return
        if not isinstance(parent, GraphQLObjectType):  # an interface's field: any implementation may need anything
            for t in self.schema.get_possible_types(parent):
                if t.name in _SERVED:
                    self.note(t.name, WHOLE)
            return
        field = parent.fields.get(name)
        if field is None:
            return
        if parent.name in _SERVED:
            self.note(parent.name, _needs(field))
        if node.selection_set is not None:
            self.selections(get_named_type(field.type), node.selection_set)


def elements(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None) -> dict[str, Any] | None:
    """Per resource type the operation may meet, the top-level elements to read (None for a type: all of them);
    a type it selects nothing of needs only `ALWAYS`. None: read whole resources (not a query, or unknown)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation.value != "query":
        return None
    walk = _Walk(schema, document)
    walk.selections(schema.query_type, operation.selection_set)
    return {t: None if needs is WHOLE else frozenset(needs) for t, needs in walk.out.items()}


class _Cache:
    """`elements` per (query text, operation name), least recently used out first."""

    def __init__(self) -> None:
        self.found: OrderedDict[tuple[int, str, str | None], dict[str, Any] | None] = OrderedDict()

    def get(self, schema: GraphQLSchema, query: str, document: DocumentNode, name: str | None) -> Any:
        key = (id(schema), query, name)
        if key in self.found:
            self.found.move_to_end(key)
            return self.found[key]
        value = self.found[key] = elements(schema, document, name)
        if len(self.found) > _CACHE_SIZE:
            self.found.popitem(last=False)
        return value


_cache = _Cache()


class Projection(SchemaExtension):
    """Tells the request's Context which elements of each resource type the operation selects, before it runs
    (on either execution path), so the store reads only those; a Context with `project` off reads whole."""

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        context = ec.context
        if (
            getattr(context, "project", False)
            and ec.operation_type is OperationType.QUERY
            and ec.query is not None
            and ec.graphql_document is not None
        ):
            schema = graphql_schema(ec.schema)
            context.selected = _cache.get(schema, ec.query, ec.graphql_document, ec.operation_name)
        yield
