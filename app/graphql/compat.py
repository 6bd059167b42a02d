"""Every use of Strawberry's private or internal API, in one place; tests/test_compat.py breaks when it changes.

Strawberry has no public seam for these. Each is small, and each is here so that an upgrade of the
pinned range (pyproject.toml) is checked in one file, by one test module, not found in production.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import strawberry
from graphql import DocumentNode, GraphQLDirective, GraphQLError, GraphQLNamedType, GraphQLSchema, ValidationRule
from strawberry.schema.schema import validate_document as _validate_document
from strawberry.types.field import StrawberryField
from strawberry.types.nodes import Selection, convert_selections
from strawberry.types.union import StrawberryUnion


def graphql_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """graphql-core's schema behind a Strawberry schema (Strawberry keeps it private as `_schema`)."""
    return schema._schema


def add_to_schema(
    schema: strawberry.Schema, directives: Sequence[GraphQLDirective], types: Sequence[GraphQLNamedType]
) -> None:
    """graphql-core directives and named types added to a built Strawberry schema: Strawberry makes directives
    that it executes per resolver (which would turn compiled execution off) and has no seam for plain ones."""
    old = schema._schema
    kwargs = old.to_kwargs()
    kwargs["directives"] = (*old.directives, *directives)
    kwargs["types"] = (*(kwargs.get("types") or ()), *types)
    schema._schema = GraphQLSchema(**kwargs)


def validate_document(
    schema: GraphQLSchema, document: DocumentNode, rules: Sequence[type[ValidationRule]]
) -> list[GraphQLError]:
    """Strawberry's own validation step (graphql-core's `validate` with Strawberry's rule handling)."""
    return list(_validate_document(schema, document, tuple(rules)))


class QuietSchema(strawberry.Schema):
    """Strawberry's schema without its own error logging: the HTTP layer logs each error once, by kind."""

    def process_errors(self, errors: Any, execution_context: Any = None) -> None:
        pass


class QuietView:
    """For Strawberry's HTTP view: no logging of result errors (`_handle_errors`), for the same reason."""

    def _handle_errors(self, errors: Any, response_data: Any) -> None:
        pass


class FixedTypeField(StrawberryField):
    """A field whose Strawberry type is known when it is created.

    Strawberry re-derives a field's type from its annotation each time it reads it (about eight
    times per field while building: a third of the build time); these fields answer with the type
    they were given, through the internal `resolve_type` hook.
    """

    fixed_type: object = None

    def resolve_type(self, *, type_definition: Any = None) -> Any:
        return self.fixed_type

    def __copy__(self) -> FixedTypeField:
        new = super().__copy__()
        new.fixed_type = self.fixed_type
        return new


class ResolvedUnion(StrawberryUnion):
    """A union whose member is named by one given function (the internal `get_type_resolver` hook),
    where Strawberry would try every member's `is_type_of`."""

    def __init__(self, type_resolver: Callable[[Any, Any, Any], str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.type_resolver = type_resolver

    def get_type_resolver(self, type_map: Any) -> Callable[[Any, Any, Any], str]:
        return self.type_resolver


def convert_input_with(cls: type, from_input: Callable[[type, Any, Any], Any]) -> None:
    """Strawberry's internal `from_input` hook of an input type: what a resolver receives for its values."""
    cls.__strawberry_definition__.from_input = from_input  # type: ignore[attr-defined]


def selected_fields(raw_info: Any) -> list[Selection]:
    """Strawberry's `Info.selected_fields`, from a raw resolve info (graphql-core's, or the compiled engine's)."""
    return convert_selections(raw_info, raw_info.field_nodes)
