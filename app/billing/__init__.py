"""What is billed, paid and outstanding, computed exactly: FinGate's billing views (README "Billing views")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Context, Decimal
from typing import Any

from app.store.settlements import AccountLedger, OpenItem, Payment, Settlement

Amounts = dict[str | None, Decimal]  # currency (None: a Money without one) -> exact value
EXACT = Context(prec=80)  # wide enough that sums and differences of 34-digit Decimal128 values never round
VIEW_TYPES = ("Account", "Claim", "Invoice", "PaymentReconciliation")  # the types with a `billing` view
PAYMENTS_SHOWN = 100  # a view lists at most this many payments (its sums count them all)
NO_SETTLEMENT = Settlement()
NO_LEDGER = AccountLedger()


def money(value: Any) -> Amounts:
    """A FHIR Money as Amounts (empty when it has no value; JSON `100` is stored as an integer)."""
    amount = value.get("value") if isinstance(value, dict) else None
    if isinstance(amount, Decimal) or (isinstance(amount, int) and not isinstance(amount, bool)):
        return {value.get("currency"): Decimal(amount)}  # type: ignore[union-attr]
    return {}


def add(*parts: Mapping[str | None, Decimal]) -> Amounts:
    out: Amounts = {}
    for part in parts:
        for currency, value in part.items():
            out[currency] = EXACT.add(out[currency], value) if currency in out else value
    return out


def subtract(left: Mapping[str | None, Decimal], right: Mapping[str | None, Decimal]) -> Amounts:
    """`left - right` per currency: a currency only on the right comes out negative."""
    return add(left, {currency: EXACT.minus(value) for currency, value in right.items()})


def paid(settlement: Settlement) -> Amounts:
    return add(*(p.amounts for p in settlement.payments))


def listed(amounts: Mapping[str | None, Decimal]) -> list[dict[str, Any]]:
    """Amounts as the GraphQL `BillingAmount` list: one entry per currency, by currency code."""
    return [{"currency": c, "value": v} for c, v in sorted(amounts.items(), key=lambda item: item[0] or "")]


def _payments(payments: Iterable[Payment]) -> list[dict[str, Any]]:
    return [
        {
            "payment": {"reference": f"PaymentReconciliation/{p.id}"},
            "date": p.date,
            "amount": listed(p.amounts),
        }
        for p in list(payments)[:PAYMENTS_SHOWN]
    ]


def payable(invoice: Mapping[str, Any]) -> Amounts:
    """What an Invoice asks to be paid: its gross total (taxes included), else its net total."""
    return money(invoice.get("totalGross")) or money(invoice.get("totalNet"))


def limit(resource_type: str, resource: Mapping[str, Any]) -> Amounts:
    """What payments may reach on a settled target: a Claim's total, an Invoice's payable total."""
    return money(resource.get("total")) if resource_type == "Claim" else payable(resource)


def claim_view(claim: Mapping[str, Any], settlement: Settlement) -> dict[str, Any]:
    billed, got = money(claim.get("total")), paid(settlement)
    return {
        "billed": listed(billed),
        "adjudicated": listed(settlement.benefit),
        "paid": listed(got),
        "outstanding": listed(subtract(billed, got)),
        "payments": _payments(settlement.payments),
    }


def invoice_view(invoice: Mapping[str, Any], settlement: Settlement) -> dict[str, Any]:
    got = paid(settlement)
    return {
        "gross": listed(money(invoice.get("totalGross"))),
        "net": listed(money(invoice.get("totalNet"))),
        "paid": listed(got),
        "balance": listed(subtract(payable(invoice), got)),
        "payments": _payments(settlement.payments),
    }


def account_view(ledger: AccountLedger) -> dict[str, Any]:
    invoiced = add(*(payable({"totalGross": gross, "totalNet": net}) for gross, net in ledger.invoices))
    got = add(*(p.amounts for p in ledger.payments))
    return {
        "invoiced": listed(invoiced),
        "paid": listed(got),
        "balance": listed(subtract(invoiced, got)),
        "payments": _payments(ledger.payments),
    }


PARTY_TYPES = ("Organization", "Patient")  # the types with an outstanding-and-aging view
# Aging buckets: (field, the most days old an item in it is; None: no limit), youngest first.
AGING: tuple[tuple[str, int | None], ...] = (
    ("days0to30", 30),
    ("days31to60", 60),
    ("days61to90", 90),
    ("over90", None),
)
UNDATED = "undated"


def billed_on(value: Any) -> date | None:
    """The calendar date a Claim's `created` or an Invoice's `date` gives (as written, whatever its time zone)."""
    try:
        return date.fromisoformat(value[:10]) if isinstance(value, str) and len(value) >= 10 else None
    except ValueError:
        return None


def _bucket(item: OpenItem, as_of: date) -> str:
    day = billed_on(item.billed_on)
    if day is None:
        return UNDATED
    age = (as_of - day).days
    return next(name for name, most in AGING if most is None or age <= most)


def open_amount(item: OpenItem) -> Amounts:
    """billed − paid of one open item: a Claim's total, an Invoice's payable total."""
    if item.reference.startswith("Claim/"):
        billed = money(item.totals[0])
    else:
        billed = payable({"totalGross": item.totals[0], "totalNet": item.totals[1]})
    return subtract(billed, item.paid)


def party_view(items: Iterable[OpenItem], as_of: date) -> dict[str, Any]:
    buckets: dict[str, list[Amounts]] = {name: [] for name in (*(n for n, _ in AGING), UNDATED)}
    for item in items:
        buckets[_bucket(item, as_of)].append(open_amount(item))
    out: dict[str, Any] = {"asOf": as_of.isoformat()}
    out["outstanding"] = listed(add(*(a for amounts in buckets.values() for a in amounts)))
    for name, amounts in buckets.items():
        out[name] = listed(add(*amounts))
    return out


def allocated(reconciliation: Mapping[str, Any]) -> Amounts:
    allocations = reconciliation.get("allocation")
    return (
        add(*(money(a.get("amount")) for a in allocations if isinstance(a, dict)))
        if isinstance(allocations, list)
        else {}
    )


def reconciliation_view(reconciliation: Mapping[str, Any]) -> dict[str, Any]:
    amount, spread = money(reconciliation.get("amount")), allocated(reconciliation)
    return {"amount": listed(amount), "allocated": listed(spread), "unallocated": listed(subtract(amount, spread))}


def view(
    resource_type: str, resource: Mapping[str, Any], settlement: Settlement | AccountLedger = NO_SETTLEMENT
) -> dict[str, Any]:
    """The `billing` view of a resource of one of VIEW_TYPES, given its settlement (an AccountLedger for an Account)."""
    if isinstance(settlement, AccountLedger):
        return account_view(settlement)
    if resource_type == "Account":
        return account_view(NO_LEDGER)
    if resource_type == "Claim":
        return claim_view(resource, settlement)
    if resource_type == "Invoice":
        return invoice_view(resource, settlement)
    return reconciliation_view(resource)


__all__ = [
    "NO_LEDGER",
    "NO_SETTLEMENT",
    "AccountLedger",
    "PAYMENTS_SHOWN",
    "VIEW_TYPES",
    "Settlement",
    "view",
]
