"""FHIR GraphQL's arguments on repeating elements (`name(use: official)`, `fhirpath`, `_offset`, `_count`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from graphql import (
    BooleanValueNode,
    EnumValueNode,
    FieldNode,
    FloatValueNode,
    GraphQLArgument,
    GraphQLField,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLString,
    IntValueNode,
    StringValueNode,
    ValueNode,
)

from app import elements
from app.graphql.naming import JSON_NAMES

# The complex property types an argument may name: matched by code, reference or identifier (app.elements).
MATCHED_TYPES = frozenset({"CodeableConcept", "Coding", "Reference", "Identifier", "CodeableReference"})
FIRST = "first"  # the directive that keeps one item; its home is app.graphql.directives
SLICE = "slice"
INDEX = "$index"  # @slice's path naming each item's slice by its position


def _parse_literal(node: ValueNode, _variables: Any = None) -> str:
    if isinstance(node, StringValueNode | EnumValueNode | IntValueNode | FloatValueNode):
        return node.value
    if isinstance(node, BooleanValueNode):
        return "true" if node.value else "false"
    raise TypeError(f"FilterValue is a string, a bare word, a number or a boolean; got {node.kind}")


def _parse_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | Decimal):
        return str(value)
    raise TypeError(f"FilterValue is a string, a number or a boolean; got {type(value).__name__}")


FILTER_VALUE = GraphQLScalarType(
    "FilterValue",
    description=(
        "The value a repeating element's property is compared with (`name(use: official)`): a bare word, a string, "
        "a number or a boolean. A primitive property matches its text, a CodeableConcept or Coding `code` or "
        "`system|code`, a Reference its `reference`, an Identifier `value` or `system|value`. Every repeating "
        "element also takes `fhirpath` (only the items it is true on), `_offset` and `_count` (0 to 1000)."
    ),
    serialize=str,
    parse_value=_parse_value,
    parse_literal=_parse_literal,
)

# Undescribed, as a description would print each list's arguments one a line: FilterValue's says what they do.
_COMMON = {
    elements.FHIRPATH: GraphQLArgument(GraphQLString),
    elements.OFFSET: GraphQLArgument(GraphQLInt),
    elements.COUNT: GraphQLArgument(GraphQLInt),
}


# An Extension's 50-odd `value[x]` choices, on 187 fields, would add a fifth to the SDL: `fhirpath` reads them.
_EXTENSION_ARGUMENTS = frozenset({"id", "url"})


def _nullable(type_: Any) -> Any:
    return type_.of_type if isinstance(type_, GraphQLNonNull) else type_


def list_arguments(item: Any) -> dict[str, GraphQLArgument]:
    """The arguments of a list of `item`: one per primitive or matched property of an object item, then
    `fhirpath`, `_offset`, `_count`. Properties are FHIR JSON names; `_x` primitive extensions take none."""
    args: dict[str, GraphQLArgument] = {}
    if isinstance(item, GraphQLObjectType):
        for name, field in item.fields.items():
            named = _nullable(field.type)
            if isinstance(named, GraphQLList):
                named = _nullable(named.of_type)
            definition = field.extensions.get("strawberry-definition")
            if name.startswith("_") or name in elements.RESERVED or getattr(definition, "base_resolver", None):
                continue
            if item.name == "Extension" and name not in _EXTENSION_ARGUMENTS:
                continue
            if isinstance(named, GraphQLScalarType) or named.name in MATCHED_TYPES:
                args[name] = GraphQLArgument(FILTER_VALUE)
    return {**args, **_COMMON}


def directive_given(nodes: Iterable[FieldNode], name: str) -> bool:
    return any(d.name.value == name for node in nodes for d in node.directives or ())


def element_list(key: str) -> Callable[..., Any]:
    """The resolver of a repeating element stored under `key`: its items as the arguments select them.

    Without arguments it is the stored list, as the default resolver's. A `@slice` field's labels are noted in
    the Context by response path (app.graphql.directives reads them: only the stored items have what a slice
    path reads, the response has what was selected)."""

    def resolve(root: Any, info: Any, **arguments: Any) -> Any:
        items = root.get(key)
        first = directive_given(info.field_nodes, FIRST)
        if arguments or first:
            items = select(items, arguments, first)
        path = slice_path(info.field_nodes, info.variable_values)
        if path is not None and isinstance(items, list):
            labels = [str(i) if path == INDEX else elements.label(path, item) for i, item in enumerate(items)]
            note_slices(info.context, tuple(info.path.as_list()), labels)
        return items

    resolve.element_key = key  # type: ignore[attr-defined]
    return resolve


def select(items: Any, arguments: dict[str, Any], first: bool) -> Any:
    return elements.select(items, arguments, first)


def element_key(field: GraphQLField) -> str | None:
    """The stored key of a repeating element's field; None for any other field."""
    return getattr(field.resolve, "element_key", None)


def slice_path(nodes: Iterable[FieldNode], variables: dict[str, Any]) -> str | None:
    for node in nodes:
        for directive in node.directives or ():
            if directive.name.value == SLICE:
                for arg in directive.arguments or ():
                    if arg.name.value == "path":
                        value = arg.value
                        if isinstance(value, StringValueNode):
                            return value.value
                        name = getattr(getattr(value, "name", None), "value", None)
                        found = variables.get(name) if name else None
                        return found if isinstance(found, str) else None
    return None


def note_slices(context: Any, path: tuple[Any, ...], labels: list[str]) -> None:
    slices = getattr(context, "slices", None)
    if slices is None:
        slices = {}
        context.slices = slices
    slices[path] = labels


def add_list_arguments(types: Iterable[GraphQLObjectType]) -> None:
    """Gives every repeating data element of `types` its arguments and its `element_list` resolver."""
    for type_ in types:
        for name, field in type_.fields.items():
            definition = field.extensions.get("strawberry-definition")
            if name.startswith("_") or definition is None or definition.base_resolver is not None:
                continue
            listed = _nullable(field.type)
            # "Primitive fields SHALL NOT have any arguments at all" (the specification): lists of them neither.
            if not isinstance(listed, GraphQLList) or isinstance(_nullable(listed.of_type), GraphQLScalarType):
                continue
            field.args = list_arguments(_nullable(listed.of_type))
            field.resolve = element_list(JSON_NAMES.get(definition.python_name, definition.python_name))
