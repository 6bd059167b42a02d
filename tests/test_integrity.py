"""Financial integrity over HTTP and the real database: allocation targets, responses, amounts, deletes, races."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.errors import CONFLICT, STATUS_RULE, FinGateError
from app.rules.engine import _referring_params
from app.rules.tables import IN_FORCE
from app.store import GUARD, Store
from app.writes import Writer, _RuleReads
from tests.harness import client_for, error_codes, gql, json_with_decimals, ok

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store) as c:
        yield c


@pytest.fixture(scope="module")
async def demo(demo_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(demo_store) as c:
        yield c


def usd(value: str, currency: str = "USD") -> dict[str, Any]:
    return {"value": Decimal(value), "currency": currency}


def claim(status: str = "active", patient: str = "Patient/p1", insurer: str = "Organization/payer") -> dict[str, Any]:
    return {
        "resourceType": "Claim",
        "status": status,
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim",
        "patient": {"reference": patient},
        "insurer": {"reference": insurer},
        "created": "2026-11-01",
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Acme plan"}}],
        "total": usd("100.00"),
    }


def response(claim_id: str) -> dict[str, Any]:
    return {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": {"coding": [{"code": "professional"}]},
        "use": "claim",
        "patient": {"reference": "Patient/p1"},
        "created": "2026-11-02",
        "outcome": "complete",
        "request": {"reference": f"Claim/{claim_id}"},
    }


def payment(*allocations: dict[str, Any], status: str = "active", amount: str = "100.00") -> dict[str, Any]:
    return {
        "resourceType": "PaymentReconciliation",
        "status": status,
        "type": {"coding": [{"code": "payment"}]},
        "created": "2026-11-03",
        "date": "2026-11-03",
        "amount": usd(amount),
        "allocation": list(allocations),
    }


def allocation(target: str, value: str = "50.00", response: str | None = None, currency: str = "USD") -> dict:
    out: dict[str, Any] = {"target": {"reference": target}, "amount": usd(value, currency)}
    if response:
        out["response"] = {"reference": response}
    return out


async def post(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = json_with_decimals({"query": query, "variables": variables})
    result = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert result.status_code == 200, result.text
    return result.json()  # type: ignore[no-any-return]


async def create(client: httpx.AsyncClient, resource: dict[str, Any], fields: str = "id status") -> dict[str, Any]:
    rtype = resource["resourceType"]
    query = f"mutation($res: {rtype}Input!) {{ {rtype}Create(res: $res) {{ {fields} }} }}"
    return await post(client, query, {"res": resource})


async def update(client: httpx.AsyncClient, id: str, resource: dict[str, Any]) -> dict[str, Any]:
    rtype = resource["resourceType"]
    query = f"mutation($id: ID!, $res: {rtype}Input!) {{ {rtype}Update(id: $id, res: $res) {{ id status }} }}"
    return await post(client, query, {"id": id, "res": resource})


async def delete(client: httpx.AsyncClient, rtype: str, id: str) -> dict[str, Any]:
    return await gql(client, f'mutation {{ {rtype}Delete(id: "{id}") {{ id }} }}')


async def new(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    rtype = resource["resourceType"]
    return str(ok(await create(client, resource, "id"))[f"{rtype}Create"]["id"])


def refusal(result: dict[str, Any]) -> tuple[str, str, list[str]]:
    """(code, rule or '', first issue's expression) of a refused mutation."""
    (error,) = result["errors"]
    ext = error["extensions"]
    issue = ext["operationOutcome"]["issue"][0]
    return ext["code"], ext.get("rule", ""), issue.get("expression", [])


async def stored_status(store: Store, rtype: str, id: str) -> str | None:
    found = await store.get(rtype, id)
    return None if found is None else found.get("status")


# ---- the defects, as reported, on the demo data (each refused, nothing stored)


async def test_an_allocation_whose_response_answers_another_claim_is_refused(demo: httpx.AsyncClient) -> None:
    body = payment(
        allocation("Claim/demo-claim-01", "10.00", response="ClaimResponse/demo-claimresponse-05"), amount="10.00"
    )
    code, rule, expression = refusal(await create(demo, body))
    assert (code, rule) == (STATUS_RULE, "PaymentReconciliation.allocation-response-answers-target")
    assert expression == ["PaymentReconciliation.allocation[0].response"]
    matching = payment(
        allocation("Claim/demo-claim-05", "10.00", response="ClaimResponse/demo-claimresponse-05"), amount="10.00"
    )
    assert ok(await create(demo, matching))["PaymentReconciliationCreate"]["status"] == "active"


async def test_allocations_in_another_currency_are_refused_at_the_element(demo: httpx.AsyncClient) -> None:
    body = payment(
        allocation("Claim/demo-claim-01", "70.00"), allocation("Claim/demo-claim-02", "70.00", currency="EUR")
    )
    code, rule, expression = refusal(await create(demo, body))
    assert code == "BAD_USER_INPUT" and expression == ["PaymentReconciliation.allocation[1].amount.currency"]
    assert "EUR" in (await create(demo, body))["errors"][0]["message"]


async def test_allocations_over_the_payments_amount_are_refused(demo: httpx.AsyncClient) -> None:
    body = payment(allocation("Claim/demo-claim-01", "70.00"), allocation("Claim/demo-claim-02", "70.00"))
    result = await create(demo, body)
    code, _, expression = refusal(result)
    assert code == "BAD_USER_INPUT" and expression == ["PaymentReconciliation.allocation.amount"]
    assert "140.00 USD" in result["errors"][0]["message"] and "100.00" in result["errors"][0]["message"]
    # Exactly the amount, to claims with that much outstanding (74.80 and 97.11 in the demo data).
    exact = payment(allocation("Claim/demo-claim-07", "30.00"), allocation("Claim/demo-claim-14", "70.00"))
    assert ok(await create(demo, exact))["PaymentReconciliationCreate"]["status"] == "active"


async def test_deleting_a_patient_that_claims_point_at_is_refused(demo: httpx.AsyncClient, demo_store: Store) -> None:
    result = await delete(demo, "Patient", "demo-patient-2")
    code, rule, expression = refusal(result)
    assert (code, rule, expression) == (STATUS_RULE, "Patient.delete-referenced", ["Patient"])
    message = result["errors"][0]["message"]
    assert "Claim/demo-claim-02 (active)" in message and "Coverage/demo-patient-2-coverage" in message
    assert await demo_store.get("Patient", "demo-patient-2") is not None


async def test_deleting_the_insurer_of_active_claims_is_refused(demo: httpx.AsyncClient, demo_store: Store) -> None:
    result = await delete(demo, "Organization", "demo-payer")
    assert refusal(result)[:2] == (STATUS_RULE, "Organization.delete-referenced")
    assert "Claim/demo-claim-" in result["errors"][0]["message"]
    assert await demo_store.get("Organization", "demo-payer") is not None


# ---- allocation targets in force, in both orders


async def test_a_cancelled_claim_takes_no_allocation(client: httpx.AsyncClient, store: Store) -> None:
    cid = await new(client, claim())
    ok(await update(client, cid, claim("cancelled")))
    code, rule, expression = refusal(await create(client, payment(allocation(f"Claim/{cid}"))))
    assert (code, rule, expression) == (
        STATUS_RULE,
        "PaymentReconciliation.allocation-target-exists",
        ["PaymentReconciliation.allocation[0].target"],
    )
    assert await store.db["PaymentReconciliation"].count_documents({}) == 0


async def test_a_draft_payment_is_activated_only_while_its_claims_are_active(
    client: httpx.AsyncClient, store: Store
) -> None:
    # The order that used to slip through: drafted while the claim was active, the claim cancelled, then activated.
    cid = await new(client, claim())
    pid = await new(client, payment(allocation(f"Claim/{cid}"), status="draft"))
    ok(await update(client, cid, claim("cancelled")))  # a draft payment holds nothing
    code, rule, _ = refusal(await update(client, pid, payment(allocation(f"Claim/{cid}"))))
    assert (code, rule) == (STATUS_RULE, "PaymentReconciliation.allocation-target-exists")
    assert await stored_status(store, "PaymentReconciliation", pid) == "draft"


async def test_an_allocated_claim_is_not_cancelled(client: httpx.AsyncClient, store: Store) -> None:
    cid = await new(client, claim())
    await new(client, payment(allocation(f"Claim/{cid}")))
    assert refusal(await update(client, cid, claim("cancelled")))[:2] == (STATUS_RULE, "Claim.cancel-allocated")
    assert await stored_status(store, "Claim", cid) == "active"


INVOICE = {"resourceType": "Invoice", "status": "issued", "totalNet": usd("100.00")}


async def test_a_cancelled_invoice_takes_no_allocation(client: httpx.AsyncClient) -> None:
    iid = await new(client, INVOICE)
    ok(await update(client, iid, {**INVOICE, "status": "cancelled"}))
    code, rule, _ = refusal(await create(client, payment(allocation(f"Invoice/{iid}"))))
    assert (code, rule) == (STATUS_RULE, "PaymentReconciliation.allocation-target-exists")
    draft = await new(client, {**INVOICE, "status": "draft"})
    assert refusal(await create(client, payment(allocation(f"Invoice/{draft}"))))[0] == STATUS_RULE


async def test_an_allocated_invoice_is_not_cancelled(client: httpx.AsyncClient, store: Store) -> None:
    iid = await new(client, INVOICE)
    await new(client, payment(allocation(f"Invoice/{iid}")))
    code, rule, _ = refusal(await update(client, iid, {**INVOICE, "status": "cancelled"}))
    assert (code, rule) == (STATUS_RULE, "Invoice.cancel-allocated")
    assert await stored_status(store, "Invoice", iid) == "issued"


# ---- responses that answer their target


async def test_a_response_must_answer_the_allocations_target(client: httpx.AsyncClient, store: Store) -> None:
    c1, c2 = await new(client, claim()), await new(client, claim())
    r1 = await new(client, response(c1))
    mixed = payment(allocation(f"Claim/{c2}", response=f"ClaimResponse/{r1}"))
    assert refusal(await create(client, mixed))[1] == "PaymentReconciliation.allocation-response-answers-target"
    # A draft that pairs them well, edited to another target, is refused at the edit.
    pid = await new(client, payment(allocation(f"Claim/{c1}", response=f"ClaimResponse/{r1}"), status="draft"))
    edited = payment(allocation(f"Claim/{c2}", response=f"ClaimResponse/{r1}"), status="draft")
    code, rule, expression = refusal(await update(client, pid, edited))
    assert (code, rule, expression) == (
        STATUS_RULE,
        "PaymentReconciliation.allocation-response-answers-target",
        ["PaymentReconciliation.allocation[0].response"],
    )
    assert ok(await update(client, pid, payment(allocation(f"Claim/{c1}", response=f"ClaimResponse/{r1}"))))


# ---- amounts, on create and on edit


async def test_an_edit_that_overdraws_the_payment_is_refused(client: httpx.AsyncClient, store: Store) -> None:
    cid = await new(client, claim())
    pid = await new(client, payment(allocation(f"Claim/{cid}", "60.00"), status="draft"))
    over = payment(allocation(f"Claim/{cid}", "60.00"), allocation(f"Claim/{cid}", "40.01"), status="draft")
    assert refusal(await update(client, pid, over))[0] == "BAD_USER_INPUT"
    stored = await store.get("PaymentReconciliation", pid)
    assert stored is not None and len(stored["allocation"]) == 1 and stored["meta"]["versionId"] == "1"
    less = payment(allocation(f"Claim/{cid}", "60.00"), status="draft", amount="50.00")
    assert refusal(await update(client, pid, less))[2] == ["PaymentReconciliation.allocation.amount"]


# ---- deletes under records in force, in both orders


async def test_a_patient_is_deleted_only_once_no_record_in_force_points_at_it(
    client: httpx.AsyncClient, store: Store
) -> None:
    patient = await new(client, {"resourceType": "Patient", "name": [{"family": "Okafor"}]})
    draft = await new(client, claim("draft", patient=f"Patient/{patient}"))  # a draft holds nothing
    cid = await new(client, claim(patient=f"Patient/{patient}"))
    result = await delete(client, "Patient", patient)
    assert refusal(result)[:2] == (STATUS_RULE, "Patient.delete-referenced")
    assert f"Claim/{cid} (active)" in result["errors"][0]["message"] and draft not in result["errors"][0]["message"]
    assert await store.get("Patient", patient) is not None
    ok(await update(client, cid, claim("cancelled", patient=f"Patient/{patient}")))
    assert ok(await delete(client, "Patient", patient))["PatientDelete"]["id"] == patient


async def test_an_organization_named_only_by_cancelled_records_can_go(client: httpx.AsyncClient) -> None:
    org = await new(client, {"resourceType": "Organization", "name": "Gone Health"})
    cid = await new(client, claim(insurer=f"Organization/{org}"))
    assert refusal(await delete(client, "Organization", org))[1] == "Organization.delete-referenced"
    ok(await update(client, cid, claim("cancelled", insurer=f"Organization/{org}")))
    assert ok(await delete(client, "Organization", org))


async def test_a_refused_delete_names_a_few_referrers_per_type_in_one_query_each(store: Store) -> None:
    writer = Writer(store)
    for _ in range(8):
        await writer.create("Claim", claim(patient="Patient/many"))
    await store.db["Patient"].insert_one(
        store._stored("Patient", {"resourceType": "Patient", "id": "many", "meta": {"versionId": "1"}})
    )
    before = store.commands.count
    with pytest.raises(FinGateError) as refused:
        await writer.delete("Patient", "many")
    assert refused.value.message.count("Claim/") == 3 and "and more" in refused.value.message
    # The read of the patient, one query per referring type that can point at a Patient, the abort.
    referring = [t for t in IN_FORCE if _referring_params(t, "Patient")]
    assert store.commands.count - before <= 1 + len(referring) + 2


# ---- races: the two writers of a cross-resource rule meet in one document, so exactly one commits


# The allocatable types with a cancel guard: (in force, cancelled).
TARGETS = {"Claim": (claim(), claim("cancelled")), "Invoice": (INVOICE, {**INVOICE, "status": "cancelled"})}


async def _claim_and_draft_payment(writer: Writer, kind: str = "Claim") -> tuple[str, str]:
    cid = (await writer.create(kind, dict(TARGETS[kind][0])))["id"]
    pid = (await writer.create("PaymentReconciliation", payment(allocation(f"{kind}/{cid}"), status="draft")))["id"]
    return cid, pid


async def _activate(writer: Writer, pid: str, cid: str, kind: str = "Claim") -> Any:
    return await writer.update("PaymentReconciliation", pid, payment(allocation(f"{kind}/{cid}")))


async def _cancel(writer: Writer, cid: str, kind: str = "Claim") -> Any:
    return await writer.update(kind, cid, dict(TARGETS[kind][1]))


def _pause(monkeypatch: pytest.MonkeyPatch, method: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Stop the next rule read of `method` made inside a transaction right after it: (reached, go on)."""
    reached, go = asyncio.Event(), asyncio.Event()
    original = getattr(_RuleReads, method)

    async def paused(self: _RuleReads, *args: Any) -> Any:
        out = await original(self, *args)
        if self.session is not None and not reached.is_set():
            reached.set()
            await go.wait()
        return out

    monkeypatch.setattr(_RuleReads, method, paused)
    return reached, go


@pytest.mark.parametrize("kind", TARGETS)
async def test_a_cancel_racing_an_activation_that_has_read_the_claim_loses(
    store: Store, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    writer = Writer(store)
    cid, pid = await _claim_and_draft_payment(writer, kind)
    reached, go = _pause(monkeypatch, "get_many")
    activation = asyncio.create_task(_activate(writer, pid, cid, kind))
    await reached.wait()  # the activation read the target as in force, in its transaction, and has not committed
    with pytest.raises(FinGateError) as lost:
        await _cancel(writer, cid, kind)
    assert lost.value.code == CONFLICT
    go.set()
    assert (await activation)["status"] == "active"
    assert await stored_status(store, kind, cid) == TARGETS[kind][0]["status"]


@pytest.mark.parametrize("kind", TARGETS)
async def test_an_activation_racing_a_cancel_that_has_searched_the_payments_loses(
    store: Store, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    writer = Writer(store)
    cid, pid = await _claim_and_draft_payment(writer, kind)
    reached, go = _pause(monkeypatch, "search")
    cancel = asyncio.create_task(_cancel(writer, cid, kind))
    await reached.wait()  # the cancel found no active payment, in its transaction, and has not written
    # The activation reads the target as still in force (the cancel is not committed) and commits first...
    assert (await _activate(writer, pid, cid, kind))["status"] == "active"
    go.set()
    # ... so the cancel, decided on a snapshot the activation changed, must not commit.
    with pytest.raises(FinGateError) as lost:
        await cancel
    assert lost.value.code == CONFLICT
    assert await stored_status(store, kind, cid) == TARGETS[kind][0]["status"]


async def test_the_guard_leaves_the_fhir_json_as_it_was(store: Store) -> None:
    writer = Writer(store)
    cid, pid = await _claim_and_draft_payment(writer)
    before = await store.get("Claim", cid)
    await _activate(writer, pid, cid)
    raw = await store.db["Claim"].find_one({"id": cid})
    assert raw is not None and raw[GUARD] >= 1
    assert await store.get("Claim", cid) == before
    history = await store.history("Claim", cid)
    assert [h["meta"]["versionId"] for h in history] == ["1"]


ROUNDS = 50


async def test_cancel_and_activation_at_once_have_exactly_one_winner(client: httpx.AsyncClient, store: Store) -> None:
    writer = Writer(store)
    outcomes: dict[str, int] = {}
    for _ in range(ROUNDS):
        cid, pid = await _claim_and_draft_payment(writer)
        activated, cancelled = await asyncio.gather(
            update(client, pid, payment(allocation(f"Claim/{cid}"))), update(client, cid, claim("cancelled"))
        )
        won = ["errors" not in r for r in (activated, cancelled)]
        assert won.count(True) == 1, (activated, cancelled)
        loser = activated if not won[0] else cancelled
        assert error_codes(loser)[0] in (CONFLICT, STATUS_RULE), loser
        outcomes[error_codes(loser)[0]] = outcomes.get(error_codes(loser)[0], 0) + 1
        states = (await stored_status(store, "PaymentReconciliation", pid), await stored_status(store, "Claim", cid))
        assert states == (("active", "active") if won[0] else ("draft", "cancelled"))
    # Whatever the interleavings were, no active payment allocates a cancelled claim.
    cancelled_ids = [f"Claim/{c['id']}" async for c in store.db["Claim"].find({"status": "cancelled"}, {"id": 1})]
    clash = await store.db["PaymentReconciliation"].count_documents(
        {"status": "active", "allocation.target.reference": {"$in": cancelled_ids}}
    )
    assert clash == 0 and sum(outcomes.values()) == ROUNDS


# ---- the README's example, on the demo data


async def test_the_readme_integrity_examples_are_refused_as_it_says(demo: httpx.AsyncClient) -> None:
    section = README.read_text().split("## Cross-resource rules", 1)[1].split("## Invariants", 1)[0]
    blocks = re.findall(r"```graphql\n(.*?)```", section, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        result = await gql(demo, block)
        assert result["data"] is None or all(v is None for v in result["data"].values()), result
        assert {e["extensions"]["code"] for e in result["errors"]} <= {STATUS_RULE, "BAD_USER_INPUT"}


async def test_an_activation_whose_claim_is_cancelled_before_it_guards_it_loses(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The activation has read the claim as active in its snapshot; the cancel commits before the guard is written.
    writer = Writer(store)
    cid, pid = await _claim_and_draft_payment(writer)
    reached, go = asyncio.Event(), asyncio.Event()
    guard = Store.guard

    async def late(self: Store, *args: Any) -> None:
        reached.set()
        await go.wait()
        await guard(self, *args)

    monkeypatch.setattr(Store, "guard", late)
    activation = asyncio.create_task(_activate(writer, pid, cid))
    await reached.wait()
    monkeypatch.setattr(Store, "guard", guard)
    assert (await _cancel(writer, cid))["status"] == "cancelled"
    go.set()
    with pytest.raises(FinGateError) as lost:
        await activation
    assert lost.value.code == CONFLICT
    assert await stored_status(store, "PaymentReconciliation", pid) == "draft"
