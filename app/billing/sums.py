"""Exact sums of FHIR Money per currency, and what each settled resource may be paid (its limit)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Context, Decimal
from typing import Any

Amounts = dict[str | None, Decimal]  # currency (None: a Money without one) -> exact value
EXACT = Context(prec=80)  # wide enough that sums and differences of 34-digit Decimal128 values never round


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


def listed(amounts: Mapping[str | None, Decimal]) -> list[dict[str, Any]]:
    """Amounts as the GraphQL `BillingAmount` list: one entry per currency, by currency code."""
    return [{"currency": c, "value": v} for c, v in sorted(amounts.items(), key=lambda item: item[0] or "")]


def payable(invoice: Mapping[str, Any]) -> Amounts:
    """What an Invoice asks to be paid: its gross total (taxes included), else its net total."""
    return money(invoice.get("totalGross")) or money(invoice.get("totalNet"))


def limit(resource_type: str, resource: Mapping[str, Any]) -> Amounts:
    """What payments may reach on a settled target: a Claim's total, an Invoice's payable total."""
    return money(resource.get("total")) if resource_type == "Claim" else payable(resource)
