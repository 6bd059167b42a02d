"""Search arguments over HTTP on the demo data, on both execution paths: AND lists, systems of `code` tokens."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from app.store import Store
from tests.harness import client_for, error_codes, gql, ok

PAYER = 'payment_issuer: "Organization/demo-payer"'
README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.fixture(scope="module", params=[True, False], ids=["compiled", "reference"])
async def demo(demo_store: Store, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(demo_store, settings=Settings(compiled=request.param)) as client:
        yield client


async def _ids(client: httpx.AsyncClient, field: str, args: str) -> list[str]:
    data = ok(await gql(client, f'{{ {field}({args}, _sort: "_id", _count: 100) {{ id }} }}'))
    return [r["id"] for r in data[field]]


async def test_a_list_of_dates_is_a_range(demo: httpx.AsyncClient) -> None:
    """A comma is OR: `ge..,lt..` matches every date. A list is AND: the payments of one day."""
    every = await _ids(demo, "PaymentReconciliationList", f'{PAYER}, created: "ge2026-11-11,lt2026-11-12"')
    one_day = await _ids(demo, "PaymentReconciliationList", f'{PAYER}, created: ["ge2026-11-11", "lt2026-11-12"]')
    november = await _ids(demo, "PaymentReconciliationList", f'{PAYER}, created: ["ge2026-11-01", "lt2026-12-01"]')
    assert every == ["demo-payment-1", "demo-payment-2", "demo-payment-3"]
    assert one_day == ["demo-payment-2"]
    assert november == every


async def test_a_list_works_on_reverse_lists_and_connections(demo: httpx.AsyncClient) -> None:
    query = (
        '{ Organization(id: "demo-payer") { PaymentReconciliationList(_reference: payment_issuer,'
        ' created: ["ge2026-11-11", "lt2026-11-12"]) { id } }'
        ' PaymentReconciliationConnection(created: ["ge2026-11-11", "lt2026-11-13"], status: "active") { count } }'
    )
    data = ok(await gql(demo, query))
    assert [p["id"] for p in data["Organization"]["PaymentReconciliationList"]] == ["demo-payment-2"]
    assert data["PaymentReconciliationConnection"]["count"] == 2


async def test_a_list_from_variables_and_a_single_value_still_work(demo: httpx.AsyncClient) -> None:
    query = 'query($d: [String!]) { PaymentReconciliationList(created: $d, _sort: "_id") { id } }'
    one = ok(await gql(demo, query, {"d": "2026-11-12"}))  # a single value in variables: a one-item list
    two = ok(await gql(demo, query, {"d": ["ge2026-11-11", "le2026-11-12"]}))
    assert [p["id"] for p in one["PaymentReconciliationList"]] == ["demo-payment-3"]
    assert [p["id"] for p in two["PaymentReconciliationList"]] == ["demo-payment-2", "demo-payment-3"]
    empty = await gql(demo, "{ PaymentReconciliationList(created: []) { id } }")
    assert error_codes(empty) == ["BAD_USER_INPUT"] and empty["errors"][0]["extensions"]["operationOutcome"]["issue"][
        0
    ]["expression"] == ["created"]


@pytest.mark.parametrize(
    ("field", "token", "expected"),
    [
        ("PaymentReconciliationList", "http://hl7.org/fhir/fm-status|active", True),
        ("PaymentReconciliationList", "http://hl7.org/fhir/fm-status|", True),
        ("PaymentReconciliationList", "http://example.org/other|active", False),
        ("ClaimList", "http://hl7.org/fhir/fm-status|active", True),
        ("ClaimResponseList", "http://hl7.org/fhir/fm-status|active", True),
    ],
)
async def test_a_status_token_with_its_system_matches(
    demo: httpx.AsyncClient, field: str, token: str, expected: bool
) -> None:
    plain = await _ids(demo, field, 'status: "active"')
    with_system = await _ids(demo, field, f'status: "{token}"')
    assert plain and with_system == (plain if expected else [])


async def test_the_non_financial_types_have_their_r5_parameters(demo: httpx.AsyncClient) -> None:
    unknown = await _ids(demo, "PatientList", 'gender: "unknown"')
    system = await _ids(demo, "PatientList", 'gender: "http://hl7.org/fhir/administrative-gender|unknown"')
    assert unknown and system == unknown
    result = await gql(demo, '{ EncounterList(class: "AMB") { id } PatientList(name: "zz-nobody") { id } }')
    assert ok(result) == {"EncounterList": [], "PatientList": []}


async def test_indexes_stay_one_command_per_collection(store: Store) -> None:
    from app.fhir.model import SERVED_RESOURCES
    from app.store import INDEXES_KEY, SERVER_KEYS

    await store.db[SERVER_KEYS].delete_one({"_id": INDEXES_KEY})  # forget they were made: all are created again
    before = store.commands.count
    await store.ensure_indexes()  # creating what exists is a no-op
    # The record's read and write; one command per collection: each type and its history; the audit log,
    # payment events, Idempotency-Keys, conditional keys, the outbox (3), rest-hook attempts
    assert store.commands.count - before == 2 + 2 * len(SERVED_RESOURCES) + 8


async def test_the_readme_search_examples_answer_as_shown(demo: httpx.AsyncClient) -> None:
    readme = README
    section = readme[readme.index("### Lists that stop early") :]
    query, shown = (
        re.findall(r"```graphql\n(.*?)```", section, re.S)[0],
        re.findall(r"```json\n(.*?)```", section, re.S)[0],
    )
    result = await gql(demo, query)
    assert "errors" not in result and {"extensions": result["extensions"]} == json.loads("{" + shown + "}")
    search = readme[readme.index("**a list of values means AND**") :]
    november = ok(await gql(demo, re.findall(r"```graphql\n(.*?)```", search, re.S)[0]))
    assert [p["id"] for p in november["PaymentReconciliationList"]] == [
        "demo-payment-1",
        "demo-payment-2",
        "demo-payment-3",
    ]
