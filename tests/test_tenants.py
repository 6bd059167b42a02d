"""Tenant isolation (app/store: `_id` = `<tenant>/<id>`, hidden `_tenant`) and the audit log, over signed tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.store import TENANT, Store
from app.writes import Writer
from tests.harness import client_for, error_codes, gql, ok
from tests.test_mutations import PATIENT, claim
from tests.tokens import authed_client, bearer, post, token

ADMIN = "user/*.cruds system/AuditEvent.r"


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with authed_client(store) as c:
        yield c


async def _as(
    client: httpx.AsyncClient, tenant: str, query: str, variables: dict[str, Any] | None = None, scope: str = ADMIN
) -> dict[str, Any]:
    response = await post(client, query, token(tenant=tenant, sub=f"{tenant}-user", scope=scope), variables)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _seed(store: Store, tenant: str, family: str) -> dict[str, str]:
    """The same FHIR ids in every tenant: Patient/p1 and Claim/c1 pointing at it."""
    writer = Writer(store.for_tenant(tenant))
    await writer.create("Patient", {**PATIENT, "id": "p1", "name": [{"family": family}]}, keep_id=True)
    await writer.create("Claim", {**claim("p1"), "id": "c1"}, keep_id=True)
    return {"patient": "p1", "claim": "c1"}


async def test_two_tenants_hold_the_same_ids_and_see_only_their_own(client: httpx.AsyncClient, store: Store) -> None:
    await _seed(store, "acme", "Acme")
    await _seed(store, "globex", "Globex")
    query = """{
      Patient(id: "p1") { name { family } }
      PatientList { id name { family } }
      PatientConnection { count edges { resource { id } } }
      Claim(id: "c1") { patient { resource { ... on Patient { name { family } } } } }
      ClaimList(patient: "Patient/p1", _id: "c1") { id }
      PatientHistory(id: "p1") { name { family } }
    }"""
    for tenant, family in (("acme", "Acme"), ("globex", "Globex")):
        data = ok(await _as(client, tenant, query))
        assert data["Patient"] == {"name": [{"family": family}]}
        assert data["PatientList"] == [{"id": "p1", "name": [{"family": family}]}]
        assert data["PatientConnection"] == {"count": 1, "edges": [{"resource": {"id": "p1"}}]}
        assert data["Claim"]["patient"]["resource"] == {"name": [{"family": family}]}
        assert data["ClaimList"] == [{"id": "c1"}]
        assert data["PatientHistory"] == [{"name": [{"family": family}]}]
    reverse = '{ Patient(id: "p1") { ClaimList(_reference: patient) { id } } }'
    assert ok(await _as(client, "acme", reverse))["Patient"]["ClaimList"] == [{"id": "c1"}]


async def test_another_tenants_id_is_not_found_exactly_like_a_missing_one(
    client: httpx.AsyncClient, store: Store
) -> None:
    await _seed(store, "acme", "Acme")
    theirs = await _as(client, "globex", '{ Claim(id: "c1") { id } }')
    missing = await _as(client, "globex", '{ Claim(id: "zz") { id } }')
    assert error_codes(theirs) == error_codes(missing) == ["NOT_FOUND"]
    assert theirs["errors"][0]["message"].replace("c1", "zz") == missing["errors"][0]["message"]
    assert ok(await _as(client, "globex", "{ ClaimList { id } ClaimResponseList { id } }")) == {
        "ClaimList": [],
        "ClaimResponseList": [],
    }
    assert error_codes(await _as(client, "globex", '{ ClaimHistory(id: "c1") { id } }')) == ["NOT_FOUND"]
    # Writes to another tenant's id: NOT_FOUND, and acme's claim is untouched.
    delete = await _as(client, "globex", 'mutation { ClaimDelete(id: "c1") { id } }')
    assert error_codes(delete) == ["NOT_FOUND"]
    update = await _as(
        client,
        "globex",
        'mutation($res: ClaimInput!) { ClaimUpdate(id: "c1", res: $res) { id } }',
        {"res": _json(claim("p1"))},
    )
    assert error_codes(update) == ["NOT_FOUND"]
    assert (await store.for_tenant("acme").get("Claim", "c1"))["meta"]["versionId"] == "1"  # type: ignore[index]


async def test_references_in_writes_are_checked_within_the_tenant(client: httpx.AsyncClient, store: Store) -> None:
    await _seed(store, "acme", "Acme")
    # A ClaimResponse needs its Claim to exist (and be active): acme's claim does not count for globex.
    response = {"status": "active", "type": {"coding": [{"code": "professional"}]}, "use": "claim", "patient": {"reference": "Patient/p1"},
                "created": "2026-11-02", "insurer": {"display": "Payer"}, "request": {"reference": "Claim/c1"}, "outcome": "complete"}  # fmt: skip
    result = await _as(
        client,
        "globex",
        "mutation($res: ClaimResponseInput!) { ClaimResponseCreate(res: $res) { id } }",
        {"res": response},
    )
    assert error_codes(result) == ["STATUS_RULE"] and "does not exist" in result["errors"][0]["message"], result
    assert await store.db["ClaimResponse"].count_documents({}) == 0


async def test_the_tenant_is_stored_hidden_and_leads_every_index(store: Store) -> None:
    await _seed(store, "acme", "Acme")
    raw = await store.db["Claim"].find_one({})
    assert raw is not None and raw["_id"] == "acme/c1" and raw[TENANT] == "acme"
    acme = store.for_tenant("acme")
    read = [
        await acme.get("Claim", "c1"),
        (await acme.get_by_type({"Claim": ["c1"], "Patient": [raw["patient"]["reference"].split("/")[1]]}))[
            ("Claim", "c1")
        ],
        (await acme.search("Claim", {}, 10))[0],
        (await acme.page("Claim", {}, 10, None, None))["edges"][0]["resource"],
        (await acme.referencing("Claim", "patient", [raw["patient"]["reference"]], {}, None, 10))[
            raw["patient"]["reference"]
        ][0],
    ]
    for doc in read:  # every read hands back FHIR JSON: the stored key, tenant and search values stay inside
        assert doc is not None and doc["id"] == "c1" and not {"_id", TENANT, "_search"} & doc.keys(), doc
    for rtype in ("Claim", "Claim_history", "Patient", "audit"):
        indexes = await store.db[rtype].index_information()
        assert all(next(iter(spec["key"]))[0] in (TENANT, "_id") for spec in indexes.values()), indexes
        assert any(next(iter(spec["key"]))[0] == TENANT for spec in indexes.values())


async def test_without_auth_everything_is_the_default_tenant(store: Store) -> None:
    await _seed(store, "acme", "Acme")
    async with client_for(store) as c:
        assert ok(await gql(c, "{ ClaimList { id } }")) == {"ClaimList": []}
        created = ok(await gql(c, 'mutation { PatientCreate(res: { name: [{ family: "Default" }] }) { id } }'))[
            "PatientCreate"
        ]
    assert await store.for_tenant("default").get("Patient", created["id"]) is not None
    assert await store.for_tenant("acme").get("Patient", created["id"]) is None


# -- audit ---------------------------------------------------------------------------------------------


async def test_each_write_is_audited_in_its_tenant(client: httpx.AsyncClient, store: Store) -> None:
    created = ok(await _as(client, "acme", 'mutation { PatientCreate(res: { name: [{ family: "A" }] }) { id } }'))[
        "PatientCreate"
    ]
    pid = created["id"]
    ok(
        await _as(
            client,
            "acme",
            'mutation($id: ID!) { PatientUpdate(id: $id, res: { name: [{ family: "B" }] }) { id } }',
            {"id": pid},
        )
    )
    ok(await _as(client, "acme", "mutation($id: ID!) { PatientDelete(id: $id) { id } }", {"id": pid}))
    failed = await _as(client, "acme", 'mutation { PatientDelete(id: "nope") { id } }')
    assert error_codes(failed) == ["NOT_FOUND"]
    log = ok(
        await _as(
            client, "acme", '{ AuditLog(type: "Patient") { sub tenant when operation type id version requestId } }'
        )
    )["AuditLog"]
    assert [(r["operation"], r["version"], r["sub"], r["tenant"], r["id"]) for r in log] == [
        ("delete", "2", "acme-user", "acme", pid),
        ("update", "2", "acme-user", "acme", pid),
        ("create", "1", "acme-user", "acme", pid),
    ]
    assert all(r["when"].endswith("Z") and r["requestId"] for r in log)
    assert ok(await _as(client, "acme", f'{{ AuditLog(id: "{pid}", _count: 1) {{ operation }} }}'))["AuditLog"] == [
        {"operation": "delete"}
    ]
    assert ok(await _as(client, "globex", "{ AuditLog { id } }"))["AuditLog"] == []


async def test_the_audit_log_keeps_the_servers_request_id_and_the_clients_apart(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/graphql",
        json={"query": 'mutation { PatientCreate(res: { name: [{ family: "Id" }] }) { id } }'},
        headers={"x-request-id": "client-chosen-1", **bearer(token(tenant="acme", sub="acme-user", scope=ADMIN))},
    )
    pid = created.json()["data"]["PatientCreate"]["id"]
    query = f'{{ AuditLog(id: "{pid}") {{ requestId clientRequestId }} }}'
    (record,) = ok(await _as(client, "acme", query))["AuditLog"]
    assert record == {"requestId": created.headers["x-request-id"], "clientRequestId": "client-chosen-1"}


async def test_the_audit_log_needs_the_admin_scope(client: httpx.AsyncClient) -> None:
    result = await _as(client, "acme", "{ AuditLog { id } PatientList { id } }", scope="user/*.cruds")
    assert result["data"] == {"AuditLog": None, "PatientList": []}
    assert error_codes(result) == ["FORBIDDEN"]
    assert "system/AuditEvent.r" in result["errors"][0]["message"]


async def test_a_write_and_its_audit_record_commit_together(
    client: httpx.AsyncClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Store.audit

    async def failing(self: Store, record: dict[str, Any], session: Any) -> None:
        await original(self, record, session)
        raise RuntimeError("audit storage failed")

    monkeypatch.setattr(Store, "audit", failing)
    result = await _as(client, "acme", 'mutation { PatientCreate(res: { name: [{ family: "A" }] }) { id } }')
    assert error_codes(result) == ["INTERNAL"]
    assert await store.db["Patient"].count_documents({}) == 0
    assert await store.db["Patient_history"].count_documents({}) == 0
    assert await store.db["audit"].count_documents({}) == 0


def _json(resource: dict[str, Any]) -> dict[str, Any]:
    """Decimals as strings: JSON variables for the API."""
    import json

    return json.loads(json.dumps({k: v for k, v in resource.items() if k != "resourceType"}, default=str))  # type: ignore[no-any-return]
