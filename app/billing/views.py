"""The `billing` views of Claim, Invoice, Account and PaymentReconciliation, from their settlements."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.billing.adjudication import eob_view
from app.billing.sums import Amounts, add, listed, money, payable, subtract
from app.store.settlements import AccountLedger, Payment, Settlement

# the types with a `billing` view
VIEW_TYPES = ("Account", "Claim", "ExplanationOfBenefit", "Invoice", "PaymentReconciliation")
PAYMENTS_SHOWN = 100  # a view lists at most this many payments (its sums count them all)
# A view's lists cut to their first rows: {list: (rows shown, rows in all)}, under a key no GraphQL field reads.
CUT = "_cut"
NO_SETTLEMENT = Settlement()
NO_LEDGER = AccountLedger()


def paid(settlement: Settlement) -> Amounts:
    return add(*(p.amounts for p in settlement.payments))


def shown(view: dict[str, Any], key: str, rows: list[Any], most: int) -> dict[str, Any]:
    """`view` with `rows` as its list `key`, its first `most`: when there are more, the cut is recorded (`CUT`)."""
    view[key] = rows[:most]
    if len(rows) > most:
        view.setdefault(CUT, {})[key] = (most, len(rows))
    return view


def _payments(payments: Iterable[Payment]) -> list[dict[str, Any]]:
    return [
        {"payment": {"reference": f"PaymentReconciliation/{p.id}"}, "date": p.date, "amount": listed(p.amounts)}
        for p in payments
    ]


def claim_view(claim: Mapping[str, Any], settlement: Settlement) -> dict[str, Any]:
    billed, got = money(claim.get("total")), paid(settlement)
    out = {
        "billed": listed(billed),
        "adjudicated": listed(settlement.benefit),
        "paid": listed(got),
        "outstanding": listed(subtract(billed, got)),
    }
    return shown(out, "payments", _payments(settlement.payments), PAYMENTS_SHOWN)


def invoice_view(invoice: Mapping[str, Any], settlement: Settlement) -> dict[str, Any]:
    got = paid(settlement)
    out = {
        "gross": listed(money(invoice.get("totalGross"))),
        "net": listed(money(invoice.get("totalNet"))),
        "paid": listed(got),
        "balance": listed(subtract(payable(invoice), got)),
    }
    return shown(out, "payments", _payments(settlement.payments), PAYMENTS_SHOWN)


def account_view(ledger: AccountLedger) -> dict[str, Any]:
    invoiced = add(*(payable({"totalGross": gross, "totalNet": net}) for gross, net in ledger.invoices))
    got = add(*(p.amounts for p in ledger.payments))
    out = {"invoiced": listed(invoiced), "paid": listed(got), "balance": listed(subtract(invoiced, got))}
    return shown(out, "payments", _payments(ledger.payments), PAYMENTS_SHOWN)


def allocated(reconciliation: Mapping[str, Any]) -> Amounts:
    allocations = reconciliation.get("allocation")
    return (
        add(*(money(a.get("amount")) for a in allocations if isinstance(a, dict)))
        if isinstance(allocations, list)
        else {}
    )


def reconciliation_view(reconciliation: Mapping[str, Any]) -> dict[str, Any]:
    """`unallocated` is None for a payment without an amount (the specification page makes it optional): what is
    left of an amount not given is unknown, not minus what was allocated."""
    amount, spread = money(reconciliation.get("amount")), allocated(reconciliation)
    rest = listed(subtract(amount, spread)) if amount else None
    return {"amount": listed(amount), "allocated": listed(spread), "unallocated": rest}


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
    if resource_type == "ExplanationOfBenefit":
        return eob_view(resource)
    return reconciliation_view(resource)
