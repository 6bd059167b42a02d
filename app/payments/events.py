"""What a Stripe event says about money: the three handled event types read into one `Received` shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.fhir.money import minor_unit

# The metadata keys FinGate reads (set them on the PaymentIntent, the Checkout Session, or the Charge).
INVOICE_KEY = "fingate_invoice"  # the Invoice id (or `Invoice/<id>`) the payment settles
TENANT_KEY = "fingate_tenant"  # optional: the tenant, checked against the tenant whose secret signed the event

PAYMENT, REFUND = "payment", "refund"
HANDLED = {
    "payment_intent.succeeded": PAYMENT,
    "checkout.session.completed": PAYMENT,
    "charge.refunded": REFUND,
}
# Stripe's API keeps ISK in two-decimal minor units (amounts divisible by 100) although ISO 4217 gives it none
# (stripe.com/docs/currencies#special-cases); every other currency's Stripe exponent is ISO 4217's.
STRIPE_EXPONENT = {"ISK": 2}


class Unreadable(Exception):
    """The event cannot be posted as sent (recorded as rejected with this reason)."""


@dataclass
class Received:
    """One handled event: a payment or a refund (cumulative, as Stripe reports it) of a payment intent."""

    event_id: str
    event_type: str
    action: str  # PAYMENT or REFUND
    payment_intent: str | None
    currency: str  # ISO 4217, upper case
    minor: int  # Stripe's amount in minor units: paid, or (a refund) refunded so far on the charge
    invoice: str | None  # the Invoice id the metadata names
    tenant: str | None  # the tenant the metadata names
    created: int | None  # the event's `created` (Unix seconds)
    card: dict[str, Any] = field(default_factory=dict)  # brand, last4, funding, exp_month, exp_year


def amount(minor: int, currency: str) -> Decimal:
    """Stripe minor units as an exact decimal in `currency` (`1050` USD is `10.50`, JPY `1050`, KWD `1.050`)."""
    iso = minor_unit(currency)
    if iso is None:
        raise Unreadable(f"{currency} has no ISO 4217 minor unit: its amounts cannot be converted")
    stripe_exponent = STRIPE_EXPONENT.get(currency, iso)
    value = Decimal(minor).scaleb(-stripe_exponent)
    exact = value.quantize(Decimal(1).scaleb(-iso))
    if exact != value:
        raise Unreadable(f"{minor} in Stripe's {currency} minor units is not a whole ISO 4217 amount")
    return exact


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id(value: Any) -> str | None:
    """An expandable Stripe field: an id, or the expanded object's id."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def _card(charge: Any) -> dict[str, Any]:
    details = charge.get("payment_method_details") if isinstance(charge, dict) else None
    card = details.get("card") if isinstance(details, dict) else None
    return card if isinstance(card, dict) else {}


def _intent_charge(intent: dict[str, Any]) -> dict[str, Any] | None:
    """The charge of a PaymentIntent: `latest_charge` when expanded, else the legacy `charges.data` list's newest."""
    latest = intent.get("latest_charge")
    if isinstance(latest, dict):
        return latest
    charges = intent.get("charges")
    data = charges.get("data") if isinstance(charges, dict) else None
    if isinstance(data, list):
        wanted = [c for c in data if isinstance(c, dict) and (latest is None or c.get("id") == latest)]
        return wanted[0] if wanted else None
    return None


def _minor(obj: dict[str, Any], *names: str) -> int:
    for name in names:
        value = obj.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise Unreadable(f"the {obj.get('object', 'object')} has no integer {' or '.join(names)}")


def read(event: dict[str, Any]) -> Received:
    """The handled event `event` (a verified Stripe Event object) as a Received; Unreadable when it cannot be posted."""
    event_type = event["type"]
    obj = _dict(event.get("data")).get("object")
    if not isinstance(obj, dict):
        raise Unreadable("the event has no data.object")
    metadata = _dict(obj.get("metadata"))
    currency = obj.get("currency")
    if not isinstance(currency, str) or len(currency) != 3:
        raise Unreadable("the event's object has no three-letter currency")
    charge: dict[str, Any] | None
    if event_type == "payment_intent.succeeded":
        intent, minor, charge = obj.get("id"), _minor(obj, "amount_received", "amount"), _intent_charge(obj)
    elif event_type == "checkout.session.completed":
        if obj.get("payment_status") != "paid":
            raise Unreadable(f"the Checkout Session's payment_status is {obj.get('payment_status')!r}, not 'paid'")
        intent, minor = _id(obj.get("payment_intent")), _minor(obj, "amount_total")
        charge = _intent_charge(obj["payment_intent"]) if isinstance(obj.get("payment_intent"), dict) else None
    else:  # charge.refunded
        intent, minor, charge = _id(obj.get("payment_intent")), _minor(obj, "amount_refunded"), obj
    invoice = metadata.get(INVOICE_KEY)
    if isinstance(invoice, str) and invoice.startswith("Invoice/"):
        invoice = invoice.removeprefix("Invoice/")
    return Received(
        event_id=event["id"],
        event_type=event_type,
        action=HANDLED[event_type],
        payment_intent=intent if isinstance(intent, str) else None,
        currency=currency.upper(),
        minor=minor,
        invoice=invoice if isinstance(invoice, str) and invoice else None,
        tenant=metadata.get(TENANT_KEY) if isinstance(metadata.get(TENANT_KEY), str) else None,
        created=event.get("created") if isinstance(event.get("created"), int) else None,
        card=_card(charge),
    )
