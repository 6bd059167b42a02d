"""Billing views (app/billing) and the balance rules: checked to the cent, against a recomputation, and per level."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import errors, validation
from app.auth import anonymous
from app.billing import ITEMS_SHOWN, PAYMENTS_SHOWN
from app.fhir.values import now_instant
from app.graphql.context import Context
from app.settings import Settings
from app.store import Store
from app.writes import Writer
from tests.harness import client_for, error_codes, gql, ok

D = Decimal
AMOUNT = "{ currency value }"
CLAIM_VIEW = f"billing {{ billed {AMOUNT} adjudicated {AMOUNT} paid {AMOUNT} outstanding {AMOUNT} payments {{ payment {{ reference }} date amount {AMOUNT} }} }}"
INVOICE_VIEW = f"billing {{ gross {AMOUNT} net {AMOUNT} paid {AMOUNT} balance {AMOUNT} payments {{ payment {{ reference }} date amount {AMOUNT} }} }}"
ACCOUNT_VIEW = f"billing {{ invoiced {AMOUNT} paid {AMOUNT} balance {AMOUNT} payments {{ payment {{ reference }} date amount {AMOUNT} }} }}"
PAYMENT_VIEW = f"billing {{ amount {AMOUNT} allocated {AMOUNT} unallocated {AMOUNT} }}"


def amounts(*pairs: tuple[str | None, str]) -> list[dict[str, Any]]:
    return [{"currency": c, "value": v} for c, v in pairs]


def usd(value: str) -> dict[str, Any]:
    return {"value": D(value), "currency": "USD"}


def money(value: str, currency: str) -> dict[str, Any]:
    return {"value": D(value), "currency": currency}


def claim(id: str, total: dict[str, Any] | None, status: str = "active") -> dict[str, Any]:
    out = {
        "resourceType": "Claim", "id": id, "status": status, "use": "claim", "created": "2026-01-01",
        "type": {"coding": [{"code": "professional"}]}, "patient": {"reference": "Patient/p"},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "plan"}}],
    }  # fmt: skip
    if total is not None:
        out["total"] = total
    return out


def payment(id: str, date: str, amount: dict[str, Any], *allocations: tuple[str, dict[str, Any]], status: str = "active") -> dict[str, Any]:  # fmt: skip
    return {
        "resourceType": "PaymentReconciliation", "id": id, "status": status, "created": date, "date": date,
        "type": {"coding": [{"code": "payment"}]}, "amount": amount,
        "allocation": [{"target": {"reference": target}, "amount": value} for target, value in allocations],
    }  # fmt: skip


def response(id: str, request: str, *totals: tuple[str, dict[str, Any]], status: str = "active") -> dict[str, Any]:
    adjudication = "http://terminology.hl7.org/CodeSystem/adjudication"
    return {
        "resourceType": "ClaimResponse", "id": id, "status": status, "use": "claim", "outcome": "complete",
        "created": "2026-01-03", "type": {"coding": [{"code": "professional"}]},
        "patient": {"reference": "Patient/p"}, "insurer": {"reference": "Organization/o"},
        "request": {"reference": request},
        "total": [{"category": {"coding": [{"system": adjudication, "code": c}]}, "amount": a} for c, a in totals],
    }  # fmt: skip


def invoice(id: str, gross: str | None, net: str, status: str = "issued") -> dict[str, Any]:
    out = {"resourceType": "Invoice", "id": id, "status": status, "date": "2026-01-05", "totalNet": usd(net)}
    if gross is not None:
        out["totalGross"] = usd(gross)
    return out


async def refused(write: Any) -> errors.FinGateError:
    with pytest.raises(errors.FinGateError) as caught:
        await write
    return caught.value


# ---- the demo data, to the cent -------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def demo(demo_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(demo_store) as client:
        yield client


async def test_demo_views_to_the_cent(demo: httpx.AsyncClient) -> None:
    query = f"""{{
      full: Claim(id: "demo-claim-01") {{ {CLAIM_VIEW} }}
      partial: Claim(id: "demo-claim-04") {{ {CLAIM_VIEW} }}
      PaymentReconciliation(id: "demo-payment-1") {{ {PAYMENT_VIEW} }}
      Invoice(id: "demo-invoice-1") {{ status {INVOICE_VIEW} }}
      Account(id: "demo-account-1") {{ {ACCOUNT_VIEW} }}
    }}"""
    data = ok(await gql(demo, query))
    one = amounts(("USD", "177.65"))
    assert data["full"]["billing"] == {
        "billed": one, "adjudicated": one, "paid": one, "outstanding": amounts(("USD", "0.00")),
        "payments": [{"payment": {"reference": "PaymentReconciliation/demo-payment-1"}, "date": "2026-11-10", "amount": one}],
    }  # fmt: skip
    # demo-claim-04: 77.80 billed, adjudicated and paid at 90 %: 70.02, so 7.78 outstanding.
    partial = data["partial"]["billing"]
    assert partial["billed"] == amounts(("USD", "77.80"))
    assert partial["adjudicated"] == partial["paid"] == amounts(("USD", "70.02"))
    assert partial["outstanding"] == amounts(("USD", "7.78"))
    assert data["PaymentReconciliation"]["billing"] == {
        "amount": amounts(("USD", "2039.49")),
        "allocated": amounts(("USD", "2039.49")),
        "unallocated": amounts(("USD", "0.00")),
    }
    total = amounts(("USD", "184.60"))
    assert data["Invoice"]["status"] == "balanced"
    assert data["Invoice"]["billing"] == {
        "gross": total, "net": total, "paid": total, "balance": amounts(("USD", "0.00")),
        "payments": [{"payment": {"reference": "PaymentReconciliation/demo-payment-patient-1"}, "date": "2026-11-15", "amount": total}],
    }  # fmt: skip
    assert data["Account"]["billing"] == {
        "invoiced": total, "paid": total, "balance": amounts(("USD", "0.00")),
        "payments": [{"payment": {"reference": "PaymentReconciliation/demo-payment-patient-1"}, "date": "2026-11-15", "amount": total}],
    }  # fmt: skip


README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


async def test_the_readme_query_runs_on_the_demo_data(demo: httpx.AsyncClient) -> None:
    readme = README
    section = readme[readme.index("## Billing views") :]
    query = section[
        section.index("```graphql") + len("```graphql") : section.index("```", section.index("```graphql") + 3)
    ]
    data = ok(await gql(demo, query))
    assert data["Claim"]["billing"]["outstanding"] == amounts(("USD", "7.78"))
    assert data["Invoice"]["billing"]["balance"] == amounts(("USD", "0.00"))
    assert data["Account"]["billing"]["balance"] == amounts(("USD", "0.00"))
    assert len(data["ClaimList"]) == 7 and all(c["billing"]["outstanding"] for c in data["ClaimList"])
    # demo-patient-2 has only these claims, created 2026-10-02 .. 2026-10-20: 42 to 60 days before asOf.
    owed = sum(D(c["billing"]["outstanding"][0]["value"]) for c in data["ClaimList"])
    aging = data["Patient"]["billing"]
    assert aging["outstanding"] == aging["days31to60"] == [{"value": str(owed)}] and owed > 0
    assert aging["days0to30"] == aging["days61to90"] == aging["over90"] == []
    owing = [c["id"] for c in data["ClaimList"] if D(c["billing"]["outstanding"][0]["value"]) != 0]
    assert [i["item"]["resource"]["id"] for i in aging["items"]] == owing and owing  # created order is age order
    # The payer insures all 20 demo claims; demo-claim-01 (2026-10-01) is 61 days old.
    assert data["Organization"]["billing"]["outstanding"][0]["currency"] == "USD"
    assert data["Organization"]["billing"]["days31to60"] != []


async def test_a_second_payment_past_the_claims_total_is_refused(demo_store: Store) -> None:
    """demo-claim-01 is paid in full (177.65): a second 100.00 used to be accepted, making 277.65 paid."""
    writer = Writer(demo_store)
    extra = payment("overpay-1", "2026-11-20", usd("100.00"), ("Claim/demo-claim-01", usd("100.00")))
    err = await refused(writer.create("PaymentReconciliation", extra, keep_id=True))
    assert err.code == errors.STATUS_RULE and err.extra["rule"] == "Claim.paid-within-total"
    assert err.issues and err.issues[0]["expression"] == ["PaymentReconciliation.allocation[0].amount"]
    assert "277.65 USD paid against its total of 177.65 USD" in err.message
    assert await demo_store.get("PaymentReconciliation", "overpay-1") is None


# ---- a hand-computed set: partial payments, refunds, drafts, cancellations, currencies ---------------------


async def _stored_as_is(store: Store, resource: dict[str, Any]) -> None:
    """A valid resource stored without the cross-resource rules, as data loaded before a rule existed is."""
    rtype = resource["resourceType"]
    meta = {"versionId": "1", "lastUpdated": now_instant()}
    await store.insert(rtype, {**validation.validate(rtype, resource), "meta": meta})


async def _ledger(store: Store) -> None:
    writer = Writer(store)
    for c in (claim("c-usd", usd("100.00")), claim("c-eur", money("50.00", "EUR")), claim("c-none", None)):
        await writer.create("Claim", c, keep_id=True)
    await writer.create("Account", {"resourceType": "Account", "id": "a-1", "status": "active"}, keep_id=True)
    on_account = {"account": {"reference": "Account/a-1"}}
    await writer.create("Invoice", {**invoice("i-1", "121.00", "100.00"), **on_account}, keep_id=True)
    await writer.create("Invoice", {**invoice("i-2", "50.00", "50.00", status="draft"), **on_account}, keep_id=True)
    eur_invoice = {**invoice("i-3", None, "0"), "totalNet": money("30.00", "EUR"), **on_account}
    await writer.create("Invoice", eur_invoice, keep_id=True)
    await writer.create("ClaimResponse", response("r-1", "Claim/c-usd", ("submitted", usd("100.00")), ("benefit", usd("80.00"))), keep_id=True)  # fmt: skip
    await writer.create("ClaimResponse", response("r-2", "Claim/c-usd", ("benefit", usd("10.00"))), keep_id=True)
    await writer.update("ClaimResponse", "r-2", {**response("r-2", "Claim/c-usd", ("benefit", usd("10.00"))), "status": "cancelled"})  # fmt: skip
    await writer.create("ClaimResponse", response("r-3", "Claim/c-eur/_history/1", ("benefit", money("45.00", "EUR"))), keep_id=True)  # fmt: skip
    ledger = [
        payment(
            "p-1", "2026-02-01", usd("50.10"), ("Claim/c-usd", usd("30.10")), ("Claim/c-eur", money("20.00", "EUR"))
        ),  # fmt: skip
        payment(
            "p-2",
            "2026-02-02",
            usd("106.95"),
            ("Claim/c-usd", usd("45.45")),
            ("Invoice/i-1", usd("60.50")),
            ("Claim/c-usd", usd("1.00")),
        ),  # fmt: skip
        payment("p-3", "2026-02-03", usd("-5.00"), ("Claim/c-usd", usd("-5.00"))),  # a refund
        payment("p-4", "2026-02-04", usd("99.00"), ("Claim/c-usd", usd("99.00")), status="draft"),  # pays nothing yet
    ]
    for p in ledger:
        if p["id"] == "p-1":  # mixed currencies: data stored before the allocation-within-amount rule
            await _stored_as_is(store, p)
        else:
            await writer.create("PaymentReconciliation", p, keep_id=True)
    cancelled = payment("p-5", "2026-02-05", usd("10.00"), ("Claim/c-usd", usd("10.00")))
    await writer.create("PaymentReconciliation", cancelled, keep_id=True)
    await writer.update("PaymentReconciliation", "p-5", {**cancelled, "status": "cancelled"})
    # The tenant allows overpayment for this one: 60.00 EUR paid on a 50.00 EUR claim, and 1.00 USD on it too.
    credit = payment("p-6", "2026-02-06", money("40.00", "EUR"), ("Claim/c-eur", money("40.00", "EUR")), ("Claim/c-eur/_history/1", usd("1.00")))  # fmt: skip
    await _stored_as_is(store, credit)  # mixed currencies too, as loaded before the rule
    # To the Account itself, and to its EUR Invoice.
    await writer.create("PaymentReconciliation", payment("p-7", "2026-02-07", usd("10.00"), ("Account/a-1", usd("10.00"))), keep_id=True)  # fmt: skip
    await writer.create("PaymentReconciliation", payment("p-8", "2026-02-08", money("30.00", "EUR"), ("Invoice/i-3", money("30.00", "EUR"))), keep_id=True)  # fmt: skip


@pytest.fixture(scope="module")
async def ledger(mongo_uri: str) -> AsyncIterator[Store]:
    from tests.conftest import fresh_store

    async with fresh_store(mongo_uri) as s:
        await _ledger(s)
        yield s


def ref(id: str) -> dict[str, Any]:
    return {"reference": f"PaymentReconciliation/{id}"}


@pytest.mark.parametrize("compiled", [True, False])
async def test_hand_computed_ledger_to_the_cent(ledger: Store, compiled: bool) -> None:
    query = f"""{{
      usd: Claim(id: "c-usd") {{ {CLAIM_VIEW} }}
      eur: Claim(id: "c-eur") {{ {CLAIM_VIEW} }}
      none: Claim(id: "c-none") {{ {CLAIM_VIEW} }}
      Invoice(id: "i-1") {{ {INVOICE_VIEW} }}
      Account(id: "a-1") {{ {ACCOUNT_VIEW} }}
      p1: PaymentReconciliation(id: "p-1") {{ {PAYMENT_VIEW} }}
      p2: PaymentReconciliation(id: "p-2") {{ {PAYMENT_VIEW} }}
    }}"""
    async with client_for(ledger, settings=Settings(compiled=compiled)) as client:
        data = ok(await gql(client, query))
    # c-usd: 30.10 + (45.45 + 1.00) - 5.00 = 71.55 paid; p-4 is a draft and p-5 cancelled; r-2 cancelled.
    assert data["usd"]["billing"] == {
        "billed": amounts(("USD", "100.00")),
        "adjudicated": amounts(("USD", "80.00")),
        "paid": amounts(("USD", "71.55")),
        "outstanding": amounts(("USD", "28.45")),
        "payments": [
            {"payment": ref("p-1"), "date": "2026-02-01", "amount": amounts(("USD", "30.10"))},
            {"payment": ref("p-2"), "date": "2026-02-02", "amount": amounts(("USD", "46.45"))},
            {"payment": ref("p-3"), "date": "2026-02-03", "amount": amounts(("USD", "-5.00"))},
        ],
    }
    # c-eur: 20.00 + 40.00 EUR = 60.00 against 50.00 (a credit of 10.00), and 1.00 USD never added to it.
    assert data["eur"]["billing"] == {
        "billed": amounts(("EUR", "50.00")),
        "adjudicated": amounts(("EUR", "45.00")),
        "paid": amounts(("EUR", "60.00"), ("USD", "1.00")),
        "outstanding": amounts(("EUR", "-10.00"), ("USD", "-1.00")),
        "payments": [
            {"payment": ref("p-1"), "date": "2026-02-01", "amount": amounts(("EUR", "20.00"))},
            {"payment": ref("p-6"), "date": "2026-02-06", "amount": amounts(("EUR", "40.00"), ("USD", "1.00"))},
        ],
    }
    assert data["none"]["billing"] == {"billed": [], "adjudicated": [], "paid": [], "outstanding": [], "payments": []}
    # i-1: 121.00 gross (100.00 net), 60.50 paid: 60.50 to pay.
    assert data["Invoice"]["billing"] == {
        "gross": amounts(("USD", "121.00")),
        "net": amounts(("USD", "100.00")),
        "paid": amounts(("USD", "60.50")),
        "balance": amounts(("USD", "60.50")),
        "payments": [{"payment": ref("p-2"), "date": "2026-02-02", "amount": amounts(("USD", "60.50"))}],
    }
    # a-1: i-1 (121.00 USD) and i-3 (30.00 EUR) billed, i-2 is a draft; paid 60.50 on i-1, 10.00 to the
    # Account itself, 30.00 EUR on i-3.
    assert data["Account"]["billing"] == {
        "invoiced": amounts(("EUR", "30.00"), ("USD", "121.00")),
        "paid": amounts(("EUR", "30.00"), ("USD", "70.50")),
        "balance": amounts(("EUR", "0.00"), ("USD", "50.50")),
        "payments": [
            {"payment": ref("p-2"), "date": "2026-02-02", "amount": amounts(("USD", "60.50"))},
            {"payment": ref("p-7"), "date": "2026-02-07", "amount": amounts(("USD", "10.00"))},
            {"payment": ref("p-8"), "date": "2026-02-08", "amount": amounts(("EUR", "30.00"))},
        ],
    }
    assert data["p1"]["billing"] == {
        "amount": amounts(("USD", "50.10")),
        "allocated": amounts(("EUR", "20.00"), ("USD", "30.10")),
        "unallocated": amounts(("EUR", "-20.00"), ("USD", "20.00")),
    }
    assert data["p2"]["billing"]["unallocated"] == amounts(("USD", "0.00"))


# ---- the balance rules, whichever side is written last ---------------------------------------------------


async def test_overpayment_is_refused_in_both_orders(store: Store) -> None:
    writer = Writer(store)
    await writer.create("Claim", claim("c", usd("100.00")), keep_id=True)
    await writer.create("Claim", claim("d", usd("100.00"), status="draft"), keep_id=True)
    first = payment("p1", "2026-02-01", usd("60.00"), ("Claim/c", usd("60.00")))
    await writer.create("PaymentReconciliation", first, keep_id=True)
    # A draft pays nothing: accepted; activating it would take c to 110.00: refused, nothing stored.
    second = payment("p2", "2026-02-02", usd("50.00"), ("Claim/c", usd("50.00")), status="draft")
    await writer.create("PaymentReconciliation", second, keep_id=True)
    err = await refused(writer.update("PaymentReconciliation", "p2", {**second, "status": "active"}))
    assert err.extra["rule"] == "Claim.paid-within-total" and "110.00 USD paid" in err.message
    assert (await store.get("PaymentReconciliation", "p2"))["status"] == "draft"  # type: ignore[index]
    # Fixed to fit, the draft activates: c is paid in full.
    await writer.update("PaymentReconciliation", "p2", {**second, "allocation": [{"target": {"reference": "Claim/c"}, "amount": usd("40.00")}]})  # fmt: skip
    await writer.update("PaymentReconciliation", "p2", {**second, "status": "active", "allocation": [{"target": {"reference": "Claim/c"}, "amount": usd("40.00")}]})  # fmt: skip
    # The target written last: a draft Claim paid 80.00 cannot have its total edited below that. (Payments go
    # only to an active Claim, whose content is fixed; this one was stored before that rule, as old data is.)
    await _stored_as_is(store, payment("p3", "2026-02-03", usd("80.00"), ("Claim/d", usd("80.00"))))
    err = await refused(writer.update("Claim", "d", claim("d", usd("79.99"), status="draft")))
    assert err.extra["rule"] == "Claim.paid-within-total"
    assert err.issues and err.issues[0]["expression"] == ["Claim.total"]
    await writer.update("Claim", "d", claim("d", usd("80.00"), status="draft"))
    # A payment in another currency than the claim's total has nothing to pay there.
    err = await refused(writer.create("PaymentReconciliation", payment("p4", "2026-02-04", money("1.00", "EUR"), ("Claim/c", money("1.00", "EUR"))), keep_id=True))  # fmt: skip
    assert err.extra["rule"] == "Claim.paid-within-total"
    # A refund (a negative allocation) is never refused, even past what was paid.
    await writer.create("PaymentReconciliation", payment("p5", "2026-02-05", usd("-70.00"), ("Claim/c", usd("-70.00"))), keep_id=True)  # fmt: skip


async def test_the_tenant_setting_allows_overpayment_and_the_view_shows_a_credit(store: Store) -> None:
    await Writer(store).create("Claim", claim("c", usd("100.00")), keep_id=True)
    create = """mutation($res: PaymentReconciliationInput!) { PaymentReconciliationCreate(res: $res) { id } }"""
    over = json.loads(json.dumps(payment("x", "2026-02-01", usd("120.00"), ("Claim/c", usd("120.00"))), default=str))
    del over["id"]
    async with client_for(store) as strict:
        assert error_codes(await gql(strict, create, {"res": over})) == ["STATUS_RULE"]
    async with client_for(store, settings=Settings(allow_overpayment=["other-tenant"])) as other:
        assert error_codes(await gql(other, create, {"res": over})) == ["STATUS_RULE"]
    async with client_for(store, settings=Settings(allow_overpayment=[store.tenant])) as lenient:
        ok(await gql(lenient, create, {"res": over}))
        view = ok(await gql(lenient, '{ Claim(id: "c") { billing { outstanding { currency value } } } }'))
    assert view["Claim"]["billing"]["outstanding"] == amounts(("USD", "-20.00"))


async def test_an_invoice_is_balanced_only_when_settled(store: Store) -> None:
    writer = Writer(store)
    await writer.create("Invoice", invoice("i", "121.00", "100.00"), keep_id=True)
    balanced = {**invoice("i", "121.00", "100.00"), "status": "balanced"}
    err = await refused(writer.update("Invoice", "i", balanced))  # no payment at all: used to pass
    assert err.code == errors.STATUS_RULE and err.extra["rule"] == "Invoice.balanced-when-settled"
    assert err.issues and err.issues[0]["expression"] == ["Invoice.status"]
    assert "balance of 121.00 USD" in err.message
    part = payment("p1", "2026-02-01", usd("100.00"), ("Invoice/i", usd("100.00")))  # the net is not enough
    await writer.create("PaymentReconciliation", part, keep_id=True)
    assert "balance of 21.00 USD" in (await refused(writer.update("Invoice", "i", balanced))).message
    rest = payment("p2", "2026-02-02", usd("21.00"), ("Invoice/i", usd("21.00")))
    await writer.create("PaymentReconciliation", rest, keep_id=True)
    await writer.update("Invoice", "i", balanced)
    # The other order: a balanced Invoice's payments cannot change, by cancelling one or by adding one.
    err = await refused(writer.update("PaymentReconciliation", "p2", {**rest, "status": "cancelled"}))
    assert err.extra["rule"] == "Invoice.balanced-when-settled"
    assert err.issues and err.issues[0]["expression"] == ["PaymentReconciliation.status"]
    lenient = Writer(store, allow_overpayment=True)
    more = payment("p3", "2026-02-03", usd("1.00"), ("Invoice/i", usd("1.00")))
    err = await refused(lenient.create("PaymentReconciliation", more, keep_id=True))
    assert err.extra["rule"] == "Invoice.balanced-when-settled"
    assert (await store.get("PaymentReconciliation", "p2"))["status"] == "active"  # type: ignore[index]


async def test_an_invoice_without_gross_is_settled_at_its_net(store: Store) -> None:
    writer = Writer(store)
    await writer.create("Invoice", invoice("n", None, "40.00"), keep_id=True)
    err = await refused(writer.create("PaymentReconciliation", payment("p", "2026-02-01", usd("40.01"), ("Invoice/n", usd("40.01"))), keep_id=True))  # fmt: skip
    assert err.extra["rule"] == "Invoice.paid-within-total"
    await writer.create("PaymentReconciliation", payment("p", "2026-02-01", usd("40.00"), ("Invoice/n", usd("40.00"))), keep_id=True)  # fmt: skip
    await writer.update("Invoice", "n", {**invoice("n", None, "40.00"), "status": "balanced"})


# ---- one command per type and level, on both execution paths --------------------------------------------------------


async def _claims_paid_twice(store: Store, n: int) -> str:
    """`n` Claims of 10.10 each, paid 10.00 by one payment and 0.10 by another: returns the first payment's id."""
    writer, tag = Writer(store), f"lvl-{n}"
    for i in range(n):
        await writer.create("Claim", {**claim(f"{tag}-c{i}", usd("10.10")), "patient": {"reference": f"Patient/{tag}"}}, keep_id=True)  # fmt: skip
    for suffix, each in (("a", "10.00"), ("b", "0.10")):
        allocations = [(f"Claim/{tag}-c{i}", usd(each)) for i in range(n)]
        await writer.create("PaymentReconciliation", payment(f"{tag}-{suffix}", "2026-03-01", usd(str(D(each) * n)), *allocations), keep_id=True)  # fmt: skip
    return f"{tag}-a"


LEVELS = f"""query($id: ID!) {{ PaymentReconciliation(id: $id) {{ {PAYMENT_VIEW} allocation {{ target {{ resource {{ ... on Claim {{
  id billing {{ paid {AMOUNT} outstanding {AMOUNT} payments {{ amount {AMOUNT} payment {{ resource {{ ... on PaymentReconciliation {{ id {PAYMENT_VIEW} }} }} }} }} }}
}} }} }} }} }} }}"""


@pytest.mark.parametrize("n", [10, 50, 200])
@pytest.mark.parametrize("compiled", [True, False])
async def test_views_cost_one_command_per_level(store: Store, n: int, compiled: bool) -> None:
    pid = await _claims_paid_twice(store, n)
    async with client_for(store, settings=Settings(compiled=compiled)) as client:
        engine = client.fingate_app.state.compiled_engine  # type: ignore[attr-defined]
        before = store.commands.count
        data = ok(await gql(client, LEVELS, {"id": pid}))["PaymentReconciliation"]
        used = store.commands.count - before
        # The payment; its Claims; their settlements (one aggregate); the second payment (the first is read already).
        assert used == 4, used
        listed = f'{{ ClaimList(patient: "Patient/lvl-{n}", _count: {n}) {{ id billing {{ outstanding {AMOUNT} }} }} }}'
        before = store.commands.count
        claims = ok(await gql(client, listed))["ClaimList"]
        assert store.commands.count - before == 2  # the search; the settlements
        assert engine is None or engine.stats["compiled"] == 2
    assert data["billing"]["unallocated"] == amounts(("USD", "0.00"))
    assert len(data["allocation"]) == len(claims) == n
    for allocation in data["allocation"]:
        view = allocation["target"]["resource"]["billing"]
        assert view["paid"] == amounts(("USD", "10.10")) and view["outstanding"] == amounts(("USD", "0.00"))
        assert [p["payment"]["resource"]["id"] for p in view["payments"]] == [pid, pid[:-1] + "b"]
    assert all(c["billing"]["outstanding"] == amounts(("USD", "0.00")) for c in claims)


@pytest.mark.parametrize("n", [10, 50, 200])
@pytest.mark.parametrize("compiled", [True, False])
async def test_account_views_cost_one_command_per_level(store: Store, n: int, compiled: bool) -> None:
    writer, owner = Writer(store), {"reference": f"Organization/acct-{n}"}
    for i in range(n):
        await writer.create("Account", {"resourceType": "Account", "id": f"a{i}", "status": "active", "owner": owner}, keep_id=True)  # fmt: skip
        await writer.create("Invoice", {**invoice(f"i{i}", "10.00", "10.00"), "account": {"reference": f"Account/a{i}"}}, keep_id=True)  # fmt: skip
    allocations = [(f"Invoice/i{i}", usd("4.00")) for i in range(n)]
    await writer.create("PaymentReconciliation", payment("p", "2026-03-01", usd(str(4 * n)), *allocations), keep_id=True)  # fmt: skip
    query = f'{{ AccountList(owner: "Organization/acct-{n}", _count: {n}) {{ billing {{ balance {AMOUNT} payments {{ date }} }} }} }}'
    async with client_for(store, settings=Settings(compiled=compiled)) as client:
        before = store.commands.count
        accounts = ok(await gql(client, query))["AccountList"]
        assert store.commands.count - before == 2  # the search; the ledgers
    assert len(accounts) == n
    assert all(
        a["billing"] == {"balance": amounts(("USD", "6.00")), "payments": [{"date": "2026-03-01"}]} for a in accounts
    )


async def test_the_two_paths_answer_views_byte_for_byte(ledger: Store) -> None:
    query = f'{{ ClaimList(_sort: "_id") {{ id {CLAIM_VIEW} }} InvoiceList {{ {INVOICE_VIEW} }} AccountList {{ {ACCOUNT_VIEW} }} PaymentReconciliationList(_sort: "_id") {{ id {PAYMENT_VIEW} }} }}'
    bodies = []
    for compiled in (True, False):
        async with client_for(ledger, settings=Settings(compiled=compiled)) as client:
            response = await client.post("/graphql", json={"query": query})
            bodies.append(response.content)
    assert bodies[0] == bodies[1] and b'"errors"' not in bodies[0]


async def test_views_need_the_scopes_of_what_they_read(ledger: Store) -> None:
    from tests.tokens import SECRET, post, token

    query = '{ Claim(id: "c-usd") { id billing { paid { value } } } }'
    tok = token(scope="user/Claim.r user/PaymentReconciliation.r", tenant=ledger.tenant)  # no ClaimResponse.r
    answers = []
    for compiled in (True, False):
        async with client_for(ledger, settings=Settings(jwt_secret=SECRET, compiled=compiled)) as client:
            answers.append((await post(client, query, tok)).json())
    assert answers[0] == answers[1]
    assert answers[0]["data"] == {"Claim": {"id": "c-usd", "billing": None}}
    assert [e["extensions"]["code"] for e in answers[0]["errors"]] == ["FORBIDDEN"]


async def test_view_lists_count_in_the_query_cost(store: Store) -> None:
    query = "{ ClaimList(_count: 100) { billing { payments { date } } } }"
    cost = 100 + 100 * (1 + PAYMENTS_SHOWN)  # each Claim's view, each view's payments
    async with client_for(store, settings=Settings(max_cost=cost - 1)) as tight:
        assert error_codes(await gql(tight, query)) == ["QUERY_TOO_COMPLEX"]
    async with client_for(store, settings=Settings(max_cost=cost)) as enough:
        assert ok(await gql(enough, query)) == {"ClaimList": []}
    worklist = "{ PatientList(_count: 10) { billing { items { age } } } }"
    cost = 10 + 10 * (1 + ITEMS_SHOWN)
    async with client_for(store, settings=Settings(max_cost=cost - 1)) as tight:
        assert error_codes(await gql(tight, worklist)) == ["QUERY_TOO_COMPLEX"]
    async with client_for(store, settings=Settings(max_cost=cost)) as enough:
        assert ok(await gql(enough, worklist)) == {"PatientList": []}


async def _stored(store: Store, resources: list[dict[str, Any]]) -> None:
    """Validated, then stored in one transaction without the rules' reads (many rows quickly)."""
    meta = {"versionId": "1", "lastUpdated": now_instant()}
    async with store.transaction() as session:
        for r in resources:
            await store.insert(r["resourceType"], {**validation.validate(r["resourceType"], r), "meta": meta}, session)


CUT_QUERY = """query($all: Boolean!) {
  Claim(id: "many") { billing { paid { value } shown: payments { date } ...more } }
  Patient(id: "owes") { billing(asOf: "2026-03-31") { outstanding { value } items { age } } }
  Organization(id: "quiet") { billing(asOf: "2026-03-31") { outstanding { value } } }
}
fragment more on ClaimBilling { again: payments @skip(if: $all) { date } }"""


@pytest.mark.parametrize("compiled", [True, False])
async def test_view_lists_cut_to_their_first_rows_say_so(store: Store, compiled: bool) -> None:
    """A view lists its first PAYMENTS_SHOWN payments and ITEMS_SHOWN open items (the sums count them all); a cut
    list is noted in `extensions.truncated` under each key the operation selects it by, on both paths."""
    n = PAYMENTS_SHOWN + 3
    payments = [payment(f"p{i}", "2026-02-01", usd("1.00"), ("Claim/many", usd("1.00"))) for i in range(n)]
    owed = [{**claim(f"o{i}", usd("5.00")), "patient": {"reference": "Patient/owes"}} for i in range(ITEMS_SHOWN + 1)]
    parties = [
        {"resourceType": "Patient", "id": "owes"},
        {"resourceType": "Organization", "id": "quiet", "name": "Quiet"},
    ]
    await _stored(store, [claim("many", usd("500.00")), *payments, *owed, *parties])
    async with client_for(store, settings=Settings(compiled=compiled)) as client:
        engine = client.fingate_app.state.compiled_engine  # type: ignore[attr-defined]
        answer = await gql(client, CUT_QUERY, {"all": False})
        assert (engine is not None and engine.stats["compiled"] == 1 and not engine.stats["fallback"]) is compiled
        view = answer["data"]["Claim"]["billing"]
        assert view["paid"] == [{"value": f"{n}.00"}]  # the sums count every payment
        assert len(view["shown"]) == len(view["again"]) == PAYMENTS_SHOWN
        assert answer["extensions"]["truncated"] == [
            {"path": ["Claim", "billing", "again"], "returned": PAYMENTS_SHOWN, "total": n},
            {"path": ["Claim", "billing", "shown"], "returned": PAYMENTS_SHOWN, "total": n},
            {"path": ["Patient", "billing", "items"], "returned": ITEMS_SHOWN, "total": ITEMS_SHOWN + 1},
        ]
        skipped = await gql(client, CUT_QUERY, {"all": True})  # `again` skipped: not noted
        assert [t["path"][-1] for t in skipped["extensions"]["truncated"]] == ["shown", "items"]
        whole = await gql(client, '{ Claim(id: "many") { billing { paid { value } } } }')
        assert "extensions" not in whole  # the list is not selected: nothing is cut in the answer


# ---- property: the views equal a plain-Python recomputation over random data -------------------------------

ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
CURRENCIES = st.sampled_from(["USD", "EUR", None])
VALUES = st.one_of(
    st.decimals(min_value=-10_000, max_value=10_000, places=2, allow_nan=False, allow_infinity=False),
    st.integers(-500, 500),
)


@st.composite
def _money(draw: Any) -> dict[str, Any] | None:
    if draw(st.integers(0, 5)) == 0:
        return None
    currency = draw(CURRENCIES)
    return {"value": draw(VALUES), **({"currency": currency} if currency else {})}


def _without_none(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if v is not None}


PATIENTS, PAYERS = ["Patient/q0", "Patient/q1"], ["Organization/o0"]
AS_OF = date(2026, 3, 31)


@st.composite
def _world(draw: Any) -> list[dict[str, Any]]:
    claims = [f"Claim/c{i}" for i in range(draw(st.integers(1, 4)))]
    invoices = [f"Invoice/i{i}" for i in range(draw(st.integers(0, 3)))]
    accounts = [f"Account/a{i}" for i in range(draw(st.integers(0, 2)))]
    targets = st.sampled_from(claims + invoices + accounts).flatmap(
        lambda t: st.sampled_from([t, f"{t}/_history/1", "Claim/elsewhere", f"https://x.example/{t}"])
    )
    statuses = st.sampled_from(["active", "active", "draft", "cancelled"])
    # Around each bucket's edge (30, 60, 90 days before AS_OF), a time zone, and a future date.
    edges = ["2026-03-01", "2026-02-28T23:30:00-05:00", "2026-01-30", "2026-01-29", "2025-12-31", "2025-12-30"]
    days = st.sampled_from([*edges, "2025-10-01", "2026-03-31", "2026-05-01"])
    out: list[dict[str, Any]] = [{"resourceType": "Patient", "id": p.split("/")[1]} for p in PATIENTS]
    out += [{"resourceType": "Organization", "id": o.split("/")[1]} for o in PAYERS]
    for c in claims:
        party = {"patient": {"reference": draw(st.sampled_from(PATIENTS))}, "insurer": {"reference": draw(st.sampled_from(PAYERS))}}  # fmt: skip
        out.append(_without_none({"resourceType": "Claim", "id": c.split("/")[1], "status": draw(statuses), "created": draw(days), "total": draw(_money()), **party}))  # fmt: skip
    out += [{"resourceType": "Account", "id": a.split("/")[1], "status": "active"} for a in accounts]
    billed = st.sampled_from(["issued", "balanced", "draft", "cancelled"])
    on = st.sampled_from([*accounts, *(f"{a}/_history/1" for a in accounts), "Account/elsewhere"])
    for i in invoices:
        bill = {"resourceType": "Invoice", "id": i.split("/")[1], "status": draw(billed)}
        bill |= {"totalGross": draw(_money()), "totalNet": draw(_money()), "date": draw(st.one_of(st.none(), days))}
        bill["recipient"] = {"reference": draw(st.sampled_from(PATIENTS + PAYERS))}
        if accounts:
            bill["account"] = {"reference": draw(on)}
        out.append(_without_none(bill))
    for n in range(draw(st.integers(0, 5))):
        allocations = [
            _without_none({"target": {"reference": draw(targets)}, "amount": draw(_money())})
            for _ in range(draw(st.integers(0, 4)))
        ]
        date = draw(st.sampled_from(["2026-01-01", "2026-01-02", None]))
        out.append(_without_none({"resourceType": "PaymentReconciliation", "id": f"p{n}", "status": draw(statuses), "date": date, "amount": draw(_money()), "allocation": allocations}))  # fmt: skip
    for n in range(draw(st.integers(0, 3))):
        totals = [
            {
                "category": {
                    "coding": [
                        _without_none(
                            {
                                "system": draw(st.sampled_from([ADJUDICATION, None, "http://other"])),
                                "code": draw(st.sampled_from(["benefit", "submitted"])),
                            }
                        )
                    ]
                },  # fmt: skip
                "amount": draw(_money()) or {"value": D(1)},
            }
            for _ in range(draw(st.integers(0, 3)))
        ]
        out.append({"resourceType": "ClaimResponse", "id": f"r{n}", "status": draw(statuses), "request": {"reference": draw(targets)}, "total": totals})  # fmt: skip
    return out


def _plain(money: Any) -> dict[Any, Decimal]:
    if not isinstance(money, dict) or "value" not in money:
        return {}
    return {money.get("currency"): D(money["value"])}


def _plus(into: dict[Any, Decimal], more: dict[Any, Decimal], sign: int = 1) -> dict[Any, Decimal]:
    for currency, value in more.items():
        value = value if sign > 0 else -value  # unary minus: zero stays 0.00 (`-1 * x` would make it -0.00)
        into[currency] = into[currency] + value if currency in into else value
    return into


def _expected(world: list[dict[str, Any]], rtype: str, resource: dict[str, Any]) -> dict[str, Any]:
    """The view recomputed from the documents themselves, in plain Python."""
    me = f"{rtype}/{resource['id']}"
    if rtype == "PaymentReconciliation":
        spread: dict[Any, Decimal] = {}
        for a in resource.get("allocation", []):
            _plus(spread, _plain(a.get("amount")))
        amount = _plain(resource.get("amount"))
        rest = _plus(dict(amount), spread, -1) if amount else None  # no amount: nothing to subtract from
        return {"amount": amount, "allocated": spread, "unallocated": rest}
    mine, bills = {me}, []
    if rtype == "Account":  # its billed Invoices are paid on it too
        for r in world:
            on = r.get("account", {}).get("reference", "").split("/_history/")[0]
            if r["resourceType"] == "Invoice" and r["status"] in ("issued", "balanced") and on == me:
                bills.append(r)
                mine.add(f"Invoice/{r['id']}")
    payments: dict[str, tuple[Any, dict[Any, Decimal]]] = {}
    for r in world:
        if r["resourceType"] != "PaymentReconciliation" or r["status"] != "active":
            continue
        for a in r.get("allocation", []):
            if a["target"]["reference"].split("/_history/")[0] in mine:
                _plus(payments.setdefault(r["id"], (r.get("date"), {}))[1], _plain(a.get("amount")))
    payments = {k: v for k, v in payments.items() if v[1]}
    paid: dict[Any, Decimal] = {}
    for _, got in payments.values():
        _plus(paid, got)
    listed = [(id, date, got) for id, (date, got) in sorted(payments.items(), key=lambda i: (i[1][0] or "", i[0]))]
    if rtype == "Account":
        invoiced: dict[Any, Decimal] = {}
        for bill in bills:
            _plus(invoiced, _plain(bill.get("totalGross")) or _plain(bill.get("totalNet")))
        return {"invoiced": invoiced, "paid": paid, "balance": _plus(dict(invoiced), paid, -1), "payments": listed}  # fmt: skip
    if rtype == "Claim":
        billed = _plain(resource.get("total"))
        benefit: dict[Any, Decimal] = {}
        for r in world:
            if r["resourceType"] == "ClaimResponse" and r["status"] == "active" and r["request"]["reference"].split("/_history/")[0] == me:  # fmt: skip
                for t in r["total"]:
                    coding = t["category"]["coding"][0]
                    if coding["code"] == "benefit" and coding.get("system") in (None, ADJUDICATION):
                        _plus(benefit, _plain(t["amount"]))
        return {"billed": billed, "adjudicated": benefit, "paid": paid, "outstanding": _plus(dict(billed), paid, -1), "payments": listed}  # fmt: skip
    gross, net = _plain(resource.get("totalGross")), _plain(resource.get("totalNet"))
    return {"gross": gross, "net": net, "paid": paid, "balance": _plus(dict(gross or net), paid, -1), "payments": listed}  # fmt: skip


def _paid_on(world: list[dict[str, Any]], ref: str) -> dict[Any, Decimal]:
    paid: dict[Any, Decimal] = {}
    for r in world:
        if r["resourceType"] == "PaymentReconciliation" and r["status"] == "active":
            for a in r.get("allocation", []):
                if a["target"]["reference"].split("/_history/")[0] == ref:
                    _plus(paid, _plain(a.get("amount")))
    return paid


def _expected_party(world: list[dict[str, Any]], me: str) -> dict[str, Any]:
    """A Patient's or Organization's aging, recomputed in plain Python (as of AS_OF)."""
    key = "patient" if me.startswith("Patient/") else "insurer"
    items = []
    for r in world:
        if r["resourceType"] == "Claim" and r["status"] == "active" and r[key]["reference"] == me:
            items.append((f"Claim/{r['id']}", r["created"], _plain(r.get("total"))))
        if r["resourceType"] == "Invoice" and r["status"] == "issued" and r["recipient"]["reference"] == me:
            items.append((f"Invoice/{r['id']}", r.get("date"), _plain(r.get("totalGross")) or _plain(r.get("totalNet"))))  # fmt: skip
    out: dict[str, Any] = {name: {} for name in ("outstanding", "days0to30", "days31to60", "days61to90", "over90", "undated")}  # fmt: skip
    owing = []
    for ref, when, billed in items:
        left = _plus(dict(billed), _paid_on(world, ref), -1)
        if when is None:
            bucket = "undated"
        else:
            age = (AS_OF - date.fromisoformat(when[:10])).days
            bucket = (
                "days0to30" if age <= 30 else "days31to60" if age <= 60 else "days61to90" if age <= 90 else "over90"
            )
        _plus(out["outstanding"], left)
        _plus(out[bucket], left)
        if any(v != 0 for v in left.values()):
            owing.append(((when is None, when[:10] if when else "", ref), (ref, when, bucket, left)))
    out["items"] = [entry for _, entry in sorted(owing)]
    out["asOf"] = "2026-03-31"
    return out


def _party_as_plain(view: dict[str, Any]) -> dict[str, Any]:
    def of(items: list[dict[str, Any]]) -> dict[Any, Decimal]:
        return {a["currency"]: a["value"] for a in items}

    out: dict[str, Any] = {k: of(v) for k, v in view.items() if k not in ("items", "asOf")}
    out["items"] = [(i["item"]["reference"], i["billedOn"], i["age"], of(i["outstanding"])) for i in view["items"]]
    out["asOf"] = view["asOf"]
    return out


def _as_plain(view: dict[str, Any]) -> dict[str, Any]:
    """A view as `_expected` writes it: amounts as {currency: Decimal}, payments as (id, date, amounts)."""

    def of(items: list[dict[str, Any]]) -> dict[Any, Decimal]:
        return {a["currency"]: a["value"] for a in items}

    return {
        key: [(p["payment"]["reference"].split("/")[1], p["date"], of(p["amount"])) for p in value]
        if key == "payments"
        else None
        if value is None
        else of(value)
        for key, value in view.items()
    }


def _strings(value: Any) -> Any:
    """Digits and exponents must match too, not only values: compare the decimals' text."""
    if isinstance(value, dict):
        return {k: _strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strings(v) for v in value]
    return str(value) if isinstance(value, Decimal) else value


@settings(
    max_examples=int(os.environ.get("FINGATE_PROPERTY_EXAMPLES", "100")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=_world())
async def test_views_equal_a_plain_recomputation(store: Store, world: list[dict[str, Any]]) -> None:
    tenant = store.for_tenant(f"prop-{uuid.uuid4().hex[:10]}")
    for resource in world:
        await tenant.db[resource["resourceType"]].insert_one(tenant._stored(resource["resourceType"], resource))
    context = Context(store, "prop", anonymous(tenant.tenant))
    viewed = [r for r in world if r["resourceType"] in ("Account", "Claim", "Invoice", "PaymentReconciliation")]
    before = store.commands.count
    views = await context.billing_many(viewed)
    assert store.commands.count - before <= 2  # the settlements; the Account ledgers
    for resource, view in zip(viewed, views, strict=True):
        expected = _expected(world, resource["resourceType"], resource)
        assert _strings(_as_plain(view)) == _strings(expected), (resource, view)
    parties = [r for r in world if r["resourceType"] in ("Patient", "Organization")]
    before = store.commands.count
    aged = await asyncio.gather(*(context.party_billing(r, AS_OF) for r in parties))
    assert store.commands.count - before <= 2  # one per party type
    for resource, view in zip(parties, aged, strict=True):
        expected = _expected_party(world, f"{resource['resourceType']}/{resource['id']}")
        assert _strings(_party_as_plain(view)) == _strings(expected), (resource, view)


async def test_a_contained_resource_has_no_payments_of_its_own(ledger: Store) -> None:
    """A contained Claim `#c-usd` is not Claim/c-usd: nothing outside its container can pay it."""
    source = {
        "url": "http://example.org/fhir/StructureDefinition/source-claim",
        "valueReference": {"reference": "#c-usd"},
    }
    holder = {  # the extension refers to the contained Claim, as R5's dom-3 requires
        **invoice("holder", "5.00", "5.00", status="draft"),
        "contained": [claim("c-usd", usd("5.00"))],
        "extension": [source],
    }
    await Writer(ledger).create("Invoice", holder, keep_id=True)
    query = '{ Invoice(id: "holder") { contained { ... on Claim { id billing { paid { value } outstanding { value } } } } } }'
    for compiled in (True, False):
        async with client_for(ledger, settings=Settings(compiled=compiled)) as client:
            data = ok(await gql(client, query))
        assert data["Invoice"]["contained"] == [
            {"id": "c-usd", "billing": {"paid": [], "outstanding": [{"value": "5.00"}]}}
        ]


# ---- outstanding and aging per Patient and payer Organization ----------------------------------------------

PARTY_VIEW = f'billing(asOf: "2026-03-31") {{ asOf outstanding {AMOUNT} days0to30 {AMOUNT} days31to60 {AMOUNT} days61to90 {AMOUNT} over90 {AMOUNT} undated {AMOUNT} items {{ item {{ reference }} billedOn age outstanding {AMOUNT} }} }}'


async def _open_items(store: Store) -> None:
    writer = Writer(store)
    patient, insurer = {"patient": {"reference": "Patient/pat"}}, {"insurer": {"reference": "Organization/ins"}}
    await writer.create("Patient", {"resourceType": "Patient", "id": "pat"}, keep_id=True)
    await writer.create("Organization", {"resourceType": "Organization", "id": "ins", "name": "Insurer"}, keep_id=True)
    claims = [
        ("a1", "2026-03-01T23:00:00+05:00", usd("100.00"), "active", insurer),
        ("a2", "2026-01-15", usd("50.00"), "active", insurer),
        ("a3", "2025-12-01", money("20.00", "EUR"), "active", {}),
        ("a4", "2026-03-10", usd("999.00"), "draft", insurer),  # not billed yet
    ]
    for id, created, total, status, extra in claims:
        await writer.create("Claim", {**claim(id, total, status=status), **patient, **extra, "created": created}, keep_id=True)  # fmt: skip
    to_pat, to_ins = {"recipient": {"reference": "Patient/pat"}}, {"recipient": {"reference": "Organization/ins"}}
    invoices = [
        ({**invoice("v1", "40.00", "35.00"), **to_pat, "date": "2026-02-20"}),
        ({**invoice("v2", "60.00", "60.00", status="draft"), **to_pat}),  # not issued
        ({k: v for k, v in {**invoice("v3", "5.00", "5.00"), **to_pat}.items() if k != "date"}),  # undated
        ({**invoice("v4", "12.00", "12.00"), **to_ins, "date": "2026-03-31"}),
    ]
    for bill in invoices:
        await writer.create("Invoice", bill, keep_id=True)
    paying = [("Claim/a1", usd("30.00")), ("Invoice/v1", usd("10.00"))]
    await writer.create("PaymentReconciliation", payment("pp", "2026-03-15", usd("40.00"), *paying), keep_id=True)
    # A payment is in one currency: the EUR claim is paid by a EUR payment.
    eur = payment("pe", "2026-03-15", money("20.00", "EUR"), ("Claim/a3", money("20.00", "EUR")))
    await writer.create("PaymentReconciliation", eur, keep_id=True)


@pytest.mark.parametrize("compiled", [True, False])
async def test_patient_and_payer_aging_to_the_cent(store: Store, compiled: bool) -> None:
    await _open_items(store)
    query = f'{{ Patient(id: "pat") {{ {PARTY_VIEW} }} Organization(id: "ins") {{ {PARTY_VIEW} }} }}'
    async with client_for(store, settings=Settings(compiled=compiled)) as client:
        before = store.commands.count
        data = ok(await gql(client, query))
        assert store.commands.count - before == 4  # the Patient, the Organization; the Patient's items; the payer's
    # a1 70.00 (30 days: its created is 2026-03-01 as written); v1 30.00 (39 days); a2 50.00 (75 days);
    # a3 paid in full (120 days); v3 has no date.
    assert data["Patient"]["billing"] == {
        "asOf": "2026-03-31",
        "outstanding": amounts(("EUR", "0.00"), ("USD", "155.00")),
        "days0to30": amounts(("USD", "70.00")),
        "days31to60": amounts(("USD", "30.00")),
        "days61to90": amounts(("USD", "50.00")),
        "over90": amounts(("EUR", "0.00")),
        "undated": amounts(("USD", "5.00")),
        "items": [  # the worklist: what still owes, oldest first, a3 (settled) left out, v3 (undated) last
            {"item": {"reference": "Claim/a2"}, "billedOn": "2026-01-15", "age": "days61to90", "outstanding": amounts(("USD", "50.00"))},
            {"item": {"reference": "Invoice/v1"}, "billedOn": "2026-02-20", "age": "days31to60", "outstanding": amounts(("USD", "30.00"))},
            {"item": {"reference": "Claim/a1"}, "billedOn": "2026-03-01T23:00:00+05:00", "age": "days0to30", "outstanding": amounts(("USD", "70.00"))},
            {"item": {"reference": "Invoice/v3"}, "billedOn": None, "age": "undated", "outstanding": amounts(("USD", "5.00"))},
        ],
    }  # fmt: skip
    # The payer: the claims it insures (a1, a2) and the invoice it receives (v4, billed today).
    assert data["Organization"]["billing"] == {
        "asOf": "2026-03-31",
        "outstanding": amounts(("USD", "132.00")),
        "days0to30": amounts(("USD", "82.00")),
        "days31to60": [],
        "days61to90": amounts(("USD", "50.00")),
        "over90": [],
        "undated": [],
        "items": [
            {"item": {"reference": "Claim/a2"}, "billedOn": "2026-01-15", "age": "days61to90", "outstanding": amounts(("USD", "50.00"))},
            {"item": {"reference": "Claim/a1"}, "billedOn": "2026-03-01T23:00:00+05:00", "age": "days0to30", "outstanding": amounts(("USD", "70.00"))},
            {"item": {"reference": "Invoice/v4"}, "billedOn": "2026-03-31", "age": "days0to30", "outstanding": amounts(("USD", "12.00"))},
        ],
    }  # fmt: skip
    # The worklist's items resolve, batched like any reference.
    worklist = '{ Patient(id: "pat") { billing(asOf: "2026-03-31") { items { item { resource { ... on Claim { id status } ... on Invoice { id status } } } } } } }'
    async with client_for(store, settings=Settings(compiled=compiled)) as client:
        before = store.commands.count
        resolved = ok(await gql(client, worklist))["Patient"]["billing"]["items"]
        assert store.commands.count - before == 4  # the Patient; its items; their Claims, their Invoices
    assert [i["item"]["resource"] for i in resolved] == [
        {"id": "a2", "status": "active"}, {"id": "v1", "status": "issued"},
        {"id": "a1", "status": "active"}, {"id": "v3", "status": "issued"},
    ]  # fmt: skip


@pytest.mark.parametrize("n", [10, 50, 200])
@pytest.mark.parametrize("compiled", [True, False])
async def test_party_views_cost_one_command_per_level(store: Store, n: int, compiled: bool) -> None:
    docs: dict[str, list[dict[str, Any]]] = {"Patient": [], "Claim": []}
    for i in range(n):
        docs["Patient"].append({"resourceType": "Patient", "id": f"pt{i}", "gender": "other"})
        docs["Claim"].append({**claim(f"pc{i}", usd("1.00")), "patient": {"reference": f"Patient/pt{i}"}})
    for rtype, batch in docs.items():
        await store.db[rtype].insert_many([store._stored(rtype, r) for r in batch])
    query = f"{{ PatientList(_count: {n}) {{ {PARTY_VIEW} }} }}"
    async with client_for(store, settings=Settings(compiled=compiled)) as client:
        before = store.commands.count
        patients = ok(await gql(client, query))["PatientList"]
        assert store.commands.count - before == 2  # the search; the open items
    assert len(patients) == n and all(p["billing"]["days61to90"] == amounts(("USD", "1.00")) for p in patients)


async def test_as_of_must_be_a_date(store: Store) -> None:
    await Writer(store).create("Patient", {"resourceType": "Patient", "id": "pat"}, keep_id=True)
    async with client_for(store) as client:
        result = await gql(client, '{ Patient(id: "pat") { billing(asOf: "last week") { asOf } } }')
    assert error_codes(result) == ["BAD_USER_INPUT"]


def test_the_readme_rule_table_lists_the_balance_rules() -> None:
    from app.rules import describe_rules
    from app.rules.tables import BALANCE_RULES

    text = describe_rules()
    assert [r.rule for r in BALANCE_RULES] == [
        "Claim.paid-within-total",
        "Invoice.paid-within-total",
        "Invoice.balanced-when-settled",
    ]
    assert all(f"| `{r.rule}` | {r.resource_type} | `{r.element}` |" in text for r in BALANCE_RULES)


async def test_documents_that_are_not_valid_fhir_count_nothing_and_break_nothing(store: Store) -> None:
    """Stored past validation: a numeric reference, a text amount, an allocation that is not an object."""
    await Writer(store).create("Claim", claim("c", usd("10.00")), keep_id=True)
    broken = {
        "resourceType": "PaymentReconciliation", "id": "odd", "status": "active", "date": "2026-01-01",
        "allocation": [
            {"target": {"reference": 5}, "amount": usd("1.00")},
            {"target": {"reference": "Claim/c"}, "amount": {"value": "2.00", "currency": "USD"}},
            "not an allocation",
            {"target": {"reference": "Claim/c"}, "amount": usd("3.00")},
        ],
        "_search": {"allocation-target": ["Claim/c"]},
    }  # fmt: skip
    await store.db["PaymentReconciliation"].insert_one(
        {**broken, "_id": f"{store.tenant}/odd", "_tenant": store.tenant}
    )
    query = f'{{ Claim(id: "c") {{ billing {{ paid {AMOUNT} outstanding {AMOUNT} }} }} }}'
    async with client_for(store) as client:
        data = ok(await gql(client, query))
    assert data["Claim"]["billing"] == {"paid": amounts(("USD", "3.00")), "outstanding": amounts(("USD", "7.00"))}
