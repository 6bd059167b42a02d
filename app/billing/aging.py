"""Outstanding amounts of a Patient or payer Organization, aged by when each Claim or Invoice was billed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from app.billing.sums import Amounts, add, listed, money, payable, subtract
from app.billing.views import shown
from app.store.settlements import OpenItem

PARTY_TYPES = ("Organization", "Patient")  # the types with an outstanding-and-aging view
# Aging buckets: (field, the most days old an item in it is; None: no limit), youngest first.
AGING: tuple[tuple[str, int | None], ...] = (
    ("days0to30", 30),
    ("days31to60", 60),
    ("days61to90", 90),
    ("over90", None),
)
UNDATED = "undated"
ITEMS_SHOWN = 100  # a party's view lists at most this many open items (its sums count them all)


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


def _oldest_first(entry: tuple[OpenItem, str, Amounts]) -> tuple[bool, date, str]:
    day = billed_on(entry[0].billed_on)
    return day is None, day or date.max, entry[0].reference


def party_view(items: Iterable[OpenItem], as_of: date) -> dict[str, Any]:
    buckets: dict[str, list[Amounts]] = {name: [] for name in (*(n for n, _ in AGING), UNDATED)}
    owing: list[tuple[OpenItem, str, Amounts]] = []
    for item in items:
        bucket, amount = _bucket(item, as_of), open_amount(item)
        buckets[bucket].append(amount)
        if any(value != 0 for value in amount.values()):
            owing.append((item, bucket, amount))
    out: dict[str, Any] = {"asOf": as_of.isoformat()}
    out["outstanding"] = listed(add(*(a for amounts in buckets.values() for a in amounts)))
    for name, amounts in buckets.items():
        out[name] = listed(add(*amounts))
    rows = [
        {
            "item": {"reference": item.reference},
            "billedOn": item.billed_on,
            "age": bucket,
            "outstanding": listed(amount),
        }
        for item, bucket, amount in sorted(owing, key=_oldest_first)
    ]
    return shown(out, "items", rows, ITEMS_SHOWN)
