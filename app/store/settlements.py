"""What active payments and adjudications say about a set of targets: one aggregate, Decimal128 `$sum`s."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any

PAYMENTS = "PaymentReconciliation"
RESPONSES = "ClaimResponse"
ADJUDICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/adjudication"
BENEFIT = "benefit"  # the adjudication category that is the payer's benefit amount (R5 adjudication codes)
EXACT_TYPES = ["decimal", "int", "long"]  # amounts summed: Decimal128, and integers (FHIR JSON `100`); never a double
COUNTED_STATUS = "active"  # draft payments pay nothing yet; cancelled and entered-in-error ones nothing any more
EXACT = Context(prec=80)  # sums of 34-digit Decimal128 values, never rounded
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
    """`Type/id/_history/v` as `Type/id`, as the `_search` reference values hold it (null unless a string:
    `$split` would fail the whole aggregate on a stored document that is not valid FHIR)."""
    text = {"$arrayElemAt": [{"$split": [path, "/_history/"]}, 0]}
    return {"$cond": [{"$eq": [{"$type": path}, "string"]}, text, None]}


def pipeline(scope: dict[str, Any], response_scope: dict[str, Any] | None, targets: list[str]) -> list[dict[str, Any]]:
    """Rows `{_id: {t, c, p}, v, d}` (a payment's allocations to target `t` in currency `c`), then, with
    `response_scope`, rows `{_id: {t, c, r: true}, v}` (benefit totals of `t`'s responses): each `$match`
    first answered by the tenant + reference index; only Decimal128 and integer amounts are summed (what a valid
    FHIR decimal is stored as), exactly, by the database."""
    wanted = {"$in": targets}
    out: list[dict[str, Any]] = [
        *_allocations({**scope, "_search.allocation-target": wanted}),
        {"$match": {"t": wanted}},
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
            settlement.benefit[currency] = EXACT.add(settlement.benefit.get(currency, Decimal(0)), value)
            continue
        date, amounts = payments.setdefault((target, key["p"]), (row.get("d"), {}))
        amounts[currency] = EXACT.add(amounts.get(currency, Decimal(0)), value)
    ordered = sorted(payments.items(), key=lambda item: (str(item[1][0] or ""), item[0][1]))
    for (target, id), (date, amounts) in ordered:
        out[target].payments.append(Payment(id, date if isinstance(date, str) else None, amounts))
    return out


INVOICES = "Invoice"
BILLED_INVOICES = ["issued", "balanced"]  # a draft is not billed yet; cancelled and entered-in-error never are


@dataclass
class AccountLedger:
    """Of one Account (`Account/id`): its billed Invoices' totals, and the payments to them or to the Account."""

    invoices: list[tuple[Any, Any]] = field(default_factory=list)  # (totalGross, totalNet) of each
    payments: list[Payment] = field(default_factory=list)


def account_pipeline(
    invoice_scope: dict[str, Any], payment_scope: dict[str, Any], accounts: list[str]
) -> list[dict[str, Any]]:
    """Rows `{a, g, n, p}`: each billed Invoice of account `a` with the active allocations to it (`p`, looked up
    by the allocation-target index); then rows `{_id: {t, c, p}, v, d}` of allocations to the Accounts
    themselves, as `pipeline` makes them."""
    wanted = {"$in": accounts}
    return [
        {"$match": {**invoice_scope, "status": {"$in": BILLED_INVOICES}, "_search.account": wanted}},
        {
            "$project": {
                "_id": 0,
                "a": _unversioned("$account.reference"),
                "i": {"$concat": ["Invoice/", "$id"]},
                "g": "$totalGross",
                "n": "$totalNet",
            }
        },
        {"$match": {"a": wanted}},
        _payments_of_items(payment_scope),
        {"$unionWith": {"coll": PAYMENTS, "pipeline": pipeline(payment_scope, None, accounts)}},
    ]


def account_ledgers(rows: list[dict[str, Any]]) -> dict[str, AccountLedger]:
    """The aggregate's rows as a ledger per Account; its payments merged per PaymentReconciliation, by date then id."""
    out: dict[str, AccountLedger] = {}
    payments: dict[tuple[str, str], tuple[str | None, dict[str | None, Decimal]]] = {}

    def paid(account: str, id: str, date: Any, currency: str | None, value: Any) -> None:
        _, amounts = payments.setdefault((account, id), (date if isinstance(date, str) else None, {}))
        amounts[currency] = EXACT.add(amounts.get(currency, Decimal(0)), Decimal(value))

    for row in rows:
        if "_id" in row:  # an allocation to the Account itself
            key = row["_id"]
            out.setdefault(key["t"], AccountLedger())
            paid(key["t"], key["p"], row.get("d"), key.get("c"), row["v"])
            continue
        account = row["a"]
        out.setdefault(account, AccountLedger()).invoices.append((row.get("g"), row.get("n")))
        for allocation in row["p"]:
            if allocation.get("t") == row["i"]:
                paid(account, allocation["p"], allocation.get("d"), allocation.get("c"), allocation["v"])
    for (account, id), (date, amounts) in sorted(payments.items(), key=lambda i: (i[1][0] or "", i[0][1])):
        out[account].payments.append(Payment(id, date, amounts))
    return out


CLAIMS = "Claim"
# Whose open items a party's view gathers: (Claim search parameter, Invoice search parameter) per party type.
PARTY_ITEMS = {"Patient": ("patient", "recipient"), "Organization": ("insurer", "recipient")}
OPEN_CLAIMS = ["active"]
OPEN_INVOICES = ["issued"]  # a balanced Invoice is settled


@dataclass(frozen=True)
class OpenItem:
    """A Claim or Invoice of a party: when it was billed, what it bills, and what active payments paid on it."""

    reference: str  # `Claim/id`, `Invoice/id`
    billed_on: Any  # Claim.created, Invoice.date (FHIR dateTime text)
    totals: tuple[Any, ...]  # Claim: (total,); Invoice: (totalGross, totalNet)
    paid: dict[str | None, Decimal]


def _items(
    collection: str,
    scope: dict[str, Any],
    key: str,
    statuses: list[str],
    parties: list[str],
    payment_scope: dict[str, Any],
) -> list[dict[str, Any]]:
    """Rows `{a: party, i: Type/id, d: billed on, g, n, p: [allocations to it]}` of one collection."""
    is_claim = collection == CLAIMS
    return [
        {"$match": {**scope, "status": {"$in": statuses}, f"_search.{key}": {"$in": parties}}},
        {
            "$project": {
                "_id": 0,
                "id": 1,
                "created": 1,
                "date": 1,
                "total": 1,
                "totalGross": 1,
                "totalNet": 1,
                f"_search.{key}": 1,
            }
        },
        {"$unwind": f"$_search.{key}"},
        {"$match": {f"_search.{key}": {"$in": parties}}},
        {
            "$project": {
                "a": f"$_search.{key}",
                "i": {"$concat": [f"{collection}/", "$id"]},
                "d": "$created" if is_claim else "$date",
                "g": "$total" if is_claim else "$totalGross",
                "n": "$totalNet",
            }
        },
        _payments_of_items(payment_scope),
    ]


def _payments_of_items(payment_scope: dict[str, Any]) -> dict[str, Any]:
    """The stage joining each item row (`i`: its `Type/id`) to its payments' allocation rows, as `p`,
    by the allocation-target index."""
    return {
        "$lookup": {
            "from": PAYMENTS,
            "localField": "i",
            "foreignField": "_search.allocation-target",
            "as": "p",
            "pipeline": _allocations(payment_scope),
        }
    }


def _allocations(payment_scope: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows `{p, d, t, c, v}`: each summable allocation of the counted payments `payment_scope` matches."""
    return [
        {"$match": {**payment_scope, "status": COUNTED_STATUS}},
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
        {"$match": {"v": {"$type": EXACT_TYPES}}},
    ]


def party_pipeline(party_type: str, scopes: dict[str, dict[str, Any]], parties: list[str]) -> list[dict[str, Any]]:
    """The open Claims of the parties, then (`$unionWith`) their open Invoices, each with its payments."""
    claim_key, invoice_key = PARTY_ITEMS[party_type]
    payments = scopes[PAYMENTS]
    claims = _items(CLAIMS, scopes[CLAIMS], claim_key, OPEN_CLAIMS, parties, payments)
    invoices = _items(INVOICES, scopes[INVOICES], invoice_key, OPEN_INVOICES, parties, payments)
    return [*claims, {"$unionWith": {"coll": INVOICES, "pipeline": invoices}}]


def open_items(rows: list[dict[str, Any]]) -> dict[str, list[OpenItem]]:
    """The aggregate's rows as each party's open items, by reference."""
    out: dict[str, list[OpenItem]] = {}
    for row in sorted(rows, key=lambda r: (r["a"], r["i"])):
        paid: dict[str | None, Decimal] = {}
        for allocation in row["p"]:
            if allocation.get("t") == row["i"]:
                currency = allocation.get("c")
                paid[currency] = EXACT.add(paid.get(currency, Decimal(0)), Decimal(allocation["v"]))
        is_claim = row["i"].startswith(f"{CLAIMS}/")
        totals = (row.get("g"),) if is_claim else (row.get("g"), row.get("n"))
        out.setdefault(row["a"], []).append(OpenItem(row["i"], row.get("d"), totals, paid))
    return out
