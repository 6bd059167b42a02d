"""The `transaction` and `batch` mutations (app.bundles) over HTTP and the real database, and `fingate load`'s use of them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.load import load
from app.store import Store
from app.writes import Writer
from tests.harness import client_for, error_codes, gql, json_with_decimals, ok

OUTCOME = "fullUrl status outcome location etag id versionId resourceType error { code message operationOutcome }"
TRANSACTION = f"mutation($e: [BundleEntryInput!]!) {{ transaction(entries: $e) {{ {OUTCOME} resource {{ ... on Claim {{ id status }} }} }} }}"
BATCH = f"mutation($e: [BundleEntryInput!]!) {{ batch(entries: $e) {{ {OUTCOME} }} }}"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store) as c:
        yield c


async def run(client: httpx.AsyncClient, query: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    body = json_with_decimals({"query": query, "variables": {"e": entries}})
    response = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    from app.http import loads

    return loads(response.content)  # type: ignore[no-any-return]


def entry(method: str, url: str, resource: Any = None, full_url: str | None = None, **request: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        out["resource"] = resource
    if full_url is not None:
        out["fullUrl"] = full_url
    return out


def claim(patient: str, status: str = "draft", total: str = "150.00", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Claim",
        "status": status,
        "type": {"coding": [{"system": CLAIM_TYPE, "code": "professional"}]},
        "use": "claim",
        "patient": {"reference": patient},
        "created": "2026-11-20",
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Acme plan"}}],
        "total": {"value": Decimal(total), "currency": "USD"},
        **extra,
    }


def response_to(claim_ref: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": {"coding": [{"system": CLAIM_TYPE, "code": "professional"}]},
        "use": "claim",
        "patient": {"reference": patient},
        "created": "2026-11-21",
        "insurer": {"display": "Acme"},
        "request": {"reference": claim_ref},
        "outcome": "complete",
    }


def payment(target: str, amount: str, paid: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "PaymentReconciliation",
        "status": "active",
        "type": {"coding": [{"code": "payment"}]},
        "created": "2026-11-22",
        "date": "2026-11-22",
        "amount": {"value": Decimal(paid or amount), "currency": "USD"},
        "allocation": [{"target": {"reference": target}, "amount": {"value": Decimal(amount), "currency": "USD"}}],
    }


PATIENT = {"resourceType": "Patient", "name": [{"family": "Rivera"}]}


async def dump(store: Store) -> dict[str, list[Any]]:
    """Every document of every collection (the audit log included), for before/after comparisons."""
    out = {}
    for name in sorted(await store.db.list_collection_names()):
        out[name] = sorted([json.dumps(d, default=str, sort_keys=True) async for d in store.db[name].find({})])
    return out


async def test_a_claim_created_activated_answered_and_paid_in_one_transaction(client: httpx.AsyncClient) -> None:
    """urn:uuid references resolve, and the rules see the state after every entry: the ClaimResponse (listed
    before the activation) needs an active Claim, and the payment allocates to the Claim created here."""
    c, p = "urn:uuid:6a1f0c1e-0000-4000-8000-000000000001", "urn:uuid:6a1f0c1e-0000-4000-8000-000000000002"
    entries = [
        entry("POST", "Patient", PATIENT, p),
        entry("POST", "Claim", claim(p), c),
        entry("POST", "ClaimResponse", response_to(c, p)),
        entry("PUT", c, claim(p, "active"), ifMatch='W/"1"'),
        entry("POST", "PaymentReconciliation", payment(c, "100.00")),
    ]
    result = ok(await run(client, TRANSACTION, entries))["transaction"]
    assert [r["status"] for r in result] == ["201 Created"] * 3 + ["200 OK", "201 Created"]
    assert [r["outcome"] for r in result] == ["created", "created", "created", "updated", "created"]
    claim_id = result[1]["id"]
    assert result[3]["id"] == claim_id and result[3]["versionId"] == "2"
    assert result[3]["resource"] == {"id": claim_id, "status": "active"}
    assert result[3]["location"] == f"Claim/{claim_id}/_history/2" and result[3]["etag"] == 'W/"2"'
    assert result[0]["fullUrl"] == p
    read = ok(
        await gql(
            client,
            """query($c: ID!, $r: ID!, $p: ID!) {
                 Claim(id: $c) { status patient { reference } billing { paid { value } } }
                 ClaimResponse(id: $r) { request { reference } }
                 PaymentReconciliation(id: $p) { allocation { target { reference } } } }""",
            {"c": claim_id, "r": result[2]["id"], "p": result[4]["id"]},
        )
    )
    assert read["Claim"]["status"] == "active"
    assert read["Claim"]["patient"]["reference"] == f"Patient/{result[0]['id']}"
    assert read["ClaimResponse"]["request"]["reference"] == f"Claim/{claim_id}"
    assert read["PaymentReconciliation"]["allocation"][0]["target"]["reference"] == f"Claim/{claim_id}"
    assert read["Claim"]["billing"]["paid"] == [{"value": "100.00"}]


async def test_a_transaction_whose_last_entry_fails_leaves_the_database_unchanged(
    client: httpx.AsyncClient, store: Store
) -> None:
    patient = ok(await gql(client, 'mutation { PatientCreate(res: {gender: "unknown"}) { id } }'))["PatientCreate"][
        "id"
    ]
    before = await dump(store)
    c = "urn:uuid:00000000-0000-4000-8000-00000000000c"
    entries = [
        entry("POST", "Claim", claim(f"Patient/{patient}"), c),
        entry("PUT", f"Patient/{patient}", {"resourceType": "Patient", "gender": "female"}),
        entry("PUT", c, claim(f"Patient/{patient}", "active")),
        entry("POST", "PaymentReconciliation", payment(c, "100.00")),
        # The last: a response to a Claim that does not exist.
        entry("POST", "ClaimResponse", response_to("Claim/does-not-exist", f"Patient/{patient}")),
    ]
    result = await run(client, TRANSACTION, entries)
    assert result["data"] == {"transaction": None}
    assert error_codes(result) == ["STATUS_RULE"]
    error = result["errors"][0]
    assert error["extensions"]["entry"] == 4 and error["message"].startswith("entry[4]: ")
    assert error["extensions"]["operationOutcome"]["issue"]
    assert await dump(store) == before


async def test_a_failing_entry_of_any_kind_rolls_back(client: httpx.AsyncClient, store: Store) -> None:
    patient = ok(await gql(client, 'mutation { PatientCreate(res: {gender: "unknown"}) { id } }'))["PatientCreate"][
        "id"
    ]
    before = await dump(store)
    cases = [
        ([entry("POST", "Patient", PATIENT), entry("PUT", f"Patient/{patient}", PATIENT, ifMatch="7")], "CONFLICT", 1),
        ([entry("POST", "Patient", PATIENT), entry("DELETE", "Patient/nope")], "NOT_FOUND", 1),
        (
            [
                entry("POST", "Patient", PATIENT),
                entry("PATCH", f"Patient/{patient}", [{"op": "test", "path": "/gender", "value": "male"}]),
            ],
            "BAD_USER_INPUT",
            1,
        ),
        ([entry("POST", "Patient", PATIENT), entry("GET", "Patient")], "BAD_USER_INPUT", 1),
        ([entry("POST", "Claim", claim(f"Patient/{patient}", "cancelled"))], "STATUS_RULE", 0),
        (
            [entry("POST", "Patient", PATIENT), entry("DELETE", "Claim/urn:uuid:00000000-0000-4000-8000-000000000999")],
            "BAD_USER_INPUT",
            1,
        ),
        (
            [entry("POST", "Patient", PATIENT), entry("DELETE", "urn:uuid:00000000-0000-4000-8000-000000000999")],
            "BAD_USER_INPUT",
            1,
        ),
    ]
    for entries, code, index in cases:
        result = await run(client, TRANSACTION, entries)
        assert error_codes(result) == [code], result
        assert result["errors"][0]["extensions"]["entry"] == index
        assert await dump(store) == before


async def test_the_rules_see_the_final_state_not_each_step(client: httpx.AsyncClient) -> None:
    """A ClaimResponse to a draft Claim is refused; the same one, with the Claim's activation later in the
    Bundle, is accepted."""
    p = ok(await gql(client, 'mutation { PatientCreate(res: {gender: "unknown"}) { id } }'))["PatientCreate"]["id"]
    c = "urn:uuid:00000000-0000-4000-8000-0000000000aa"
    draft_only = [
        entry("POST", "Claim", claim(f"Patient/{p}"), c),
        entry("POST", "ClaimResponse", response_to(c, f"Patient/{p}")),
    ]
    refused = await run(client, TRANSACTION, draft_only)
    assert error_codes(refused) == ["STATUS_RULE"] and refused["errors"][0]["extensions"]["entry"] == 1
    activated = [*draft_only, entry("PATCH", c, [{"op": "replace", "path": "/status", "value": "active"}])]
    result = ok(await run(client, TRANSACTION, activated))["transaction"]
    assert [r["outcome"] for r in result] == ["created", "created", "updated"]


async def test_conditional_update_creates_then_updates_the_one_match(client: httpx.AsyncClient, store: Store) -> None:
    """PUT `Type?criteria`: no match creates (the resource's id, or a new one), one match is updated (its id kept,
    a fullUrl naming it for the other entries), several are PRECONDITION_FAILED; nothing is stored on failure."""
    mrn = {"identifier": [{"system": "http://x", "value": "cu1"}]}
    url = "Patient?identifier=http://x|cu1"
    made = ok(await run(client, TRANSACTION, [entry("PUT", url, {**PATIENT, **mrn})]))["transaction"][0]
    assert (made["outcome"], made["status"], made["versionId"]) == ("created", "201 Created", "1")
    p = "urn:uuid:00000000-0000-4000-8000-0000000000cc"
    renamed = {**PATIENT, **mrn, "name": [{"family": "Okafor"}]}
    entries = [entry("PUT", url, renamed, p), entry("POST", "Claim", claim(p))]
    updated, claimed = ok(await run(client, TRANSACTION, entries))["transaction"]
    assert (updated["outcome"], updated["id"], updated["versionId"]) == ("updated", made["id"], "2")
    read = await gql(client, "query($id: ID!) { Claim(id: $id) { patient { reference } } }", {"id": claimed["id"]})
    assert ok(read)["Claim"]["patient"]["reference"] == f"Patient/{made['id']}"
    wrong = await run(client, TRANSACTION, [entry("PUT", url, {**renamed, "id": "someone-else"})])
    assert error_codes(wrong) == ["BAD_USER_INPUT"] and wrong["errors"][0]["extensions"]["entry"] == 0
    ok(await run(client, TRANSACTION, [entry("POST", "Patient", {**PATIENT, **mrn})]))  # a second match
    before = await store.db["Patient"].count_documents({})
    several = await run(client, TRANSACTION, [entry("POST", "Claim", claim(p)), entry("PUT", url, renamed, p)])
    assert error_codes(several) == ["PRECONDITION_FAILED"] and several["errors"][0]["extensions"]["entry"] == 1
    assert await store.db["Patient"].count_documents({}) == before and await store.db["Claim"].count_documents({}) == 1


async def test_racing_conditional_updates_create_one_resource(client: httpx.AsyncClient, store: Store) -> None:
    """Ten batches putting the same `Type?criteria` at once: one creates, the others update what it made."""
    body = {**PATIENT, "identifier": [{"system": "http://x", "value": "race"}]}
    answers = await asyncio.gather(
        *(run(client, BATCH, [entry("PUT", "Patient?identifier=http://x|race", body)]) for _ in range(10))
    )
    outcomes = [ok(a)["batch"][0] for a in answers]
    assert sorted(o["outcome"] for o in outcomes).count("created") == 1, outcomes
    assert len({o["id"] for o in outcomes}) == 1
    assert await store.db["Patient"].count_documents({"identifier.value": "race"}) == 1


async def test_delete_and_conditional_create_in_a_transaction(client: httpx.AsyncClient) -> None:
    first = ok(
        await run(
            client,
            TRANSACTION,
            [entry("POST", "Patient", {**PATIENT, "identifier": [{"system": "http://x", "value": "1"}]})],
        )
    )
    pid = first["transaction"][0]["id"]
    draft = ok(await run(client, TRANSACTION, [entry("POST", "Claim", claim(f"Patient/{pid}"))]))["transaction"][0][
        "id"
    ]
    p = "urn:uuid:00000000-0000-4000-8000-0000000000bb"
    entries = [
        entry("POST", "Patient", PATIENT, p, ifNoneExist="identifier=http://x|1"),
        entry("POST", "Claim", claim(p)),
        entry("DELETE", f"Claim/{draft}", ifMatch="1"),
    ]
    result = ok(await run(client, TRANSACTION, entries))["transaction"]
    assert [r["outcome"] for r in result] == ["matched", "created", "deleted"]
    assert result[0]["id"] == pid and result[0]["status"] == "200 OK" and result[2]["status"] == "204 No Content"
    read = ok(
        await gql(client, "query($id: ID!) { Claim(id: $id) { patient { reference } } }", {"id": result[1]["id"]})
    )
    assert read["Claim"]["patient"]["reference"] == f"Patient/{pid}"
    gone = await gql(client, "query($id: ID!) { Claim(id: $id) { id } }", {"id": draft})
    assert error_codes(gone) == ["NOT_FOUND"]


async def test_a_batch_reports_each_entry(client: httpx.AsyncClient, store: Store) -> None:
    entries = [
        entry("POST", "Patient", PATIENT),
        entry("POST", "Claim", claim("Patient/x", "bogus")),
        entry("PUT", "Patient/nope-1", PATIENT, ifMatch="3"),
        entry("FETCH", "Patient"),
        entry("POST", "Patient", {"resourceType": "Patient", "gender": "female"}),
    ]
    result = ok(await run(client, BATCH, entries))["batch"]
    assert [r["status"] for r in result] == [
        "201 Created",
        "400 Bad Request",
        "409 Conflict",
        "400 Bad Request",
        "201 Created",
    ]
    assert [r["error"]["code"] if r["error"] else None for r in result] == [
        None,
        "BAD_USER_INPUT",
        "CONFLICT",
        "BAD_USER_INPUT",
        None,
    ]
    assert result[1]["error"]["operationOutcome"]["issue"][0]["expression"] == ["Claim.status"]
    assert result[3]["error"]["operationOutcome"]["issue"][0]["expression"] == ["Bundle.entry[3].request.method"]
    assert await store.db["Patient"].count_documents({}) == 2


async def test_fingate_load_transaction_bundles_use_the_engine(store: Store, tmp_path: Any) -> None:
    c, p = "urn:uuid:00000000-0000-4000-8000-0000000000c1", "urn:uuid:00000000-0000-4000-8000-0000000000c2"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": c, "resource": claim(p, "active"), "request": {"method": "POST", "url": "Claim"}},
            {"fullUrl": p, "resource": PATIENT, "request": {"method": "POST", "url": "Patient"}},
            {"resource": response_to(c, p), "request": {"method": "POST", "url": "ClaimResponse"}},
        ],
    }
    (tmp_path / "b.json").write_text(json_with_decimals(bundle))
    report = await load(Writer(store), [tmp_path])
    assert report.rejected == [] and report.created == 3
    responses = [d async for d in store.db["ClaimResponse"].find({})]
    claims = [d async for d in store.db["Claim"].find({})]
    assert responses[0]["request"]["reference"] == f"Claim/{claims[0]['id']}"
    bad = {
        **bundle,
        "entry": [*bundle["entry"], {"resource": claim(p, "cancelled"), "request": {"method": "POST", "url": "Claim"}}],
    }
    (tmp_path / "b.json").write_text(json_with_decimals(bad))
    report = await load(Writer(store), [tmp_path])
    assert report.loaded == 0 and len(report.rejected) == 1 and "entry[3]" in report.rejected[0][1]
    assert await store.db["Claim"].count_documents({}) == 1


async def test_conditional_creates_in_a_batch_and_several_matches_in_a_transaction(
    client: httpx.AsyncClient, store: Store
) -> None:
    mrn = {"identifier": [{"system": "http://x", "value": "b1"}]}
    entries = [
        entry(
            "POST",
            "Patient",
            {**PATIENT, **mrn},
            "urn:uuid:00000000-0000-4000-8000-0000000000d1",
            ifNoneExist="identifier=http://x|b1",
        ),
        entry("POST", "Patient", {**PATIENT, **mrn}, ifNoneExist="identifier=http://x|b1"),
    ]
    result = ok(await run(client, BATCH, entries))["batch"]
    assert [r["outcome"] for r in result] == ["created", "matched"] and result[0]["id"] == result[1]["id"]
    ok(await run(client, BATCH, [entry("POST", "Patient", PATIENT)]))
    before = await dump(store)
    several = await run(
        client,
        TRANSACTION,
        [entry("POST", "Claim", claim("Patient/x")), entry("POST", "Patient", PATIENT, ifNoneExist="family=rivera")],
    )
    assert error_codes(several) == ["PRECONDITION_FAILED"]
    error = several["errors"][0]
    assert error["extensions"]["entry"] == 1
    assert error["extensions"]["operationOutcome"]["issue"][0]["expression"] == ["Bundle.entry[1].request.ifNoneExist"]
    assert await dump(store) == before


def invoice(status: str, total: str = "100.00") -> dict[str, Any]:
    return {
        "resourceType": "Invoice",
        "status": status,
        "date": "2026-11-02",
        "totalNet": {"value": Decimal(total), "currency": "USD"},
        "totalGross": {"value": Decimal(total), "currency": "USD"},
    }


async def test_a_payment_and_the_invoice_it_balances_in_one_transaction(
    client: httpx.AsyncClient, store: Store
) -> None:
    """The balance rules see the final state: the Invoice may move to balanced because the payment in the same
    Bundle settles it, and a payment of less leaves it unable to."""
    created = ok(await run(client, TRANSACTION, [entry("POST", "Invoice", invoice("issued"))]))["transaction"][0]
    ref = f"Invoice/{created['id']}"
    short = [
        entry("POST", "PaymentReconciliation", payment(ref, "60.00")),
        entry("PUT", ref, invoice("balanced"), ifMatch="1"),
    ]
    refused = await run(client, TRANSACTION, short)
    assert error_codes(refused) == ["STATUS_RULE"] and refused["errors"][0]["extensions"]["entry"] == 1
    settled = [
        entry("PUT", ref, invoice("balanced"), ifMatch="1"),
        entry("POST", "PaymentReconciliation", payment(ref, "100.00")),
    ]
    result = ok(await run(client, TRANSACTION, settled))["transaction"]
    assert [r["outcome"] for r in result] == ["updated", "created"]
    # Balanced before this transaction: no payment may change what is paid on it.
    more = await run(client, TRANSACTION, [entry("POST", "PaymentReconciliation", payment(ref, "1.00"))])
    assert error_codes(more) == ["STATUS_RULE"]
    assert await store.db["PaymentReconciliation"].count_documents({}) == 1


async def test_payments_are_summed_whatever_the_order_of_the_entries(client: httpx.AsyncClient, store: Store) -> None:
    """A payment listed before the Claim it pays (created with its own id, a PUT), and a second payment: the
    overpayment is found in the final state."""
    patient = ok(await gql(client, 'mutation { PatientCreate(res: {gender: "unknown"}) { id } }'))["PatientCreate"][
        "id"
    ]
    c = {**claim(f"Patient/{patient}", "active"), "id": "c-order"}
    fits = [
        entry("POST", "PaymentReconciliation", payment("Claim/c-order", "100.00")),
        entry("PUT", "Claim/c-order", c),
    ]
    before = await dump(store)
    over = [*fits, entry("POST", "PaymentReconciliation", payment("Claim/c-order", "50.01"))]
    refused = await run(client, TRANSACTION, over)
    assert error_codes(refused) == ["STATUS_RULE"]
    assert await dump(store) == before
    assert [r["outcome"] for r in ok(await run(client, TRANSACTION, fits))["transaction"]] == ["created", "created"]


async def test_each_entry_needs_the_callers_scope(store: Store) -> None:
    from tests.tokens import authed_client, post, token

    entries = [entry("POST", "Patient", PATIENT), entry("POST", "Claim", claim("Patient/x"))]
    variables = {"e": json.loads(json_with_decimals(entries))}
    async with authed_client(store) as client:
        tok = token(scope="user/Patient.cruds")
        refused = (await post(client, TRANSACTION, tok, variables)).json()
        batched = (await post(client, BATCH, tok, variables)).json()
    assert error_codes(refused) == ["FORBIDDEN"] and refused["errors"][0]["extensions"]["entry"] == 1
    assert [r["error"] and r["error"]["code"] for r in batched["data"]["batch"]] == [None, "FORBIDDEN"]
    assert await store.db["Patient"].count_documents({}) == 1  # the batch's, not the transaction's
    assert await store.db["Claim"].count_documents({}) == 0
