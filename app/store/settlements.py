"""What active payments and adjudications say about a set of targets: one aggregate, Decimal128 `$sum`s."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

PAYMENTS = "PaymentReconciliation"
RESPONSES = "ClaimResponse"
ADJUDICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/adjudication"
BENEFIT = "benefit"  # the adjudication category that is the payer's benefit amount (R5 adjudication codes)
EXACT_TYPES = ["decimal", "int", "long"]  # amounts summed: Decimal128, and integers (FHIR JSON `100`); never a double
COUNTED_STATUS = "active"  # draft payments pay nothing yet; cancelled and entered-in-error ones nothing any more
ROWS_PER_REPLY = 1_000_000  # the aggregate's batch size: its rows take a few dozen bytes, the reply caps at 16 MB


@dataclass(frozen=True)
class Payment:
    """The allocations of one active PaymentReconciliation to one target, summed per currency."""

    id: str
    date: str | None
    amounts: dict[str | None, Decimal]


@dataclass
class Settlement:
    """Of one target (`Type/id`): its payments and the benefit amounts of its active ClaimResponses."""

    payments: list[Payment] = field(default_factory=list)
    benefit: dict[str | None, Decimal] = field(default_factory=dict)


def _unversioned(path: str) -> dict[str, Any]:
    """`Type/id/_history/v` as `Type/id`, as the `_search` reference values hold it."""
    return {"$arrayElemAt": [{"$split": [path, "/_history/"]}, 0]}


def pipeline(scope: dict[str, Any], response_scope: dict[str, Any] | None, targets: list[str]) -> list[dict[str, Any]]:
    """Rows `{_id: {t, c, p}, v, d}` (a payment's allocations to target `t` in currency `c`), then, with
    `response_scope`, rows `{_id: {t, c, r: true}, v}` (benefit totals of `t`'s responses): each `$match`
    first answered by the tenant + reference index; only Decimal128 and integer amounts are summed (what a valid
    FHIR decimal is stored as), exactly, by the database."""
    wanted = {"$in": targets}
    out: list[dict[str, Any]] = [
        {"$match": {**scope, "status": COUNTED_STATUS, "_search.allocation-target": wanted}},
        {"$unwind": "$allocation"},
        {
            "$project": {
                "_id": 0,
                "p": "$id",
                "d": "$date",
                "t": _unversioned("$allocation.target.reference"),
                "c": "$allocation.amount.currency",
                "v": "$allocation.amount.value",
            }
        },
        {"$match": {"t": wanted, "v": {"$type": EXACT_TYPES}}},
        {"$group": {"_id": {"t": "$t", "c": "$c", "p": "$p"}, "v": {"$sum": "$v"}, "d": {"$first": "$d"}}},
    ]
    if response_scope is not None:
        benefit = {"code": BENEFIT, "system": {"$in": [None, ADJUDICATION_SYSTEM]}}
        responses = [
            {"$match": {**response_scope, "status": COUNTED_STATUS, "_search.request": wanted}},
            {"$unwind": "$total"},
            {"$match": {"total.category.coding": {"$elemMatch": benefit}}},
            {
                "$project": {
                    "_id": 0,
                    "t": _unversioned("$request.reference"),
                    "c": "$total.amount.currency",
                    "v": "$total.amount.value",
                }
            },
            {"$match": {"t": wanted, "v": {"$type": EXACT_TYPES}}},
            {"$group": {"_id": {"t": "$t", "c": "$c", "r": True}, "v": {"$sum": "$v"}}},
        ]
        out.append({"$unionWith": {"coll": RESPONSES, "pipeline": responses}})
    return out


def settlements(rows: list[dict[str, Any]]) -> dict[str, Settlement]:
    """The aggregate's rows as a Settlement per target; payments by date, then id."""
    out: dict[str, Settlement] = {}
    payments: dict[tuple[str, str], tuple[str | None, dict[str | None, Decimal]]] = {}
    for row in rows:
        key = row["_id"]
        target, currency, value = key["t"], key.get("c"), Decimal(row["v"])
        settlement = out.setdefault(target, Settlement())
        if key.get("r"):
            settlement.benefit[currency] = settlement.benefit.get(currency, Decimal(0)) + value
            continue
        date, amounts = payments.setdefault((target, key["p"]), (row.get("d"), {}))
        amounts[currency] = amounts.get(currency, Decimal(0)) + value
    ordered = sorted(payments.items(), key=lambda item: (str(item[1][0] or ""), item[0][1]))
    for (target, id), (date, amounts) in ordered:
        out[target].payments.append(Payment(id, date if isinstance(date, str) else None, amounts))
    return out
