"""POST /webhooks/stripe with payloads signed exactly as Stripe signs them (HMAC-SHA256 over `t.payload`, computed
here with hmac, not with the library under test), shaped as Stripe's Event, PaymentIntent, Checkout Session and Charge."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.fhir.values import Resource
from app.payments import Payments
from app.payments.posting import ABANDONED_AFTER
from app.settings import Settings
from app.store import Store
from app.writes import Writer
from tests.harness import error_codes
from tests.tokens import authed_client, post, token

TENANT, OTHER = "acme", "beta"
NEW_SECRET = "whsec_" + "n" * 32
OLD_SECRET = "whsec_" + "o" * 32
OTHER_SECRET = "whsec_" + "b" * 32
SECRETS = {TENANT: [NEW_SECRET, OLD_SECRET], OTHER: [OTHER_SECRET]}
README = Path(__file__).resolve().parents[1] / "README.md"
ADMIN = "system/*.rs"  # the admin scope that reads PaymentEvents (as the audit log)


# -- signed deliveries ----------------------------------------------------------------------------------------


def signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe's scheme: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<payload>" keyed by the secret>`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


async def deliver(
    client: httpx.AsyncClient, event: dict[str, Any], secret: str = NEW_SECRET, timestamp: int | None = None
) -> httpx.Response:
    payload = json.dumps(event, indent=2).encode()  # Stripe sends pretty-printed JSON; the bytes are what is signed
    headers = {
        "content-type": "application/json; charset=utf-8",
        "stripe-signature": signature(payload, secret, timestamp),
    }
    return await client.post("/webhooks/stripe", content=payload, headers=headers)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


_CLOCK = itertools.count(1_795_000_000)  # events' `created`, one second apart (2026-11-18T...Z onwards)


def _event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or _id("evt"),
        "object": "event",
        "api_version": "2022-08-01",  # PaymentIntents still list their `charges` (until 2022-11-15)
        "created": next(_CLOCK),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": _id("req"), "idempotency_key": str(uuid.uuid4())},
        "type": event_type,
    }


def _charge(
    pi: str, amount: int, currency: str, brand: str, last4: str, funding: str = "credit", refunded: int = 0
) -> dict[str, Any]:
    return {
        "id": _id("ch"),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": refunded,
        "captured": True,
        "currency": currency,
        "paid": True,
        "payment_intent": pi,
        "payment_method": _id("pm"),
        "payment_method_details": {
            "card": {
                "brand": brand,
                "country": "US",
                "exp_month": 12,
                "exp_year": 2030,
                "funding": funding,
                "last4": last4,
                "network": brand,
            },
            "type": "card",
        },
        "refunded": refunded == amount,
        "status": "succeeded",
        "metadata": {},
    }


def intent_succeeded(
    invoice: str | None,
    amount: int,
    currency: str = "usd",
    *,
    pi: str | None = None,
    brand: str = "visa",
    last4: str = "4242",
    funding: str = "credit",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    pi = pi or _id("pi")
    charge = _charge(pi, amount, currency, brand, last4, funding)
    intent = {
        "id": pi,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount,
        "currency": currency,
        "latest_charge": charge["id"],
        "charges": {"object": "list", "data": [charge], "has_more": False, "url": f"/v1/charges?payment_intent={pi}"},
        "metadata": {**({"fingate_invoice": invoice} if invoice else {}), **(metadata or {})},
        "payment_method_types": ["card"],
        "status": "succeeded",
    }
    return _event("payment_intent.succeeded", intent)


def checkout_completed(invoice: str, amount: int, currency: str = "usd", *, pi: str | None = None) -> dict[str, Any]:
    session = {
        "id": _id("cs_test"),
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "currency": currency,
        "customer_details": {"email": "ana.rivera@example.org", "name": "Ana Rivera"},
        "metadata": {"fingate_invoice": invoice},
        "mode": "payment",
        "payment_intent": pi or _id("pi"),
        "payment_status": "paid",
        "status": "complete",
    }
    return _event("checkout.session.completed", session)


def charge_refunded(
    pi: str, paid: int, refunded_total: int, currency: str = "usd", invoice: str | None = None
) -> dict[str, Any]:
    charge = _charge(pi, paid, currency, "visa", "4242", refunded=refunded_total)
    charge["refunds"] = {
        "object": "list",
        "data": [
            {
                "id": _id("re"),
                "object": "refund",
                "amount": refunded_total,
                "charge": charge["id"],
                "currency": currency,
                "payment_intent": pi,
                "status": "succeeded",
            }
        ],
        "has_more": False,
    }
    if invoice:
        charge["metadata"] = {"fingate_invoice": invoice}
    return _event("charge.refunded", charge)


# -- fixtures and reads -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def store(mongo_uri: str) -> AsyncIterator[Store]:
    from tests.conftest import fresh_store

    async with fresh_store(mongo_uri) as s:
        yield s


@pytest.fixture(scope="module")
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with authed_client(store, stripe_webhook_secrets=SECRETS) as c:
        yield c


async def new_invoice(
    store: Store, gross: str, currency: str = "USD", tenant: str = TENANT, status: str = "issued"
) -> str:
    id = _id("inv").replace("_", "-")
    invoice = {
        "resourceType": "Invoice",
        "id": id,
        "status": status,
        "date": "2026-11-20",
        "totalNet": {"value": Decimal(gross), "currency": currency},
        "totalGross": {"value": Decimal(gross), "currency": currency},
    }
    await Writer(store.for_tenant(tenant)).create("Invoice", invoice, keep_id=True)
    return id


async def invoice_status(store: Store, id: str, tenant: str = TENANT) -> str:
    found = await store.for_tenant(tenant).get("Invoice", id)
    assert found is not None
    return str(found["status"])


async def payments_of(store: Store, invoice: str, tenant: str = TENANT) -> list[Resource]:
    found = await store.for_tenant(tenant).search(
        "PaymentReconciliation", {"allocation-target": f"Invoice/{invoice}"}, count=100, sort="created"
    )
    return found


async def recorded(store: Store, event_id: str, tenant: str = TENANT) -> dict[str, Any] | None:
    return await store.for_tenant(tenant).received_events().get(event_id)


def accepted(response: httpx.Response, outcome: str = "accepted") -> None:
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == outcome, response.text


# -- every event type -------------------------------------------------------------------------------------------


async def test_a_payment_intent_pays_the_invoice_in_full(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "184.60")
    event = intent_succeeded(invoice, 18460, brand="mastercard", last4="4444")
    accepted(await deliver(client, event))
    [pr] = await payments_of(store, invoice)
    pi = event["data"]["object"]["id"]
    assert pr["status"] == "active" and pr["processor"] == "Stripe" and pr["referenceNumber"] == pi
    assert pr["cardBrand"] == "mastercard" and pr["accountNumber"] == "4444" and pr["expirationDate"] == "2030-12"
    assert pr["kind"]["coding"][0]["code"] == "online"
    assert pr["method"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0570",
        "code": "CCCA",
        "display": "Credit Card",
    }
    assert pr["amount"] == {"value": Decimal("184.60"), "currency": "USD"}
    assert str(pr["amount"]["value"]) == "184.60"
    assert pr["allocation"] == [{"target": {"reference": f"Invoice/{invoice}"}, "amount": pr["amount"]}]
    assert await invoice_status(store, invoice) == "balanced"
    record = await recorded(store, event["id"])
    assert record is not None and record["outcome"] == "accepted"
    assert record["produced"] == [f"PaymentReconciliation/{pr['id']}", f"Invoice/{invoice}"]


async def test_a_checkout_session_pays_the_invoice(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "75.00")
    event = checkout_completed(invoice, 7500)
    accepted(await deliver(client, event))
    [pr] = await payments_of(store, invoice)
    assert pr["referenceNumber"] == event["data"]["object"]["payment_intent"]
    assert pr["amount"] == {"value": Decimal("75.00"), "currency": "USD"}
    assert await invoice_status(store, invoice) == "balanced"


async def test_checkout_and_its_payment_intent_post_once(client: httpx.AsyncClient, store: Store) -> None:
    """Stripe reports a Checkout payment twice, as the session and as its intent: one PaymentReconciliation."""
    invoice = await new_invoice(store, "20.00")
    pi = _id("pi")
    accepted(await deliver(client, checkout_completed(invoice, 2000, pi=pi)))
    second = intent_succeeded(invoice, 2000, pi=pi)
    accepted(await deliver(client, second), "duplicate")
    assert len(await payments_of(store, invoice)) == 1
    record = await recorded(store, second["id"])
    assert record is not None and "was posted by event" in record["reason"]


async def test_a_refund_reopens_a_balanced_invoice(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "50.00")
    payment = intent_succeeded(invoice, 5000)
    pi = payment["data"]["object"]["id"]
    accepted(await deliver(client, payment))
    assert await invoice_status(store, invoice) == "balanced"
    refund = charge_refunded(pi, 5000, 1250)
    accepted(await deliver(client, refund))
    paid, back = await payments_of(store, invoice)
    assert back["amount"] == {"value": Decimal("-12.50"), "currency": "USD"}
    assert back["allocation"][0]["amount"] == {"value": Decimal("-12.50"), "currency": "USD"}
    assert back["referenceNumber"] == pi and back["type"]["coding"][0]["code"] == "adjustment"
    assert await invoice_status(store, invoice) == "issued"
    # A second refund on the same charge: Stripe's amount_refunded is cumulative, so only the difference posts.
    accepted(await deliver(client, charge_refunded(pi, 5000, 2000)))
    assert [p["amount"]["value"] for p in await payments_of(store, invoice)] == [
        Decimal("50.00"),
        Decimal("-12.50"),
        Decimal("-7.50"),
    ]
    record = await recorded(store, refund["id"])
    assert record is not None and record["produced"] == [f"PaymentReconciliation/{back['id']}", f"Invoice/{invoice}"]


# -- idempotency -------------------------------------------------------------------------------------------------


async def test_a_replayed_event_posts_once(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "30.00")
    event = intent_succeeded(invoice, 1000)
    accepted(await deliver(client, event))
    accepted(await deliver(client, event), "duplicate")
    accepted(await deliver(client, event, secret=OLD_SECRET), "duplicate")
    assert len(await payments_of(store, invoice)) == 1
    first = await recorded(store, event["id"])
    assert first is not None and first["outcome"] == "accepted" and first["deliveries"] == 3
    dups = await store.for_tenant(TENANT).received_events().page(10, 0, "duplicate", None, event["id"])
    assert len(dups) == 2 and all(d["duplicateOf"] == event["id"] for d in dups)


async def test_two_identical_deliveries_at_once_post_once(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "40.00")
    event = intent_succeeded(invoice, 4000)
    first, second = await asyncio.gather(deliver(client, event), deliver(client, event))
    assert sorted([first.json()["outcome"], second.json()["outcome"]]) == ["accepted", "duplicate"]
    assert len(await payments_of(store, invoice)) == 1
    assert await invoice_status(store, invoice) == "balanced"


async def test_a_refund_before_its_payment_waits_then_posts_with_it(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "60.00")
    payment = intent_succeeded(invoice, 6000)
    pi = payment["data"]["object"]["id"]
    refund = charge_refunded(pi, 6000, 1000)
    accepted(await deliver(client, refund), "waiting")
    assert await payments_of(store, invoice) == []
    accepted(await deliver(client, payment))
    paid, back = await payments_of(store, invoice)
    assert paid["amount"]["value"] == Decimal("60.00") and back["amount"]["value"] == Decimal("-10.00")
    assert await invoice_status(store, invoice) == "issued"  # paid 60, refunded 10: 10 open
    record = await recorded(store, refund["id"])
    assert (
        record is not None
        and record["outcome"] == "accepted"
        and record["produced"] == [f"PaymentReconciliation/{back['id']}"]
    )


async def test_partial_payments_balance_the_invoice_exactly_at_the_end(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "100.01")
    for minor, status in ((3333, "issued"), (3333, "issued"), (3334, "issued"), (1, "balanced")):
        accepted(await deliver(client, intent_succeeded(invoice, minor)))
        assert await invoice_status(store, invoice) == status
    assert sum(p["amount"]["value"] for p in await payments_of(store, invoice)) == Decimal("100.01")
    # One cent more: the rules refuse it (a balanced Invoice's payments stay as they are), recorded, answered 2xx.
    over = intent_succeeded(invoice, 1)
    accepted(await deliver(client, over), "rejected")
    record = await recorded(store, over["id"])
    assert record is not None and record["rule"] == "Invoice.balanced-when-settled", record
    assert len(await payments_of(store, invoice)) == 4


async def test_an_overpayment_is_rejected_with_the_rule(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "10.00")
    accepted(await deliver(client, intent_succeeded(invoice, 600)))
    over = intent_succeeded(invoice, 401)
    accepted(await deliver(client, over), "rejected")
    record = await recorded(store, over["id"])
    assert record is not None and record["rule"] == "Invoice.paid-within-total", record
    assert "10.01 USD paid" in record["reason"] or "10.01" in record["reason"], record["reason"]
    assert [p["amount"]["value"] for p in await payments_of(store, invoice)] == [Decimal("6.00")]
    assert await invoice_status(store, invoice) == "issued"


# -- rejected, answered 2xx --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["wrong currency", "unknown invoice", "other tenant's invoice", "no invoice", "draft invoice"]
)
async def test_events_that_cannot_post_are_recorded_as_rejected(
    client: httpx.AsyncClient, store: Store, case: str
) -> None:
    invoice = await new_invoice(
        store,
        "10.00",
        tenant=OTHER if case == "other tenant's invoice" else TENANT,
        status="draft" if case == "draft invoice" else "issued",
    )
    event = {
        "wrong currency": intent_succeeded(invoice, 1000, "eur"),
        "unknown invoice": intent_succeeded("no-such-invoice", 1000),
        "other tenant's invoice": intent_succeeded(invoice, 1000),
        "no invoice": intent_succeeded(None, 1000),
        "draft invoice": intent_succeeded(invoice, 1000),  # the rules allocate only to an issued or balanced one
    }[case]
    accepted(await deliver(client, event), "rejected")
    record = await recorded(store, event["id"])
    assert record is not None and record["outcome"] == "rejected" and record["reason"]
    if case == "draft invoice":
        assert record["rule"] == "PaymentReconciliation.allocation-target-exists", record
    assert await payments_of(store, invoice, tenant=OTHER if case == "other tenant's invoice" else TENANT) == []
    assert await recorded(store, event["id"], tenant=OTHER) is None


async def test_metadata_naming_another_tenant_is_rejected(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "10.00", tenant=OTHER)
    event = intent_succeeded(invoice, 1000, metadata={"fingate_tenant": OTHER})
    accepted(await deliver(client, event), "rejected")  # signed with acme's secret
    record = await recorded(store, event["id"])
    assert record is not None and "fingate_tenant" in record["reason"]
    assert await payments_of(store, invoice, tenant=OTHER) == []
    # Signed with beta's own secret, the same payment posts in beta.
    again = intent_succeeded(invoice, 1000, metadata={"fingate_tenant": OTHER})
    accepted(await deliver(client, again, secret=OTHER_SECRET))
    assert await invoice_status(store, invoice, tenant=OTHER) == "balanced"


# -- signatures --------------------------------------------------------------------------------------------------


async def test_a_rotated_secret_old_and_new_both_verify(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "20.00")
    accepted(await deliver(client, intent_succeeded(invoice, 1000), secret=OLD_SECRET))
    accepted(await deliver(client, intent_succeeded(invoice, 1000), secret=NEW_SECRET))
    assert await invoice_status(store, invoice) == "balanced"


@pytest.mark.parametrize("case", ["wrong secret", "expired", "no header", "tampered", "unknown scheme"])
async def test_a_bad_signature_is_400_and_records_nothing(client: httpx.AsyncClient, store: Store, case: str) -> None:
    invoice = await new_invoice(store, "10.00")
    event = intent_succeeded(invoice, 1000)
    payload = json.dumps(event).encode()
    header = {
        "wrong secret": signature(payload, "whsec_" + "x" * 32),
        "expired": signature(payload, NEW_SECRET, int(time.time()) - 3600),
        "no header": None,
        "tampered": signature(payload.replace(b"1000", b"9000"), NEW_SECRET),
        "unknown scheme": signature(payload, NEW_SECRET).replace("v1=", "v0="),
    }[case]
    headers = {"content-type": "application/json", **({"stripe-signature": header} if header else {})}
    response = await client.post("/webhooks/stripe", content=payload, headers=headers)
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    assert error_codes(response.json()) == ["UNAUTHENTICATED"], response.text
    assert await recorded(store, event["id"]) is None
    assert await payments_of(store, invoice) == []


async def test_the_webhook_reads_nothing(client: httpx.AsyncClient) -> None:
    """No JWT door: a GraphQL body, a GET, or a valid signature all get at most an outcome, never data."""
    probe = json.dumps({"query": "{ InvoiceList { id } PaymentEvents { eventId } }"}).encode()
    response = await client.post("/webhooks/stripe", content=probe, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "data" not in response.json()
    signed = await client.post(
        "/webhooks/stripe", content=probe, headers={"stripe-signature": signature(probe, NEW_SECRET)}
    )
    assert signed.status_code == 400 and error_codes(signed.json()) == ["BAD_USER_INPUT"]
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        other = await client.request(
            method, "/webhooks/stripe", headers={"stripe-signature": signature(b"", NEW_SECRET)}
        )
        assert other.status_code == 405 and other.headers["content-type"] == "application/json"
        assert "data" not in other.json()


# -- money ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "minor", "total"),
    [("jpy", 5000, "5000"), ("kwd", 12345, "12.345"), ("usd", 1, "0.01"), ("isk", 50000, "500")],
)
async def test_minor_units_convert_exactly(
    client: httpx.AsyncClient, store: Store, currency: str, minor: int, total: str
) -> None:
    invoice = await new_invoice(store, total, currency.upper())
    accepted(await deliver(client, intent_succeeded(invoice, minor, currency)))
    [pr] = await payments_of(store, invoice)
    assert pr["amount"] == {"value": Decimal(total), "currency": currency.upper()}
    assert str(pr["amount"]["value"]) == total  # the exponent too: 12.345, not 12.3450
    assert await invoice_status(store, invoice) == "balanced"


# -- a failed posting --------------------------------------------------------------------------------------------


async def test_a_failure_mid_posting_leaves_nothing_half_done(
    client: httpx.AsyncClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payment's PaymentReconciliation is written, then the Invoice's update fails: the transaction takes
    both back, the event is `failed` (503, so Stripe retries), and the retry posts it whole."""
    invoice = await new_invoice(store, "80.00")
    event = intent_succeeded(invoice, 8000)
    real_update = Writer.update

    async def broken(self: Writer, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database went away mid-posting")

    monkeypatch.setattr(Writer, "update", broken)
    response = await deliver(client, event)
    assert response.status_code == 503 and error_codes(response.json()) == ["INTERNAL"], response.text
    assert await payments_of(store, invoice) == []
    assert await invoice_status(store, invoice) == "issued"
    record = await recorded(store, event["id"])
    assert record is not None and record["outcome"] == "failed"

    monkeypatch.setattr(Writer, "update", real_update)
    accepted(await deliver(client, event))  # Stripe's retry of the same event
    assert len(await payments_of(store, invoice)) == 1
    assert await invoice_status(store, invoice) == "balanced"


# -- GraphQL: PaymentEvents for an admin scope ---------------------------------------------------------------------

EVENTS_QUERY = """
query($id: String, $outcome: String, $n: Int) {
  PaymentEvents(eventId: $id, outcome: $outcome, _count: $n) {
    eventId type outcome reason deliveries duplicateOf paymentIntent receivedAt
    amount { value currency }
    invoice { reference resource { ... on Invoice { id status billing { paid { value currency } balance { value } } } } }
    produced { reference resource { ... on PaymentReconciliation { id amount { value currency } cardBrand accountNumber } } }
  }
}
"""


@pytest.mark.parametrize("compiled", [True, False])
async def test_payment_events_show_outcomes_and_traverse_what_they_produced(store: Store, compiled: bool) -> None:
    async with authed_client(store, stripe_webhook_secrets=SECRETS, compiled=compiled) as c:
        invoice = await new_invoice(store, "90.00")
        event = intent_succeeded(invoice, 4000, last4="1881")
        accepted(await deliver(c, event))
        accepted(await deliver(c, event), "duplicate")
        result = (await post(c, EVENTS_QUERY, token(scope=ADMIN), {"id": event["id"]})).json()
        assert "errors" not in result, result
        duplicate, first = result["data"]["PaymentEvents"]  # newest first
        assert first["outcome"] == "accepted" and first["deliveries"] == 2 and first["reason"] is None
        assert first["amount"] == {"value": "40.00", "currency": "USD"}
        assert first["paymentIntent"] == event["data"]["object"]["id"]
        # A partial payment: the Invoice stays issued, and its billing view shows what was paid.
        assert first["invoice"]["resource"] == {
            "id": invoice,
            "status": "issued",
            "billing": {"paid": [{"value": "40.00", "currency": "USD"}], "balance": [{"value": "50.00"}]},
        }
        [made] = first["produced"]
        assert made["resource"]["amount"] == {"value": "40.00", "currency": "USD"}
        assert made["resource"]["accountNumber"] == "1881" and made["resource"]["cardBrand"] == "visa"
        assert duplicate["outcome"] == "duplicate" and duplicate["duplicateOf"] == event["id"]
        assert duplicate["produced"] == [] and duplicate["amount"] is None


async def test_payment_events_filter_page_and_note_truncation(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "10.00")
    event = intent_succeeded(invoice, 1000)
    for _ in range(3):
        await deliver(client, event)
    result = (await post(client, EVENTS_QUERY, token(scope=ADMIN), {"id": event["id"], "n": 2})).json()
    assert [e["outcome"] for e in result["data"]["PaymentEvents"]] == ["duplicate", "duplicate"]
    assert result["extensions"]["truncated"] == [{"path": ["PaymentEvents"], "returned": 2, "more": True}]
    only = (await post(client, EVENTS_QUERY, token(scope=ADMIN), {"id": event["id"], "outcome": "accepted"})).json()
    assert [e["outcome"] for e in only["data"]["PaymentEvents"]] == ["accepted"]
    bad = (await post(client, EVENTS_QUERY, token(scope=ADMIN), {"outcome": "paid"})).json()
    assert error_codes(bad) == ["BAD_USER_INPUT"]


async def test_payment_events_need_the_admin_scope_and_stay_in_their_tenant(
    client: httpx.AsyncClient, store: Store
) -> None:
    for scope in ("user/*.cruds", "patient/*.rs", "system/Invoice.rs"):
        refused = (await post(client, EVENTS_QUERY, token(scope=scope), {})).json()
        assert refused["data"] == {"PaymentEvents": None} and error_codes(refused) == ["FORBIDDEN"], (scope, refused)
    invoice = await new_invoice(store, "10.00", tenant=OTHER)
    theirs = intent_succeeded(invoice, 1000)
    accepted(await deliver(client, theirs, secret=OTHER_SECRET))
    in_other = (await post(client, EVENTS_QUERY, token(scope=ADMIN, tenant=OTHER), {"id": theirs["id"]})).json()
    assert [e["outcome"] for e in in_other["data"]["PaymentEvents"]] == ["accepted"]
    in_ours = (await post(client, EVENTS_QUERY, token(scope=ADMIN), {"id": theirs["id"]})).json()
    assert in_ours["data"]["PaymentEvents"] == []


async def test_an_abandoned_claim_is_taken_over_by_the_next_delivery(store: Store) -> None:
    """A process that died mid-posting leaves the event `processing` (nothing committed): a delivery while the
    claim is fresh is a duplicate; one after ABANDONED_AFTER posts it. The clock is injected."""
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    clock = {"now": now}
    invoice = await new_invoice(store, "15.00")
    event = intent_succeeded(invoice, 1500)
    events = store.for_tenant(TENANT).received_events()
    assert await events.claim(event["id"], {"type": event["type"]}, now, now - ABANDONED_AFTER) is not None
    app_payments = Payments(store, Settings(stripe_webhook_secrets=SECRETS), clock=lambda: clock["now"])
    payload = json.dumps(event).encode()
    fresh = await app_payments.receive(payload, signature(payload, NEW_SECRET))
    assert fresh.body["outcome"] == "duplicate" and await payments_of(store, invoice) == []
    clock["now"] = now + ABANDONED_AFTER + timedelta(seconds=1)
    later = await app_payments.receive(payload, signature(payload, NEW_SECRET))
    assert later.body["outcome"] == "accepted"
    assert len(await payments_of(store, invoice)) == 1 and await invoice_status(store, invoice) == "balanced"


async def test_the_readme_walk_through(store: Store) -> None:
    """The README's event, signed as its curl step signs it, then its GraphQL step: a balanced Invoice."""
    section = README.read_text().split("## Patient pay: Stripe webhooks", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```json\n(.*?)```", section, re.S)
    query = re.findall(r"```graphql\n(.*?)```", section, re.S)[-1]
    invoice = await new_invoice(store, "120.00")
    event = json.loads(example.replace("<the Invoice id>", invoice))
    event["id"] = _id("evt")  # the module's other tests share the tenant
    event["data"]["object"]["id"] = _id("pi")
    async with authed_client(store, stripe_webhook_secrets=SECRETS) as c:
        accepted(await deliver(c, event))
        result = (await post(c, query.replace("<the Invoice id>", invoice), token(scope=ADMIN))).json()
    assert "errors" not in result, result
    shown = result["data"]["Invoice"]
    assert shown["status"] == "balanced" and shown["billing"]["paid"] == [{"value": "120.00", "currency": "USD"}]
    [pr] = shown["PaymentReconciliationList"]
    assert (pr["processor"], pr["cardBrand"], pr["accountNumber"]) == ("Stripe", "visa", "4242")


async def test_concurrent_payments_of_one_invoice_all_post(client: httpx.AsyncClient, store: Store) -> None:
    """Three payments (three intents) of one Invoice at once: the losers of a write conflict retry, all post,
    and the Invoice is balanced exactly once, by whichever posted last."""
    invoice = await new_invoice(store, "30.00")
    events = [intent_succeeded(invoice, 1000) for _ in range(3)]
    responses = await asyncio.gather(*(deliver(client, e) for e in events))
    assert [r.json()["outcome"] for r in responses] == ["accepted"] * 3, [r.text for r in responses]
    assert sum(p["amount"]["value"] for p in await payments_of(store, invoice)) == Decimal("30.00")
    assert await invoice_status(store, invoice) == "balanced"


async def test_an_unpaid_checkout_session_is_rejected(client: httpx.AsyncClient, store: Store) -> None:
    invoice = await new_invoice(store, "10.00")
    event = checkout_completed(invoice, 1000)
    event["data"]["object"]["payment_status"] = "unpaid"  # a delayed payment method: Stripe reports success later
    accepted(await deliver(client, event), "rejected")
    assert await payments_of(store, invoice) == []


def test_a_secret_listed_for_two_tenants_is_refused_at_start_up() -> None:
    from app.payments.signatures import Signatures

    with pytest.raises(ValueError, match="both"):
        Signatures({"a": [NEW_SECRET], "b": [NEW_SECRET]}, 300)


async def test_a_payment_intent_without_its_charge_posts_without_card_digits(
    client: httpx.AsyncClient, store: Store
) -> None:
    """Since API version 2022-11-15 a PaymentIntent carries only `latest_charge`'s id, not the charge."""
    invoice = await new_invoice(store, "12.00")
    event = intent_succeeded(invoice, 1200)
    intent = event["data"]["object"]
    intent["latest_charge"] = intent.pop("charges")["data"][0]["id"]
    event["api_version"] = "2024-06-20"
    accepted(await deliver(client, event))
    [pr] = await payments_of(store, invoice)
    assert "cardBrand" not in pr and "accountNumber" not in pr and pr["method"]["text"] == "card"
    assert await invoice_status(store, invoice) == "balanced"
