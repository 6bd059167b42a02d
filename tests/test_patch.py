"""`TPatch(id, patch, ifMatch)`: a JSON Patch applied to the current version, then written as an update."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.http import loads
from app.store import Store
from tests.harness import client_for, error_codes, gql, json_with_decimals, ok

PATCH = """mutation($id: ID!, $p: JSON!, $m: String) {
  ClaimPatch(id: $id, patch: $p, ifMatch: $m) { id status meta { versionId } total { value currency } item { sequence } }
}"""
CREATE = """mutation { ClaimCreate(res: {
  status: "draft", use: "claim", created: "2026-11-20", patient: { reference: "Patient/p1" },
  type: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/claim-type", code: "professional" }] },
  insurance: [{ sequence: 1, focal: true, coverage: { display: "Acme plan" } }],
  item: [{ sequence: 1, productOrService: { coding: [{ code: "99213" }] } }],
  total: { value: "150.10", currency: "USD" } }) { id } }"""


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store) as c:
        yield c


async def draft(client: httpx.AsyncClient) -> str:
    await gql(client, 'mutation { PatientUpdate(id: "p1", res: { gender: "unknown" }) { id } }')
    return str(ok(await gql(client, CREATE))["ClaimCreate"]["id"])


async def patch(client: httpx.AsyncClient, id: str, ops: Any, if_match: str | None = None) -> dict[str, Any]:
    body = json_with_decimals({"query": PATCH, "variables": {"id": id, "p": ops, "m": if_match}})
    response = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    return loads(response.content)  # type: ignore[no-any-return]


async def test_a_patch_is_written_as_a_new_version(client: httpx.AsyncClient, store: Store) -> None:
    id = await draft(client)
    ops = [
        {"op": "test", "path": "/status", "value": "draft"},
        {"op": "replace", "path": "/total/value", "value": Decimal("99.95")},
        {"op": "add", "path": "/item/-", "value": {"sequence": 2, "productOrService": {"coding": [{"code": "99214"}]}}},
    ]
    result = ok(await patch(client, id, ops, "1"))["ClaimPatch"]
    assert result["meta"]["versionId"] == "2"
    assert result["total"] == {"value": "99.95", "currency": "USD"}
    assert result["item"] == [{"sequence": 1}, {"sequence": 2}]
    history = ok(await gql(client, "query($id: ID!) { ClaimHistory(id: $id) { meta { versionId } } }", {"id": id}))
    assert [v["meta"]["versionId"] for v in history["ClaimHistory"]] == ["2", "1"]
    audit = [d async for d in store.db["audit"].find({"id": id})]
    assert sorted(a["operation"] for a in audit) == ["create", "update"]


async def test_a_patch_that_changes_nothing_makes_no_version(client: httpx.AsyncClient) -> None:
    id = await draft(client)
    result = ok(await patch(client, id, [{"op": "replace", "path": "/status", "value": "draft"}]))["ClaimPatch"]
    assert result["meta"]["versionId"] == "1"


async def test_a_patch_goes_through_the_status_rules(client: httpx.AsyncClient) -> None:
    id = await draft(client)
    ok(await patch(client, id, [{"op": "replace", "path": "/status", "value": "active"}]))
    # Active: content is frozen.
    frozen = await patch(client, id, [{"op": "replace", "path": "/total/value", "value": Decimal("1.00")}])
    assert error_codes(frozen) == ["STATUS_RULE"]


FAILURES = [
    # (operations, code, the issue's expression)
    ([{"op": "test", "path": "/status", "value": "active"}], "BAD_USER_INPUT", "patch[0]"),
    (
        [{"op": "add", "path": "/status", "value": "draft"}, {"op": "remove", "path": "/nothing"}],
        "BAD_USER_INPUT",
        "patch[1]",
    ),
    ([{"op": "replace", "path": "/item/7/sequence", "value": 2}], "BAD_USER_INPUT", "patch[0]"),
    ([{"op": "frobnicate", "path": "/status"}], "BAD_USER_INPUT", "patch[0]"),
    ([{"op": "replace", "path": "/id", "value": "other"}], "BAD_USER_INPUT", "patch[0]"),
    ([{"op": "replace", "path": "/meta/versionId", "value": "9"}], "BAD_USER_INPUT", "patch[0]"),
    ([{"op": "copy", "from": "/meta", "path": "/text"}], "BAD_USER_INPUT", "patch[0]"),
    ([{"op": "replace", "path": "/status", "value": "nonsense"}], "BAD_USER_INPUT", "Claim.status"),
    ([{"op": "replace", "path": "/total/value", "value": "1_000"}], "BAD_USER_INPUT", "Claim.total.value"),
    ([], "BAD_USER_INPUT", "patch"),
    ({"op": "remove", "path": "/status"}, "BAD_USER_INPUT", "patch"),
]


@pytest.mark.parametrize(("ops", "code", "expression"), FAILURES)
async def test_a_failing_patch_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, store: Store, ops: Any, code: str, expression: str
) -> None:
    id = await draft(client)
    result = await patch(client, id, ops)
    assert error_codes(result) == [code], result
    issues = result["errors"][0]["extensions"]["operationOutcome"]["issue"]
    assert expression in [e for i in issues for e in i.get("expression", [])], issues
    assert (await store.db["Claim"].find_one({"id": id}))["meta"]["versionId"] == "1"


async def test_a_stale_if_match_or_a_missing_resource(client: httpx.AsyncClient) -> None:
    id = await draft(client)
    stale = await patch(client, id, [{"op": "replace", "path": "/status", "value": "active"}], "2")
    assert error_codes(stale) == ["CONFLICT"]
    missing = await patch(client, "nope", [{"op": "replace", "path": "/status", "value": "active"}])
    assert error_codes(missing) == ["NOT_FOUND"]
