"""The FHIR GraphQL specification (R5 graphql.html): Reference.resource's arguments, list arguments, directives.

Each query runs on both execution paths, which must answer byte for byte alike; the specification's own
example queries are adapted to the served resources and the demo data."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.graphql.apq import sha256
from app.graphql.compiled import CompiledEngine
from app.http import loads
from app.settings import Settings
from app.store import Store
from tests.harness import client_for

Clients = tuple[httpx.AsyncClient, httpx.AsyncClient]

# The specification's Patient example, cut to what these tests read: names of several uses, an extension.
PATIENT = {
    "resourceType": "Patient",
    "id": "spec-patient",
    "extension": [
        {"url": "http://example.org/fhir/StructureDefinition/birth-order", "valueInteger": 2},
        {"url": "http://example.org/fhir/StructureDefinition/nickname", "valueString": "Jim"},
    ],
    "name": [
        {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
        {"use": "usual", "given": ["Jim"]},
        {"use": "maiden", "family": "Windsor", "given": ["Peter", "James"]},
    ],
    "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
    "active": True,
    "gender": "male",
}


@pytest.fixture(scope="module")
async def clients(demo_store: Store) -> AsyncIterator[Clients]:
    await demo_store.db["Patient"].insert_one(
        {**PATIENT, "_id": f"{demo_store.tenant}/{PATIENT['id']}", "_tenant": demo_store.tenant}
    )
    compiled = client_for(demo_store, settings=Settings(compiled=True))
    reference = client_for(demo_store, settings=Settings(compiled=False))
    async with compiled, reference:
        yield compiled, reference


def _engine(client: httpx.AsyncClient) -> CompiledEngine:
    return client.fingate_app.state.compiled_engine  # type: ignore[attr-defined,no-any-return]


async def answer(clients: Clients, query: str, variables: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The answer (parsed) of both paths, asserted byte-identical, and which way the compiled app answered."""
    body = json.dumps({"query": query, "variables": variables or {}})
    headers = {"content-type": "application/json"}
    engine = _engine(clients[0])
    before = engine.stats.copy()
    a = await clients[0].post("/graphql", content=body, headers=headers)
    b = await clients[1].post("/graphql", content=body, headers=headers)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    ra, rb = (r.content.replace(r.headers["x-request-id"].encode(), b"<id>") for r in (a, b))
    assert ra == rb, (query, ra, rb)
    took = next((k for k in ("compiled", "fallback", "unsupported") if engine.stats[k] > before[k]), "none")
    return loads(a.content), took


def data(result: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in result, result["errors"]
    return result["data"]  # type: ignore[no-any-return]


def codes(result: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in result.get("errors", [])]


# -- Reference.resource(type:, optional:) ----------------------------------------------------------


async def test_resource_type_resolves_only_a_target_of_that_type(clients: Clients) -> None:
    query = """{ PaymentReconciliation(id: "demo-payment-1") { allocation(_count: 2) {
        target { claim: resource(type: Claim) { ... on Claim { id } } other: resource(type: Invoice) { __typename } }
    } } }"""
    result, took = await answer(clients, query)
    allocations = data(result)["PaymentReconciliation"]["allocation"]
    assert [a["target"]["claim"]["id"] for a in allocations] == ["demo-claim-01", "demo-claim-02"]
    assert [a["target"]["other"] for a in allocations] == [None, None]
    assert took == "compiled"


async def test_resource_optional(clients: Clients) -> None:
    """ER2500's allocations point by identifier only and outside: null by default and with `optional: true`,
    NOT_FOUND with `optional: false`, the rest of the answer kept."""
    query = """{ PaymentReconciliation(id: "ER2500") { allocation(_count: 2) { target {
        plain: resource { __typename } optional: resource(optional: true) { __typename } } } } }"""
    result, _ = await answer(clients, query)
    assert data(result)["PaymentReconciliation"]["allocation"] == [
        {"target": {"plain": None, "optional": None}},
        {"target": {"plain": None, "optional": None}},
    ]
    strict = """{ PaymentReconciliation(id: "ER2500") { id allocation(_count: 2) { target {
        resource(optional: false) { __typename } } } } }"""
    result, _ = await answer(clients, strict)
    assert codes(result) == ["NOT_FOUND", "NOT_FOUND"]
    assert result["errors"][1]["path"] == ["PaymentReconciliation", "allocation", 1, "target", "resource"]
    assert result["data"]["PaymentReconciliation"]["id"] == "ER2500"
    resolved = '{ PaymentReconciliation(id: "ER2500") { allocation(_count: 1) { submitter { resource(optional: false, type: Organization) { ... on Organization { id } } } } } }'
    result, _ = await answer(clients, resolved)
    assert data(result)["PaymentReconciliation"]["allocation"][0]["submitter"]["resource"] == {"id": "1"}


async def test_a_typed_resource_selects_its_fields_directly(clients: Clients) -> None:
    """The specification's `resource(type: Patient) { birthDate }`: with a literal type, no fragment is needed
    (the fields are read as `... on Claim`), beside fragments and `__typename`."""
    query = """{ PaymentReconciliation(id: "demo-payment-1") { allocation(_count: 2) {
        target { resource(type: Claim) { __typename id status ... on Claim { use } } }
        response { typed: resource(type: ClaimResponse) { id } other: resource(type: Claim) { id } }
    } } }"""
    result, took = await answer(clients, query)
    allocations = data(result)["PaymentReconciliation"]["allocation"]
    assert allocations[0]["target"]["resource"] == {
        "__typename": "Claim",
        "use": "claim",
        "id": "demo-claim-01",
        "status": "active",
    }
    assert [a["response"] for a in allocations] == [
        {"typed": {"id": "demo-claimresponse-01"}, "other": None},
        {"typed": {"id": "demo-claimresponse-02"}, "other": None},
    ]
    assert took == "compiled"
    untyped = '{ PaymentReconciliation(id: "demo-payment-1") { allocation { target { resource { id } } } } }'
    result, _ = await answer(clients, untyped)
    assert "Cannot query field 'id' on type 'Resource'" in result["errors"][0]["message"]


async def test_a_typed_resource_in_a_persisted_query(clients: Clients) -> None:
    """Registering a persisted query validates it as a request would: the typed form is accepted there too."""
    query = '{ PaymentReconciliation(id: "demo-payment-1") { allocation(_count: 1) { target { resource(type: Claim) { id } } } } }'
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": sha256(query)}}
    registered = await clients[0].post("/graphql", json={"query": query, "extensions": persisted})
    again = await clients[0].post("/graphql", json={"extensions": persisted})
    for response in (registered, again):
        assert data(response.json())["PaymentReconciliation"]["allocation"] == [
            {"target": {"resource": {"id": "demo-claim-01"}}}
        ]


# -- list arguments --------------------------------------------------------------------------------


async def test_a_property_argument_filters_a_list(clients: Clients) -> None:
    """The specification's `name(use: official)`: a bare word compared with the property's value."""
    result, took = await answer(
        clients,
        '{ Patient(id: "spec-patient") { name(use: official) { family given } usual: name(use: "usual") { given } } }',
    )
    assert data(result)["Patient"] == {
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "usual": [{"given": ["Jim"]}],
    }
    assert took == "compiled"


async def test_extension_by_url(clients: Clients) -> None:
    query = '{ Patient(id: "spec-patient") { extension(url: "http://example.org/fhir/StructureDefinition/nickname") { valueString } } }'
    result, _ = await answer(clients, query)
    assert data(result)["Patient"]["extension"] == [{"valueString": "Jim"}]


async def test_a_coded_property_matches_code_or_system_and_code(clients: Clients) -> None:
    query = """{ PaymentReconciliation(id: "ER2500") {
        advance: allocation(type: advance) { amount { value } }
        payment: allocation(type: "http://terminology.hl7.org/CodeSystem/payment-type|payment") { amount { value } }
        none: allocation(type: "http://example.org/other|payment") { amount { value } }
    } }"""
    result, _ = await answer(clients, query)
    found = data(result)["PaymentReconciliation"]
    assert [a["amount"]["value"] for a in found["advance"]] == ["-1500.00"]
    assert [a["amount"]["value"] for a in found["payment"]] == ["3500.00", "4000.00"]
    assert found["none"] == []


async def test_a_reference_and_an_identifier_property(clients: Clients) -> None:
    query = """{ PaymentReconciliation(id: "demo-payment-1") {
        allocation(target: "Claim/demo-claim-03") { identifier { value } }
        byId: allocation(identifier: "http://example.org/payments|EFT-2026-0001-2") { target { reference } }
    } }"""
    result, _ = await answer(clients, query)
    found = data(result)["PaymentReconciliation"]
    assert found["allocation"] == [{"identifier": {"value": "EFT-2026-0001-3"}}]
    assert found["byId"] == [{"target": {"reference": "Claim/demo-claim-02"}}]


async def test_fhirpath_argument(clients: Clients) -> None:
    query = (
        '{ PaymentReconciliation(id: "ER2500") { allocation(fhirpath: "amount.value > 3600") { amount { value } } } }'
    )
    result, _ = await answer(clients, query)
    assert data(result)["PaymentReconciliation"]["allocation"] == [{"amount": {"value": "4000.00"}}]
    spec = '{ Patient(id: "spec-patient") { name(fhirpath: "family.exists()") { text given family } } }'  # its own
    result, _ = await answer(clients, spec)
    assert [n["family"] for n in data(result)["Patient"]["name"]] == ["Chalmers", "Windsor"]
    names = '{ Patient(id: "spec-patient") { name(fhirpath: "given.count() = 2 and family.startsWith(\'Wind\')") { use } } }'
    result, _ = await answer(clients, names)
    assert data(result)["Patient"]["name"] == [{"use": "maiden"}]


async def test_offset_and_count_page_a_list(clients: Clients) -> None:
    """The issue's `allocation(_count: 5)`, and `_offset`, after any filter."""
    query = """{ PaymentReconciliation(id: "demo-payment-1") {
        all: allocation { identifier { value } }
        page: allocation(_count: 5) { identifier { value } }
        next: allocation(_offset: 5, _count: 5) { identifier { value } }
    } }"""
    result, took = await answer(clients, query)
    found = data(result)["PaymentReconciliation"]
    every = [a["identifier"]["value"] for a in found["all"]]
    assert len(every) == 7
    assert [a["identifier"]["value"] for a in found["page"]] == every[:5]
    assert [a["identifier"]["value"] for a in found["next"]] == every[5:]
    assert took == "compiled"


@pytest.mark.parametrize(
    "arguments",
    ["_count: -1", "_count: 1001", "_offset: -2", 'fhirpath: "amount.value >"', f'fhirpath: "{"a" * 1001}"'],
)
async def test_bad_list_arguments_are_bad_user_input(clients: Clients, arguments: str) -> None:
    query = (
        f'{{ PaymentReconciliation(id: "demo-payment-1") {{ id allocation({arguments}) {{ amount {{ value }} }} }} }}'
    )
    result, _ = await answer(clients, query)
    assert codes(result) == ["BAD_USER_INPUT"]
    assert result["errors"][0]["path"] == ["PaymentReconciliation", "allocation"]
    assert result["data"]["PaymentReconciliation"] == {"id": "demo-payment-1", "allocation": None}


async def test_primitive_lists_take_no_arguments(clients: Clients) -> None:
    """ "Primitive fields SHALL NOT have any arguments at all": `given` is a list of strings."""
    result, _ = await answer(clients, '{ Patient(id: "spec-patient") { name { given(_count: 1) } } }')
    assert "Unknown argument '_count' on field 'HumanName.given'" in result["errors"][0]["message"]
    result, _ = await answer(clients, '{ Patient(id: "spec-patient") { name(use: official) { given @first } } }')
    assert data(result)["Patient"]["name"] == [{"given": "Peter"}]


async def test_list_arguments_from_variables(clients: Clients) -> None:
    """Variables are accepted (the compiled path leaves such an operation to the reference path)."""
    query = (
        'query($n: Int, $use: FilterValue) { Patient(id: "spec-patient") { name(use: $use, _count: $n) { family } } }'
    )
    result, took = await answer(clients, query, {"n": 1, "use": "maiden"})
    assert data(result)["Patient"]["name"] == [{"family": "Windsor"}]
    assert took == "unsupported"


async def test_list_count_adds_no_cost(clients: Clients) -> None:
    """An element list's `_count` shortens what was read: it is not charged as resources fetched, and a
    resource list's `_count` still is (FINGATE_MAX_COST's 50,000 over 1000 x 1000 lists)."""
    cheap = "{ ClaimList(_count: 1000) { item(_count: 1000) { sequence } } }"
    result, _ = await answer(clients, cheap)
    assert "errors" not in result
    dear = "{ ClaimList(_count: 1000) { ClaimResponseList(_reference: request, _count: 1000) { id } } }"
    result, _ = await answer(clients, dear)
    assert codes(result) == ["QUERY_TOO_COMPLEX"]


# -- directives ------------------------------------------------------------------------------------


async def test_first(clients: Clients) -> None:
    query = '{ Patient(id: "spec-patient") { name @first { family given @first } nobody: name(use: temp) @first { family } } }'
    result, took = await answer(clients, query)
    assert data(result)["Patient"] == {"name": {"family": "Chalmers", "given": "Peter"}, "nobody": None}
    assert took == "compiled"


async def test_flatten(clients: Clients) -> None:
    """The specification's example: a name's given and family put in the patient, lists of every name's."""
    query = '{ Patient(id: "spec-patient") { id name @flatten { given family } } }'
    result, _ = await answer(clients, query)
    assert data(result)["Patient"] == {
        "id": "spec-patient",
        "given": ["Peter", "James", "Jim", "Peter", "James"],
        "family": ["Chalmers", "Windsor"],
    }
    single = '{ PaymentReconciliation(id: "demo-payment-1") { amount @flatten { value currency } paymentIssuer @flatten { display } } }'
    result, _ = await answer(clients, single)
    assert data(result)["PaymentReconciliation"] == {
        "value": data(result)["PaymentReconciliation"]["value"],
        "currency": "USD",
        "display": "Acme Health Insurance",
    }


async def test_singleton(clients: Clients) -> None:
    query = '{ Organization(id: "demo-payer") { identifier @singleton { value } } }'
    result, _ = await answer(clients, query)
    assert data(result)["Organization"] == {"identifier": {"value": "ACME-01"}}
    flattened = '{ Patient(id: "spec-patient") { name(use: official) @flatten { family @singleton given } } }'
    result, _ = await answer(clients, flattened)
    assert data(result)["Patient"] == {"family": "Chalmers", "given": ["Peter", "James"]}
    three = '{ Patient(id: "spec-patient") { id name @singleton { family } } }'
    result, _ = await answer(clients, three)
    assert codes(result) == ["BAD_USER_INPUT"]
    assert result["errors"][0]["path"] == ["Patient", "name"]
    assert result["data"]["Patient"] == {"id": "spec-patient", "name": None}
    two = '{ Patient(id: "spec-patient") { name(use: official) @flatten { given @singleton } } }'
    result, _ = await answer(clients, two)
    assert codes(result) == ["BAD_USER_INPUT"]


async def test_slice(clients: Clients) -> None:
    """The specification's slicing of names by use, flattened into the patient."""
    query = '{ Patient(id: "spec-patient") { name @slice(path: "use") @flatten { family given @first } } }'
    result, took = await answer(clients, query)
    assert data(result)["Patient"] == {
        "given.official": ["Peter"],
        "family.official": ["Chalmers"],
        "given.usual": ["Jim"],
        "family.maiden": ["Windsor"],
        "given.maiden": ["Peter"],
    }
    assert took == "unsupported"  # slice names come from the stored items: the reference path notes them
    by_type = """{ PaymentReconciliation(id: "ER2500") {
        allocation @slice(path: "type.coding.code") @flatten { amount @flatten { value } } } }"""
    result, _ = await answer(clients, by_type)
    assert data(result)["PaymentReconciliation"] == {
        "value.payment": ["3500.00", "4000.00"],
        "value.advance": ["-1500.00"],
    }
    by_index = '{ Patient(id: "spec-patient") { name @slice(path: "$index") { use } } }'
    result, _ = await answer(clients, by_index)
    assert data(result)["Patient"]["name"] == [{"use.0": "official"}, {"use.1": "usual"}, {"use.2": "maiden"}]


# The specification's own examples of the directives on its Patient example, with the answers it gives.
SPEC_DIRECTIVES = {
    "identifier @flatten { system value } active name @flatten { text given family }": {
        "system": ["urn:oid:1.2.36.146.595.217.0.1"],
        "value": ["12345"],
        "active": True,
        "given": ["Peter", "James", "Jim", "Peter", "James"],
        "family": ["Chalmers", "Windsor"],
    },
    "identifier @flatten { system value } active name @flatten { text given @first family }": {
        "system": ["urn:oid:1.2.36.146.595.217.0.1"],
        "value": ["12345"],
        "active": True,
        "given": ["Peter", "Jim", "Peter"],
        "family": ["Chalmers", "Windsor"],
    },
    "identifier @flatten { system @singleton value @singleton } active "
    "name @flatten @first { text given family @singleton }": {
        "system": "urn:oid:1.2.36.146.595.217.0.1",
        "value": "12345",
        "active": True,
        "given": ["Peter", "James"],
        "family": "Chalmers",
    },
    'identifier @flatten { system value } active name @flatten @slice(path: "use") { given family @singleton }': {
        "system": ["urn:oid:1.2.36.146.595.217.0.1"],
        "value": ["12345"],
        "active": True,
        "given.official": ["Peter", "James"],
        "family.official": "Chalmers",
        "given.usual": ["Jim"],
        "given.maiden": ["Peter", "James"],
        "family.maiden": "Windsor",
    },
    'identifier @flatten { system value } active name @flatten @slice(path: "$index") { given family @singleton }': {
        "system": ["urn:oid:1.2.36.146.595.217.0.1"],
        "value": ["12345"],
        "active": True,
        "given.0": ["Peter", "James"],
        "family.0": "Chalmers",
        "given.1": ["Jim"],
        "given.2": ["Peter", "James"],
        "family.2": "Windsor",
    },
    'name @slice(path: "$index") @flatten { given @first @singleton family }': {
        "given.0": "Peter",
        "family.0": ["Chalmers"],
        "given.1": "Jim",
        "given.2": "Peter",
        "family.2": ["Windsor"],
    },
}


@pytest.mark.parametrize("selection", list(SPEC_DIRECTIVES), ids=[f"spec-{i}" for i in range(len(SPEC_DIRECTIVES))])
async def test_the_specifications_directive_examples(clients: Clients, selection: str) -> None:
    result, _ = await answer(clients, f'{{ Patient(id: "spec-patient") {{ {selection} }} }}')
    assert data(result)["Patient"] == SPEC_DIRECTIVES[selection]


async def test_directives_are_in_the_schema(clients: Clients) -> None:
    query = "{ __schema { directives { name args { name } } } }"
    result, _ = await answer(clients, query)
    found = {d["name"]: [a["name"] for a in d["args"]] for d in data(result)["__schema"]["directives"]}
    assert {k: found[k] for k in ("flatten", "first", "singleton", "slice")} == {
        "flatten": [],
        "first": [],
        "singleton": [],
        "slice": ["path"],
    }
    unknown = '{ Patient(id: "spec-patient") { name @flattened { family } } }'
    result, _ = await answer(clients, unknown)
    assert "Unknown directive" in result["errors"][0]["message"]


# -- the README's section --------------------------------------------------------------------------

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SECTION = README.split("## FHIR GraphQL specification", 1)[1].split("\n## ", 1)[0]
EXAMPLES = re.findall(r"```graphql\n(.*?)```", SECTION, re.S)


@pytest.mark.parametrize("query", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
async def test_the_readme_examples_answer_on_the_demo_data(clients: Clients, query: str) -> None:
    result, _ = await answer(clients, query)
    data(result)


async def test_the_readme_directive_answers(clients: Clients) -> None:
    result, _ = await answer(clients, EXAMPLES[-1])
    found = data(result)
    assert found["Organization"] == {"identifier": {"value": "ACME-01"}}
    assert found["PaymentReconciliation"] == {
        "allocation": {"date": "2014-08-16"},
        "value.payment": ["3500.00", "4000.00"],
        "value.advance": ["-1500.00"],
    }
    assert found["Claim"] == {"sequence": [1, 2, 3], "value": ["135.57", "105.00", "1100.00"]}
