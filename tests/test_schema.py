"""The generated GraphQL schema: the SDL snapshot, names, the Decimal scalar, and argument plumbing.

The recording context below stands in for `app.graphql.context.Context` only to check what the
generated resolvers pass it; no database behaviour is imitated (see the HTTP tests for that).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from graphql import GraphQLError, GraphQLSchema, parse_value

from app import errors
from app.errors import FinGateError
from app.fhir.model import SERVED, SERVED_RESOURCES
from app.graphql.build import SDL_HEADER, print_sdl, schema
from app.graphql.compat import graphql_schema
from app.graphql.naming import check_unique, object_type_names
from app.graphql.scalars import parse_decimal_literal, parse_decimal_value, serialize_decimal

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "schema" / "examples").glob("*.json") if not p.name.startswith("_"))


def read_example(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(), parse_float=Decimal)  # type: ignore[no-any-return]


def core_schema() -> GraphQLSchema:
    return graphql_schema(schema())  # the graphql-core schema Strawberry built


class RecordingContext:
    """Records each call a resolver makes and answers from fixed data."""

    def __init__(self, resource: dict[str, Any] | None = None, target: dict[str, Any] | None = None) -> None:
        self.resource = resource  # what reads and searches find
        self.target = target  # what every reference resolves to
        self.calls: list[tuple[Any, ...]] = []

    async def read(self, resource_type: str, id: str) -> dict[str, Any] | None:
        self.calls.append(("read", resource_type, id))
        return self.resource

    async def resolve(self, reference: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("resolve", reference.get("reference")))
        return self.target

    async def search(self, *args: Any, path: Any = None) -> list[dict[str, Any]]:
        self.calls.append(("search", *args))
        return [self.resource] if self.resource else []

    async def connection(self, *args: Any) -> dict[str, Any]:
        self.calls.append(("connection", *args))
        return {"count": 1, "first": "a", "next": None, "edges": [{"resource": self.resource}]}

    async def reverse(self, *args: Any, path: Any = None) -> list[dict[str, Any]]:
        self.calls.append(("reverse", *args))
        return []

    async def reverse_connection(self, *args: Any) -> dict[str, Any]:
        self.calls.append(("reverse_connection", *args))
        return {"count": 0, "edges": []}

    async def not_found(self, resource_type: str, id: str) -> FinGateError:
        return errors.not_found(resource_type, id)

    async def history(self, *args: Any) -> list[dict[str, Any]]:
        self.calls.append(("history", *args))
        return [self.resource] if self.resource else []

    async def create(self, resource_type: str, resource: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", resource_type, resource))
        return resource

    async def update(self, *args: Any) -> dict[str, Any]:
        self.calls.append(("update", *args))
        return args[2]  # type: ignore[no-any-return]

    async def delete(self, *args: Any) -> dict[str, Any]:
        self.calls.append(("delete", *args))
        return {"resourceType": args[0], "id": args[1]}


async def run(query: str, context: RecordingContext, **variables: Any) -> Any:
    return await schema().execute(query, variable_values=variables, context_value=context)


def codes(result: Any) -> list[str]:
    return [e.extensions["code"] for e in result.errors or []]


# --- (a) the committed SDL ---------------------------------------------------------------------


def test_sdl_matches_the_committed_snapshot() -> None:
    committed = (ROOT / "schema" / "fingate.graphql").read_text()
    assert print_sdl() == committed, "schema/fingate.graphql is stale: run `make sdl` and review the diff"


def test_sdl_is_headed_by_its_origin_and_ends_with_a_newline() -> None:
    sdl = print_sdl()
    assert sdl.startswith(SDL_HEADER) and "FHIR R5 (5.0.0)" in SDL_HEADER
    assert sdl.endswith("}\n")


# --- (b) names ---------------------------------------------------------------------------------

FIELD_TYPES = [
    ("PaymentReconciliationAllocation", "target", "Reference"),
    ("PaymentReconciliationAllocation", "targetItemString", "String"),
    ("PaymentReconciliationAllocation", "targetItemIdentifier", "Identifier"),
    ("PaymentReconciliationAllocation", "targetItemPositiveInt", "Int"),
    ("PaymentReconciliation", "allocation", "[PaymentReconciliationAllocation!]"),
    ("PaymentReconciliation", "resourceType", "String"),
    # The specification page's elements (README "PaymentReconciliation: the specification page").
    ("PaymentReconciliation", "statusReason", "String"),
    ("PaymentReconciliation", "_statusReason", "Element"),
    ("PaymentReconciliationAllocation", "noteNumber", "[Int]"),
    ("PaymentReconciliationProcessNote", "class", "CodeableConcept"),
    ("PaymentReconciliationProcessNote", "number", "Int"),
    ("PaymentReconciliationInput", "statusReason", "String"),
    ("PaymentReconciliationAllocationInput", "noteNumber", "[Int]"),
    ("PaymentReconciliationProcessNoteInput", "class", "CodeableConceptInput"),
    ("PaymentReconciliationProcessNoteInput", "number", "Int"),
    ("PaymentReconciliationBilling", "unallocated", "[BillingAmount!]"),  # null without an amount
    ("Claim", "id", "ID"),
    ("Claim", "contained", "[ContainedResource!]"),
    ("Claim", "_created", "Element"),
    ("Coverage", "class", "[CoverageClass!]"),
    ("Task", "for", "Reference"),
    ("Task", "input", "[TaskInputBackbone!]"),
    ("Money", "value", "Decimal"),
    ("Money", "_value", "Element"),
    ("Quantity", "value", "Decimal"),
    ("Patient", "birthDate", "String"),
    ("Patient", "_birthDate", "Element"),
    ("HumanName", "given", "[String]"),
    ("HumanName", "_given", "[Element]"),
    ("Element", "extension", "[Extension!]"),
    ("Reference", "resource", "Resource"),
    ("Reference", "id", "String"),
    ("ClaimConnection", "edges", "[ClaimConnectionEdge!]!"),
    ("ClaimConnectionEdge", "resource", "Claim!"),
    ("ClaimInput", "contained", "[JSON!]"),
    ("ClaimInput", "resourceType", "String"),
    ("TaskInput", "input", "[TaskInputBackboneInput!]"),
    ("MoneyInput", "value", "Decimal"),
    ("PatientInput", "_birthDate", "ElementInput"),
    ("Claim", "ClaimResponseList", "[ClaimResponse!]"),
]


@pytest.mark.parametrize(("type_name", "field", "expected"), FIELD_TYPES)
def test_field_type(type_name: str, field: str, expected: str) -> None:
    assert str(core_schema().type_map[type_name].fields[field].type) == expected  # type: ignore[attr-defined]


# FHIRPath System.String elements (ids, Extension.url) and xhtml carry no extensions in FHIR JSON.
ABSENT_FIELDS = [("Claim", "_id"), ("Money", "_id"), ("Extension", "_url"), ("Narrative", "_div"), ("Task", "class")]


@pytest.mark.parametrize(("type_name", "field"), ABSENT_FIELDS)
def test_field_is_absent(type_name: str, field: str) -> None:
    assert field not in core_schema().type_map[type_name].fields  # type: ignore[attr-defined]


ROOT_FIELDS = [
    ("query", "Claim", {"id": "ID!"}, "Claim"),
    ("query", "ClaimHistory", {"id": "ID!"}, "[Claim!]"),  # nullable: a NOT_FOUND/FORBIDDEN spares its siblings
    ("query", "ClaimConnection", {"_cursor": "String", "_count": "Int", "status": "[String!]"}, "ClaimConnection"),
    (
        "query",
        "PaymentReconciliationList",
        {"payment_issuer": "[String!]", "allocation_target": "[String!]", "_id": "[String!]", "_lastUpdated": "[String!]",
         "_count": "Int", "_offset": "Int", "_sort": "String"},
        "[PaymentReconciliation!]",
    ),
    ("mutation", "ClaimCreate", {"res": "ClaimInput!"}, "Claim"),
    ("mutation", "ClaimUpdate", {"id": "ID!", "res": "ClaimInput!", "ifMatch": "String"}, "Claim"),
    ("mutation", "ClaimDelete", {"id": "ID!"}, "Claim"),
]  # fmt: skip


@pytest.mark.parametrize(("root", "name", "args", "returns"), ROOT_FIELDS)
def test_root_field(root: str, name: str, args: dict[str, str], returns: str) -> None:
    field = getattr(core_schema(), f"{root}_type").fields[name]
    assert str(field.type) == returns
    assert {arg: str(field.args[arg].type) for arg in args} == args


def test_every_served_type_has_its_root_fields_and_reverse_lists() -> None:
    gql = core_schema()
    reverse = {name for name in gql.type_map["Claim"].fields if name.endswith("List")}  # type: ignore[attr-defined]
    for t in SERVED_RESOURCES:
        assert {t, f"{t}List", f"{t}Connection", f"{t}History"} <= gql.query_type.fields.keys()  # type: ignore[union-attr]
        assert {f"{t}Create", f"{t}Update", f"{t}Delete"} <= gql.mutation_type.fields.keys()  # type: ignore[union-attr]
        assert reverse <= gql.type_map[t].fields.keys()  # type: ignore[attr-defined]
    assert {m.name for m in gql.type_map["Resource"].types} == SERVED  # type: ignore[attr-defined]


def test_reverse_list_takes_the_reference_parameters_of_the_listed_type() -> None:
    gql = core_schema()
    field = gql.type_map["Claim"].fields["ClaimResponseList"]  # type: ignore[attr-defined]
    assert str(field.args["_reference"].type) == "ClaimResponse_reference!"
    assert {"outcome", "_count", "_sort"} <= field.args.keys()
    assert set(gql.type_map["ClaimResponse_reference"].values) == {"insurer", "patient", "request", "requestor"}  # type: ignore[attr-defined]


DESCRIPTIONS = [
    ("Claim", "status", "Allowed codes: active | cancelled | draft | entered-in-error."),
    ("Task", "input", "renamed because TaskInput is the input type of Task"),
    ("Patient", "_birthDate", "primitive extension"),
    ("PaymentReconciliation", "statusReason", "(specification page, FHIR current build; not in R5 5.0.0)"),
    ("PaymentReconciliation", "amount", "(specification page, FHIR current build: 0..1; R5 5.0.0: 1..1)"),
    ("PaymentReconciliationProcessNote", "number", "Note instance identifier (specification page"),
]


@pytest.mark.parametrize(("type_name", "field", "text"), DESCRIPTIONS)
def test_field_description(type_name: str, field: str, text: str) -> None:
    assert text in core_schema().type_map[type_name].fields[field].description  # type: ignore[attr-defined]


def test_types_record_their_fhir_origin() -> None:
    gql = core_schema()
    assert gql.type_map["Claim"].description.endswith("FHIR R5 (5.0.0) http://hl7.org/fhir/StructureDefinition/Claim")  # type: ignore[union-attr]
    assert "element PaymentReconciliation.allocation" in gql.type_map["PaymentReconciliationAllocation"].description  # type: ignore[operator]


def test_only_colliding_backbones_are_renamed() -> None:
    from app.fhir.model import spec

    renamed = {k: v for k, v in object_type_names(spec().types.values()).items() if k != v}
    assert renamed == {"TaskInput": "TaskInputBackbone"}


def test_duplicate_names_fail_with_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match=r"duplicate GraphQL type names: TaskInput \(type TaskInput and input of Task\)"
    ):
        check_unique([("TaskInput", "type TaskInput"), ("Task", "type Task"), ("TaskInput", "input of Task")])


# --- (c) the Decimal scalar --------------------------------------------------------------------

SERIALIZED = [(Decimal("100.10"), "100.10"), (Decimal("-1500.00"), "-1500.00"), (7, "7"), (Decimal("1E+3"), "1000")]


@pytest.mark.parametrize(("value", "text"), SERIALIZED)
def test_decimal_serializes_the_exact_digits_as_a_string(value: object, text: str) -> None:
    assert serialize_decimal(value) == text


PARSED_VALUES = [
    ("100.10", Decimal("100.10")),
    (7, Decimal(7)),
    (Decimal("7.10"), Decimal("7.10")),
    (7.1, Decimal("7.1")),
]


@pytest.mark.parametrize(("value", "expected"), PARSED_VALUES)
def test_decimal_parses_variables_without_float_rounding(value: object, expected: Decimal) -> None:
    parsed = parse_decimal_value(value)
    assert parsed == expected and str(parsed) == str(expected)


@pytest.mark.parametrize("value", [True, "NaN", "Infinity", float("nan"), "1,5", "", None, [1]])
def test_decimal_rejects_non_numbers(value: object) -> None:
    with pytest.raises(GraphQLError, match="Decimal cannot represent"):
        parse_decimal_value(value)


PARSED_LITERALS = [("7.10", "7.10"), ("100", "100"), ('"3.50"', "3.50"), ("-0.00", "-0.00"), ("1e3", "1E+3")]


@pytest.mark.parametrize(("literal", "text"), PARSED_LITERALS)
def test_decimal_parses_literals_from_their_text(literal: str, text: str) -> None:
    assert str(parse_decimal_literal(parse_value(literal))) == text


@pytest.mark.parametrize("literal", ["true", "null", "[1]", "{value: 1}", "RED"])
def test_decimal_rejects_other_literals(literal: str) -> None:
    with pytest.raises(GraphQLError, match="Decimal cannot represent"):
        parse_decimal_literal(parse_value(literal))


# --- (d) argument plumbing, through execution --------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
async def test_create_receives_the_example_exactly(path: Path) -> None:
    example = read_example(path)
    t = example["resourceType"]
    ctx = RecordingContext()
    result = await run(f"mutation($res: {t}Input!) {{ {t}Create(res: $res) {{ id }} }}", ctx, res=example)
    assert result.errors is None
    assert ctx.calls == [("create", t, example)]


def _selection(items: list[dict[str, Any]]) -> str:
    """A selection set asking for every key the items hold (contained resources by type)."""
    merged: dict[str, list[Any]] = {}
    for item in items:
        for key, value in item.items():
            merged.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    parts = []
    for key, values in merged.items():
        dicts = [v for v in values if isinstance(v, dict)]
        if key == "contained":
            by_type: dict[str, list[dict[str, Any]]] = {}
            for r in dicts:
                by_type.setdefault(r["resourceType"] if r["resourceType"] in SERVED else "UnservedResource", []).append(
                    r
                )
            fragments = [
                f"... on {t} {{ {_selection(rs) if t in SERVED else 'resourceType id'} }}" for t, rs in by_type.items()
            ]
            parts.append(f"contained {{ {' '.join(fragments)} }}")
        else:
            parts.append(f"{key} {{ {_selection(dicts)} }}" if dicts else key)
    return " ".join(parts)


def _as_output(value: Any) -> Any:
    """FHIR JSON as the schema returns it: numbers as their text (decimals are strings), no nulls."""
    if isinstance(value, dict):
        if value.get("resourceType", "Account") not in SERVED:  # an unserved contained resource
            return {"resourceType": value["resourceType"], "id": value["id"]}
        return {k: _as_output(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_as_output(v) for v in value]
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)
    return value


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
async def test_read_returns_the_example(path: Path) -> None:
    example = read_example(path)
    t = example["resourceType"]
    ctx = RecordingContext(example)
    result = await run(f"query($id: ID!) {{ {t}(id: $id) {{ {_selection([example])} }} }}", ctx, id=example["id"])
    assert result.errors is None
    assert _as_output(result.data[t]) == _as_output(example)
    assert ctx.calls[0] == ("read", t, example["id"])


async def test_decimals_are_strings_with_their_digits() -> None:
    example = read_example(ROOT / "schema" / "examples" / "PaymentReconciliation-ER2500.json")
    query = '{ PaymentReconciliation(id: "ER2500") { amount { value currency } allocation { amount { value } } } }'
    result = await run(query, RecordingContext(example))
    assert result.data["PaymentReconciliation"] == {
        "amount": {"value": "7000.00", "currency": "USD"},
        "allocation": [{"amount": {"value": v}} for v in ("3500.00", "4000.00", "-1500.00")],
    }


async def test_inline_literals_keep_their_digits_and_nulls_are_dropped() -> None:
    ctx = RecordingContext()
    query = """mutation { PaymentReconciliationCreate(res: {
        status: "draft", amount: {value: 7.10, currency: null}, _created: {id: "c"},
        contained: [{resourceType: "Patient", id: "p", multipleBirthInteger: 2}, {resourceType: "Device", x: 1.50}]
    }) { id } }"""
    result = await run(query, ctx)
    assert result.errors is None
    assert ctx.calls == [
        (
            "create",
            "PaymentReconciliation",
            {
                "resourceType": "PaymentReconciliation",
                "contained": [
                    {"resourceType": "Patient", "id": "p", "multipleBirthInteger": 2},
                    {"resourceType": "Device", "x": Decimal("1.50")},
                ],
                "status": "draft",
                "_created": {"id": "c"},
                "amount": {"value": Decimal("7.10")},
            },
        )
    ]
    assert str(ctx.calls[0][2]["amount"]["value"]) == "7.10"


async def test_decimal_variable_rejects_a_boolean() -> None:
    query = "mutation($v: Decimal) { MoneyCheck: PaymentNoticeCreate(res: {amount: {value: $v}}) { id } }"
    result = await run(query, RecordingContext(), v=True)
    assert result.errors and "Decimal cannot represent a boolean" in result.errors[0].message


async def test_primitive_arrays_keep_null_items_aligned_with_their_extensions() -> None:
    patient = {"resourceType": "Patient", "name": [{"given": ["Pete", None], "_given": [None, {"id": "g2"}]}]}
    ctx = RecordingContext()
    result = await run("mutation($p: PatientInput!) { PatientCreate(res: $p) { id } }", ctx, p=patient)
    assert result.errors is None
    assert ctx.calls == [("create", "Patient", patient)]


async def test_a_different_resource_type_is_bad_input() -> None:
    ctx = RecordingContext()
    result = await run('mutation { ClaimCreate(res: {resourceType: "Invoice", status: "draft"}) { id } }', ctx)
    assert codes(result) == ["BAD_USER_INPUT"] and ctx.calls == []


async def test_update_and_delete_pass_id_and_if_match() -> None:
    ctx = RecordingContext()
    await run('mutation { ClaimUpdate(id: "1", res: {status: "active"}, ifMatch: "3") { id } }', ctx)
    await run('mutation { ClaimDelete(id: "1") { id } }', ctx)
    assert ctx.calls == [
        ("update", "Claim", "1", {"resourceType": "Claim", "status": "active"}, "3"),
        ("delete", "Claim", "1"),
    ]


async def test_read_of_a_missing_resource_is_not_found() -> None:
    result = await run('{ Claim(id: "nope") { id } }', RecordingContext(None))
    assert codes(result) == ["NOT_FOUND"]


SEARCHES = [
    (
        '{ PaymentReconciliationList(payment_issuer: "Organization/2", _lastUpdated: "ge2024", _count: 5, _offset: 10, _sort: "-created") { id } }',
        ("search", "PaymentReconciliation", {"payment-issuer": ["Organization/2"], "_lastUpdated": ["ge2024"]}, 5, 10, "-created"),
    ),
    (
        '{ ClaimList(status: null) { id } }',
        ("search", "Claim", {}, None, None, None),
    ),
    (
        '{ InvoiceConnection(_id: "a,b", _count: 2, _cursor: "c1") { count edges { resource { id } } } }',
        ("connection", "Invoice", {"_id": ["a,b"]}, 2, "c1", None),
    ),
    (  # a list is AND: the values stay apart
        '{ ClaimList(created: ["ge2026-11-01", "lt2026-12-01"], status: ["active"]) { id } }',
        ("search", "Claim", {"created": ["ge2026-11-01", "lt2026-12-01"], "status": ["active"]}, None, None, None),
    ),
    ('{ AccountHistory(id: "7") { id } }', ("history", "Account", "7")),
]  # fmt: skip


@pytest.mark.parametrize(("query", "call"), SEARCHES)
async def test_search_arguments_reach_the_context_keyed_by_code(query: str, call: tuple[Any, ...]) -> None:
    ctx = RecordingContext({"resourceType": call[1], "id": "x"})
    result = await run(query, ctx)
    assert result.errors is None
    assert ctx.calls == [call]


async def test_reverse_list_passes_parameter_code_and_target() -> None:
    ctx = RecordingContext({"resourceType": "Claim", "id": "x"})
    query = '{ Claim(id: "x") { ClaimResponseList(_reference: request, outcome: "complete", _count: 2) { id } '
    query += "PaymentReconciliationList(_reference: allocation_target) { id } } }"
    result = await run(query, ctx)
    assert result.errors is None
    assert ctx.calls[1:] == [
        ("reverse", "ClaimResponse", "request", "Claim/x", {"outcome": ["complete"]}, 2, None, None),
        ("reverse", "PaymentReconciliation", "allocation-target", "Claim/x", {}, None, None, None),
    ]


async def test_reverse_list_passes_its_offset_and_a_reverse_connection_its_cursor() -> None:
    ctx = RecordingContext({"resourceType": "Claim", "id": "x"})
    query = '{ Claim(id: "x") { ClaimResponseList(_reference: request, _offset: 3, _sort: "-payment_date") { id } '
    query += (
        'ClaimResponseConnection(_reference: request, _count: 2, _cursor: "c1", _sort: "-payment_date") { count } } }'
    )
    result = await run(query, ctx)
    assert result.errors is None
    assert ctx.calls[1:] == [
        ("reverse", "ClaimResponse", "request", "Claim/x", {}, None, 3, "-payment-date"),
        ("reverse_connection", "ClaimResponse", "request", "Claim/x", 2, "c1", "-payment-date"),
    ]


REFERENCED = [
    ({"resourceType": "Organization", "id": "2", "name": "Payer"}, {"__typename": "Organization", "name": "Payer"}),
    ({"resourceType": "Device", "id": "d"}, None),  # not served: null, never an error
    (None, None),
]


@pytest.mark.parametrize(("target", "expected"), REFERENCED)
async def test_reference_resource(target: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    payment = {"resourceType": "PaymentReconciliation", "id": "p", "paymentIssuer": {"reference": "Organization/2"}}
    ctx = RecordingContext(payment, target)
    query = (
        '{ PaymentReconciliation(id: "p") { paymentIssuer { resource { __typename ... on Organization { name } } } } }'
    )
    result = await run(query, ctx)
    assert result.errors is None
    assert result.data["PaymentReconciliation"]["paymentIssuer"]["resource"] == expected
    assert ctx.calls[1] == ("resolve", "Organization/2")
