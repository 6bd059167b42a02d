"""Strawberry's private API as app/graphql/compat.py uses it: each hook still exists and still has its effect.

When an upgrade of the pinned strawberry-graphql range changes one of them, a test here fails by name,
before any other test fails for a reason that is hard to trace back.
"""

from __future__ import annotations

import inspect
import logging

import pytest
import strawberry
from graphql import DirectiveLocation, GraphQLDirective, GraphQLScalarType, GraphQLSchema, GraphQLUnionType, parse
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.types.field import StrawberryField
from strawberry.types.union import StrawberryUnion

from app.graphql.build import schema
from app.graphql.compat import (
    FixedTypeField,
    QuietSchema,
    QuietView,
    ResolvedUnion,
    add_to_schema,
    convert_input_with,
    graphql_schema,
    validate_document,
)
from app.graphql.resolvers import resolve_resource_type


def test_the_graphql_core_schema_is_reachable() -> None:
    assert isinstance(graphql_schema(schema()), GraphQLSchema)
    assert graphql_schema(schema()).get_type("PaymentReconciliation") is not None


def test_validate_document_is_strawberrys_validation_step() -> None:
    core = graphql_schema(schema())
    assert validate_document(core, parse("{ __typename }"), ()) == []
    errors = validate_document(core, parse("{ NoSuchField }"), ())
    assert errors == []  # with no rules given, nothing is checked: the rules are the caller's
    from graphql import specified_rules

    assert [e.message for e in validate_document(core, parse("{ NoSuchField }"), specified_rules)]


async def test_quiet_schema_logs_no_errors(caplog: pytest.LogCaptureFixture) -> None:
    @strawberry.type
    class Query:
        @strawberry.field
        def boom(self) -> int:
            raise ValueError("boom")

    caplog.set_level(logging.DEBUG)
    loud = await strawberry.Schema(query=Query).execute("{ boom }")
    assert loud.errors and any("boom" in r.getMessage() or r.exc_info for r in caplog.records)
    caplog.clear()
    quiet = await QuietSchema(query=Query).execute("{ boom }")
    assert quiet.errors and not caplog.records


def test_the_http_view_still_calls_handle_errors() -> None:
    assert "self._handle_errors(" in inspect.getsource(AsyncBaseHTTPView.run)
    names = list(inspect.signature(AsyncBaseHTTPView._handle_errors).parameters)
    assert names == list(inspect.signature(QuietView._handle_errors).parameters) == ["self", "errors", "response_data"]


def test_fixed_type_fields_answer_their_type() -> None:
    assert "type_definition" in inspect.signature(StrawberryField.resolve_type).parameters
    field = FixedTypeField(python_name="x", graphql_name="x")
    field.fixed_type = int
    assert field.type is int and field.resolve_type() is int
    assert field.__copy__().type is int


def test_a_resolved_union_names_its_member_by_the_given_function() -> None:
    """What the compiled engine relies on: graphql-core's union calls exactly the function given."""
    assert "type_map" in inspect.signature(StrawberryUnion.get_type_resolver).parameters
    union = graphql_schema(schema()).get_type("Resource")
    assert isinstance(union, GraphQLUnionType) and union.resolve_type is resolve_resource_type
    assert ResolvedUnion.get_type_resolver is not StrawberryUnion.get_type_resolver


@strawberry.input
class _In:
    name: str


@strawberry.type
class _EchoQuery:
    @strawberry.field
    def echo(self, value: _In) -> str:
        return repr(value)


async def test_convert_input_with_hands_the_resolver_what_the_hook_returns() -> None:
    convert_input_with(_In, lambda cls, value, context: {"converted": dict(value)})
    result = await strawberry.Schema(query=_EchoQuery).execute('{ echo(value: { name: "x" }) }')
    assert result.errors is None and result.data == {"echo": repr({"converted": {"name": "x"}})}


async def test_add_to_schema_gives_strawberry_graphql_core_directives_and_types() -> None:
    @strawberry.type
    class Query:
        n: int = 1

    built = strawberry.Schema(query=Query)
    extra = GraphQLScalarType("Extra")
    add_to_schema(built, [GraphQLDirective("shape", [DirectiveLocation.FIELD])], [extra])
    assert graphql_schema(built).get_type("Extra") is extra
    assert "directive @shape on FIELD" in built.as_str() and "scalar Extra" in built.as_str()
    result = await built.execute("{ n @shape }", root_value=Query())  # validation knows it; execution ignores it
    assert result.errors is None and result.data == {"n": 1}
