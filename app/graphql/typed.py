"""`resource(type: Claim) { id }`: a typed resource's fields selected directly, as the FHIR GraphQL specification writes.

`Reference.resource` is a union (a field has one type), so GraphQL would ask for `... on Claim { id }`. With a
literal `type`, the fields selected directly are read as that fragment: the document is rewritten after parsing,
before validation, into the form the schema knows. Both execution paths, the limits and the plan cache see the
rewritten document; error locations still point at the text the client sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    DocumentNode,
    EnumValueNode,
    FieldNode,
    InlineFragmentNode,
    NamedTypeNode,
    NameNode,
    SelectionSetNode,
    Visitor,
    visit,
)
from strawberry.extensions import SchemaExtension

RESOURCE, TYPE = "resource", "type"


def _type_argument(node: FieldNode) -> str | None:
    for arg in node.arguments or ():
        if arg.name.value == TYPE and isinstance(arg.value, EnumValueNode):
            return arg.value.value
    return None


class _Typed(Visitor):
    def enter_field(self, node: FieldNode, *_: Any) -> FieldNode | None:
        wanted = _type_argument(node) if node.name.value == RESOURCE and node.selection_set else None
        if wanted is None:
            return None
        assert node.selection_set is not None
        direct = [s for s in node.selection_set.selections if isinstance(s, FieldNode) and s.name.value != "__typename"]
        if not direct:
            return None
        kept = [s for s in node.selection_set.selections if not (isinstance(s, FieldNode) and s in direct)]
        fragment = InlineFragmentNode(
            type_condition=NamedTypeNode(name=NameNode(value=wanted)),
            directives=(),
            selection_set=SelectionSetNode(selections=tuple(direct)),
        )
        selection_set = SelectionSetNode(selections=(*kept, fragment), loc=node.selection_set.loc)
        return FieldNode(
            alias=node.alias,
            name=node.name,
            arguments=node.arguments,
            directives=node.directives,
            selection_set=selection_set,
            loc=node.loc,
        )


_DONE: dict[str, tuple[DocumentNode, DocumentNode]] = {}  # query text -> (parsed, rewritten), bounded
_MAX = 2048


def typed(document: DocumentNode, query: str | None = None) -> DocumentNode:
    """The document with every `resource(type: T) { f }` read as `resource(type: T) { ... on T { f } }`."""
    if query is not None:
        if "resource" not in query or TYPE not in query:
            return document
        known = _DONE.get(query)
        if known is not None and known[0] is document:
            return known[1]
    rewritten: DocumentNode = visit(document, _Typed())
    if query is not None:
        if len(_DONE) >= _MAX:
            _DONE.clear()
        _DONE[query] = (document, rewritten)
    return rewritten


class TypedResource(SchemaExtension):
    """Rewrites the parsed document (`typed`), before validation."""

    def on_parse(self) -> Iterator[None]:
        yield
        ec = self.execution_context
        if ec.graphql_document is not None:
            ec.graphql_document = typed(ec.graphql_document, ec.query)
