"""The `billing` fields: FinGate's computed billing views (app.billing) as GraphQL types, formulas in their descriptions."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types.base import StrawberryList, StrawberryOptional
from strawberry.types.field import StrawberryField

from app.billing import AGING, ITEMS_SHOWN, PARTY_TYPES, PAYMENTS_SHOWN, UNDATED, VIEW_TYPES
from app.graphql.dynamic import field, object_type
from app.graphql.scalars import FhirDecimal

AMOUNT = "BillingAmount"
PAYMENT = "BillingPayment"
ITEM = "BillingItem"
TYPE_NAMES = {t: f"{t}Billing" for t in (*VIEW_TYPES, *PARTY_TYPES)}
NAMES = (AMOUNT, PAYMENT, ITEM, *TYPE_NAMES.values())

_ACTIVE = "active PaymentReconciliations (draft, cancelled and entered-in-error ones count nothing)"
_PAID = (
    f"Σ allocation.amount of the allocations of {_ACTIVE} whose allocation.target is this resource "
    "(a negative allocation is a refund)."
)
_PAYMENTS = (
    f"Those payments, by date then id: at most {PAYMENTS_SHOWN} (the sums count them all; a cut list is noted in "
    "the response's extensions.truncated with its total); each with the sum "
    "of its allocations to this resource."
)
# Per type: (field, description, a list of payments rather than of amounts).
FIELDS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "Account": (
        (
            "invoiced",
            "Σ of the payable totals (totalGross, else totalNet) of the issued and balanced Invoices whose account "
            "is this Account (R5 Claims do not point at an Account).",
            False,
        ),
        (
            "paid",
            f"Σ allocation.amount of the allocations of {_ACTIVE} whose allocation.target is one of those "
            "Invoices or this Account.",
            False,
        ),
        ("balance", "invoiced − paid; negative is a credit.", False),
        ("payments", _PAYMENTS.replace("to this resource", "to those Invoices and this Account"), True),
    ),
    "Claim": (
        ("billed", "Claim.total.", False),
        (
            "adjudicated",
            "Σ ClaimResponse.total.amount where total.category is `benefit` (system "
            "http://terminology.hl7.org/CodeSystem/adjudication, or none), over the active ClaimResponses whose "
            "request is this Claim: what the payer agreed to pay.",
            False,
        ),
        ("paid", _PAID, False),
        (
            "outstanding",
            "billed − paid: what is still owed on the Claim; negative is a credit (an overpayment, "
            "where the tenant allows it).",
            False,
        ),
        ("payments", _PAYMENTS, True),
    ),
    # A payer's adjudication, as the EOB itself states it (a payer import's EOBs: README "Importing from a payer").
    "ExplanationOfBenefit": (
        (
            "submitted",
            "Σ total.amount where total.category is `submitted` (system "
            "http://terminology.hl7.org/CodeSystem/adjudication, or none): what the provider billed the payer.",
            False,
        ),
        ("adjudicated", "Σ total.amount where total.category is `benefit`: what the payer agreed to pay.", False),
        ("paid", "payment.amount: what the payer says it paid (empty when the EOB has no payment).", False),
        (
            "patientShare",
            "submitted − adjudicated: what this payer left unpaid, the patient's cost sharing and non-covered "
            "charges (another coverage may pay part of it).",
            False,
        ),
    ),
    "Invoice": (
        ("gross", "Invoice.totalGross (taxes included).", False),
        ("net", "Invoice.totalNet (taxes excluded).", False),
        ("paid", _PAID, False),
        (
            "balance",
            "gross − paid (net − paid when the Invoice has no totalGross): zero when it is settled, which moving "
            "it to `balanced` requires; negative is a credit.",
            False,
        ),
        ("payments", _PAYMENTS, True),
    ),
    "PaymentReconciliation": (
        ("amount", "PaymentReconciliation.amount.", False),
        ("allocated", "Σ allocation.amount.", False),
        (
            "unallocated",
            "amount − allocated: what this payment has not yet spread over targets; null when the payment has no "
            "amount (optional on the specification page).",
            False,
        ),
    ),
}
_PARTY_ITEMS = {
    "Patient": "its active Claims (Claim.patient) and issued Invoices (Invoice.recipient)",
    "Organization": "the active Claims it insures (Claim.insurer) and its issued Invoices (Invoice.recipient)",
}
_AGES = {"days0to30": "0–30", "days31to60": "31–60", "days61to90": "61–90", "over90": "over 90"}
for _party, _items in _PARTY_ITEMS.items():
    FIELDS[_party] = (
        (
            "outstanding",
            f"Σ (billed − paid) over {_items}: a Claim's total, an Invoice's payable total (totalGross, else "
            "totalNet), less the active allocations to it. Negative is a credit.",
            False,
        ),
        *(
            (
                name,
                f"The part of `outstanding` billed {_AGES[name]} days before asOf (Claim.created, Invoice.date).",
                False,
            )
            for name, _ in AGING
        ),
        (UNDATED, "The part of `outstanding` whose Claim.created or Invoice.date is missing.", False),
    )
_AMOUNTS_NOTE = (
    " Exact, one entry per currency (amounts in different currencies are never added); a currency is listed "
    "when some amount in it exists."
)


# View fields that may be null: a payment without an amount has no unallocated rest.
NULLABLE = frozenset({("PaymentReconciliation", "unallocated")})


def _maybe(resource_type: str, name: str, annotation: StrawberryList) -> object:
    return StrawberryOptional(annotation) if (resource_type, name) in NULLABLE else annotation


def billing_types(reference: type) -> dict[str, Any]:
    """The view type of each of VIEW_TYPES; `reference` is the generated Reference type."""
    amount = object_type(
        AMOUNT,
        "An exact amount in one currency, computed by FinGate (not a FHIR element).",
        [
            field("currency", StrawberryOptional(str), "ISO 4217 code; null for amounts given without one."),
            field("value", FhirDecimal, "The exact amount."),
        ],
    )
    amounts = StrawberryList(amount)
    payment = object_type(
        PAYMENT,
        "One active PaymentReconciliation's allocations to a resource, computed by FinGate (not a FHIR element).",
        [
            field("payment", reference, "The PaymentReconciliation (`resource` reads it)."),
            field("date", StrawberryOptional(str), "PaymentReconciliation.date."),
            field("amount", amounts, "Σ of its allocation.amount to this resource, per currency."),
        ],
    )
    item = object_type(
        ITEM,
        "One open Claim or Invoice of a party and what it still owes, computed by FinGate (not a FHIR element).",
        [
            field("item", reference, "The Claim or Invoice (`resource` reads it)."),
            field("billedOn", StrawberryOptional(str), "Claim.created or Invoice.date, as written."),
            field("age", str, f"Its aging bucket: {', '.join(n for n, _ in AGING)} or {UNDATED}."),
            field("outstanding", amounts, "billed − paid of this item." + _AMOUNTS_NOTE),
        ],
    )
    items = field(
        "items",
        StrawberryList(item),
        f"The open items whose outstanding amount is not zero, oldest first (undated last): a worklist, at most "
        f"{ITEMS_SHOWN} (the sums count them all; a cut list is noted in the response's extensions.truncated with its "
        "total).",
    )
    out = {}
    as_of = field("asOf", str, "The date the ages are counted to (YYYY-MM-DD).")
    for resource_type, fields in FIELDS.items():
        out[resource_type] = object_type(
            TYPE_NAMES[resource_type],
            f"Billing view of one {resource_type}, computed by FinGate from the stored data at each read: "
            "not a FHIR element. See README 'Billing views'.",
            [
                field(
                    name,
                    StrawberryList(payment) if is_list else _maybe(resource_type, name, amounts),
                    text + ("" if is_list else _AMOUNTS_NOTE),
                )
                for name, text, is_list in fields
            ]
            + ([items, as_of] if resource_type in PARTY_TYPES else []),
        )
    return out


AS_OF = "The date ages are counted to, YYYY-MM-DD (default: today, UTC)."


def billing_field(resource_type: str, resolver: Any) -> tuple[str, object, StrawberryField]:
    """`billing` on `resource_type`: its view, resolved with one store command per level."""
    what = "outstanding totals, by age, for" if resource_type in PARTY_TYPES else "billing view of"
    description = (
        f"FinGate's {what} this {resource_type}: computed, not a FHIR element "
        "(exact, per currency; see the fields and README 'Billing views')."
    )
    return "billing", None, strawberry.field(resolver=resolver, name="billing", description=description)
