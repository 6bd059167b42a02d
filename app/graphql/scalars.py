"""The custom GraphQL scalars of the generated schema: `Decimal` (exact FHIR decimals) and `JSON` (raw input)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NewType

import strawberry
from graphql import GraphQLError
from graphql.language import (
    BooleanValueNode,
    EnumValueNode,
    FloatValueNode,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    ObjectValueNode,
    StringValueNode,
    ValueNode,
    VariableNode,
)
from strawberry.types.scalar import ScalarDefinition

from app.fhir.decimals import GRAMMAR_RULE, grammatical, plain_text

# Python-side names of the scalars; `scalar_map` ties them to their GraphQL definitions.
FhirDecimal = NewType("FhirDecimal", Decimal)
JSON = NewType("JSON", object)

DECIMAL_DESCRIPTION = (
    'FHIR decimal: serialized as a JSON string of the exact stored digits in plain notation ("100.10", "100", '
    'never "1E+2"); accepts a string in FHIR R5\'s decimal grammar or a number, never rounded through a binary '
    "float, with at most 18 digits before the point and 17 after."
)
JSON_DESCRIPTION = "Any JSON value, used for raw FHIR resources in `contained` on input (numbers stay exact decimals)."


def _finite(value: Decimal, shown: object) -> Decimal:
    if not value.is_finite():
        raise GraphQLError(f"Decimal cannot represent {shown!r}: expected a finite number like 100.10.")
    return value


def _from_text(text: str) -> Decimal:
    """The text's own digits, only in FHIR's grammar (Python's Decimal() would also read
    " 12 ", "1_000", "+5", ".5" and other scripts' digits)."""
    if not grammatical(text):
        shown = repr(text) if len(text) <= 40 else repr(text[:37]) + "..."
        raise GraphQLError(f"Decimal cannot represent {shown}: {GRAMMAR_RULE}.")
    return Decimal(text)  # grammatical text always reads, exactly (no context applies)


def _from_float(value: float) -> Decimal:
    # repr() is the shortest text that reads back as the same float, i.e. the digits a
    # client wrote (7.1 -> "7.1"); Decimal(value) would expose the binary expansion
    # 7.0999999999999996447... Only trailing zeros written by the client are already lost.
    return _from_text(repr(value))


def _decimal_from_python(value: object) -> Decimal:
    if isinstance(value, bool):  # bool is an int subclass: refuse `true` as 1
        raise GraphQLError(f"Decimal cannot represent a boolean: {value!r}.")
    if isinstance(value, Decimal):
        return _finite(value, value)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        return _from_text(value)
    if isinstance(value, float):
        return _from_float(value)
    raise GraphQLError(f"Decimal cannot represent {type(value).__name__} {value!r}: expected a string or a number.")


def serialize_decimal(value: object) -> str:
    """Output: the exact digits as a string in plain notation (`Decimal('100.10')` -> `"100.10"`, `1E+2` -> `"100"`)."""
    if value.__class__ is Decimal and value.is_finite():  # type: ignore[attr-defined]  # what the store returns
        return plain_text(value)  # type: ignore[arg-type]
    return plain_text(_decimal_from_python(value))


def parse_decimal_value(value: object) -> Decimal:
    """Variables: str, int or Decimal (the HTTP layer reads JSON numbers as Decimal)."""
    return _decimal_from_python(value)


_DECIMAL_LITERALS = (IntValueNode, FloatValueNode, StringValueNode)


def parse_decimal_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Decimal:
    """Inline literals: the token's own text, so `7.10` keeps both digits."""
    if isinstance(node, VariableNode):
        return parse_decimal_value((variables or {})[node.name.value])
    if not isinstance(node, _DECIMAL_LITERALS):
        raise GraphQLError(f"Decimal cannot represent literal {node.kind}: expected a number or a string.")
    return _from_text(node.value)


def _json_object(node: Any, variables: dict[str, Any] | None) -> dict[str, Any]:
    return {f.name.value: parse_json_literal(f.value, variables) for f in node.fields}


def _json_list(node: Any, variables: dict[str, Any] | None) -> list[Any]:
    return [parse_json_literal(v, variables) for v in node.values]


_JSON_LITERALS: dict[type, Any] = {
    ObjectValueNode: _json_object,
    ListValueNode: _json_list,
    StringValueNode: lambda node, _v: node.value,
    EnumValueNode: lambda node, _v: node.value,
    BooleanValueNode: lambda node, _v: node.value,
    IntValueNode: lambda node, _v: int(node.value),
    FloatValueNode: lambda node, _v: _from_text(node.value),
    NullValueNode: lambda _node, _v: None,
    VariableNode: lambda node, v: (v or {}).get(node.name.value),
}


def parse_json_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
    """Any GraphQL literal as plain JSON data; float literals become exact Decimals."""
    return _JSON_LITERALS[type(node)](node, variables)


def _identity(value: Any) -> Any:
    return value


def scalar_map() -> dict[object, ScalarDefinition]:
    """The `StrawberryConfig.scalar_map` entries of the generated schema."""
    return {
        FhirDecimal: strawberry.scalar(
            name="Decimal",
            description=DECIMAL_DESCRIPTION,
            specified_by_url="https://hl7.org/fhir/R5/datatypes.html#decimal",
            serialize=serialize_decimal,
            parse_value=parse_decimal_value,
            parse_literal=parse_decimal_literal,
        ),
        JSON: strawberry.scalar(
            name="JSON",
            description=JSON_DESCRIPTION,
            serialize=_identity,
            parse_value=_identity,
            parse_literal=parse_json_literal,
        ),
    }
