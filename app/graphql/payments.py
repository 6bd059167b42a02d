"""`PaymentEvents`: the payment processor's received events (app.payments) as a GraphQL list for an admin scope."""

from __future__ import annotations

from typing import Any

from strawberry.types.base import StrawberryList, StrawberryOptional

from app.graphql.dynamic import field, object_type
from app.graphql.scalars import FhirDecimal
from app.payments import OUTCOMES

EVENT = "PaymentEvent"
AMOUNT = "PaymentEventAmount"
NAMES = (EVENT, AMOUNT)
FIELD = "PaymentEvents"
DESCRIPTION = (
    "The tenant's received Stripe webhook events, newest first, each with its outcome (accepted, rejected, waiting, "
    "duplicate, ignored, failed, processing), the reason and the resources it produced. Needs the admin scope the "
    "audit log needs: `system/AuditEvent.r` (or `system/*.r`). README 'Patient pay: Stripe webhooks'."
)
ARGS: list[tuple[str, object, bool, str | None]] = [
    ("outcome", str, False, f"Only events with this outcome: {', '.join(OUTCOMES)}."),
    ("type", str, False, "Only events of this Stripe type (`payment_intent.succeeded`, `charge.refunded`, ...)."),
    ("eventId", str, False, "Only this Stripe event id (its first delivery and its duplicates)."),
    ("_count", int, False, "At most this many events (20); a list stopping early says so in `extensions.truncated`."),
    ("_offset", int, False, "Skip this many events first."),
]


def event_type(reference: type) -> Any:
    """The PaymentEvent type; `reference` is the generated Reference type (its `resource` reads the target)."""
    text = StrawberryOptional(str)
    amount = object_type(
        AMOUNT,
        "What an event posted, exactly (converted from Stripe's minor units with the currency's ISO 4217 exponent).",
        [
            field("value", FhirDecimal, "The amount: positive for a payment, negative for a refund."),
            field("currency", str, "ISO 4217 code."),
        ],
    )
    return object_type(
        EVENT,
        "One received delivery of a Stripe webhook event, as FinGate recorded it (not a FHIR resource).",
        [
            field("eventId", str, "Stripe's event id (`evt_...`): posted at most once per tenant."),
            field("type", str, "Stripe's event type."),
            field("outcome", str, f"One of {', '.join(OUTCOMES)}."),
            field("reason", text, "Why it was rejected, waits, is a duplicate or failed; how a waiting refund posted."),
            field("rule", text, "The FinGate rule that refused the posting, when one did."),
            field("receivedAt", str, "When FinGate received it, a FHIR instant (UTC)."),
            field("livemode", StrawberryOptional(bool), "Stripe's livemode: false for test-mode events."),
            field("deliveries", StrawberryOptional(int), "How many times Stripe delivered it (first delivery only)."),
            field("duplicateOf", text, "On a duplicate delivery: the event id first received."),
            field("paymentIntent", text, "The PaymentIntent (`pi_...`), the PaymentReconciliation's referenceNumber."),
            field("amount", StrawberryOptional(amount), "What it posted (null until posted)."),
            field("invoice", StrawberryOptional(reference), "The Invoice its metadata names (`resource` reads it)."),
            field(
                "produced",
                StrawberryList(reference),
                "What its posting wrote: the PaymentReconciliation, then the Invoice when its status moved.",
            ),
        ],
    )


def as_event(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record (app.store.payment_events) as a PaymentEvent."""
    out = dict(record)
    out["produced"] = [{"reference": ref} for ref in record.get("produced") or ()]
    invoice = record.get("invoice")
    out["invoice"] = {"reference": f"Invoice/{invoice}"} if invoice else None
    value = record.get("amount")
    out["amount"] = {"value": value, "currency": record.get("currency")} if value is not None else None
    return out


def resolver() -> Any:
    async def resolve(
        root: None,
        info: Any,
        outcome: str | None = None,
        type: str | None = None,
        eventId: str | None = None,
        _count: int | None = None,
        _offset: int | None = None,
    ) -> list[dict[str, Any]]:
        records = await info.context.payment_events(_count, _offset, outcome, type, eventId, path=info.path)
        return [as_event(r) for r in records]

    return resolve
