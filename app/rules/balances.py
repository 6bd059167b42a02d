"""Applies the balance rules of `app.rules.tables.BALANCE_RULES`: what payments may do to a Claim's or Invoice's sums."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

from app.billing import Amounts, add, limit, money, paid, payable, subtract
from app.errors import STATUS_RULE, FinGateError, outcome_issue
from app.fhir.references import by_type, local_reference
from app.rules.tables import BALANCE_RULES, BalanceRule
from app.store.settlements import COUNTED_STATUS, Settlement

SETTLED = frozenset(r.resource_type for r in BALANCE_RULES)
PAYMENT = "PaymentReconciliation"
BALANCED = "balanced"


class BalanceReads(Protocol):
    """What the balance rules read: the targets' totals and what is already paid on them."""

    allow_overpayment: bool

    async def amounts(self, ids_by_type: Mapping[str, list[str]]) -> dict[tuple[str, str], dict]:
        """`{(type, id): resource}` with at least status, total, totalNet, totalGross."""
        ...

    async def settlements(self, targets: list[str]) -> dict[str, Settlement]: ...


def _rule(resource_type: str, kind: str) -> BalanceRule | None:
    return next((r for r in BALANCE_RULES if r.resource_type == resource_type and r.kind == kind), None)


def _text(amounts: Mapping[str | None, Decimal]) -> str:
    return ", ".join(f"{v} {c or '(no currency)'}" for c, v in sorted(amounts.items(), key=lambda i: i[0] or "")) or "0"


def _refuse(rule: BalanceRule, message: str, expression: str, status: Any) -> FinGateError:
    text = f"{message}: {rule.fix}"
    return FinGateError(
        STATUS_RULE,
        text,
        issues=[outcome_issue(f"[{rule.rule}] {text}", expression, code="business-rule")],
        extensions={"rule": rule.rule, "currentStatus": status, "allowed": []},
    )


def _over(got: Amounts, cap: Amounts) -> bool:
    """Some currency paid beyond its cap (a currency the target has no total in is capped at zero)."""
    return any(value > cap.get(currency, Decimal(0)) for currency, value in got.items())


def contributions(payment: Mapping[str, Any] | None) -> tuple[dict[str, Amounts], dict[str, str]]:
    """What an active PaymentReconciliation pays each settled target (`Type/id`), and where (the first allocation)."""
    paying: dict[str, Amounts] = {}
    where: dict[str, str] = {}
    if not payment or payment.get("status") != COUNTED_STATUS or not isinstance(payment.get("allocation"), list):
        return paying, where
    for i, allocation in enumerate(payment["allocation"]):
        target = local_reference(allocation.get("target")) if isinstance(allocation, dict) else None
        if target is None or target[0] not in SETTLED:
            continue
        ref = "/".join(target)
        paying[ref] = add(paying.get(ref, {}), money(allocation.get("amount")))
        where.setdefault(ref, f"{PAYMENT}.allocation[{i}].amount")
    return paying, where


def _same(a: Amounts, b: Amounts) -> bool:
    return all(a.get(c, Decimal(0)) == b.get(c, Decimal(0)) for c in {*a, *b})


async def _payment_written(new: dict, old: dict | None, reads: BalanceReads, final: bool) -> list[FinGateError]:
    """`final`: `reads` show the state after the write (and after every other write of its transaction), so what
    they say is paid already holds it; a target counts as balanced if it was before the transaction
    (`reads.statuses_before`), since a transaction may pay an Invoice and balance it at once."""
    before, _ = contributions(old)
    after, where = contributions(new)
    changed = [t for t in dict.fromkeys([*after, *before]) if not _same(after.get(t, {}), before.get(t, {}))]
    if not changed:
        return []
    targets = await reads.amounts(by_type((rtype, id) for rtype, id in (ref.split("/", 1) for ref in changed)))
    stored = await reads.settlements(changed)
    errors = []
    for ref in changed:
        rtype, id = ref.split("/", 1)
        target = targets.get((rtype, id))
        if target is None:
            continue  # a missing target is the reference rules' to report
        delta = subtract(after.get(ref, {}), before.get(ref, {}))
        got = paid(stored.get(ref, Settlement()))
        if not final:
            got = add(got, delta)
        expression = where.get(ref, f"{PAYMENT}.status")
        status = target.get("status")
        was = getattr(reads, "statuses_before", {}).get(ref, status) if final else status
        balanced = _rule(rtype, "balanced-when-settled")
        if balanced is not None and was == BALANCED:
            message = f"{ref} is balanced; this write would change what is paid on it by {_text(delta)}"
            errors.append(_refuse(balanced, message, expression, status))
            continue
        within = _rule(rtype, "within-total")
        raised = any(v > 0 for v in delta.values())
        if within is not None and raised and not reads.allow_overpayment and _over(got, limit(rtype, target)):
            message = (
                f"{expression} would bring {ref} to {_text(got)} paid against its {within.element} "
                f"of {_text(limit(rtype, target))}"
            )
            errors.append(_refuse(within, message, expression, status))
    return errors


async def _target_written(resource_type: str, new: dict, old: dict, reads: BalanceReads) -> list[FinGateError]:
    balanced = _rule(resource_type, "balanced-when-settled")
    within = _rule(resource_type, "within-total")
    into_balanced = balanced is not None and new.get("status") == BALANCED and old.get("status") != BALANCED
    cap, before = limit(resource_type, new), limit(resource_type, old)
    lowered = within is not None and not reads.allow_overpayment and not _same(cap, before)
    if not (into_balanced or lowered):
        return []
    ref = f"{resource_type}/{new.get('id') or old.get('id')}"
    got = paid((await reads.settlements([ref])).get(ref, Settlement()))
    status = old.get("status")
    if into_balanced and balanced is not None:
        balance = subtract(payable(new), got)
        if any(v != 0 for v in balance.values()):
            message = f"{ref} cannot move to '{BALANCED}' with a balance of {_text(balance)} ({_text(got)} paid)"
            return [_refuse(balanced, message, f"{resource_type}.status", status)]
    if lowered and within is not None and _over(got, cap):
        message = f"{ref}'s {within.element} of {_text(cap)} would be below the {_text(got)} already paid on it"
        return [_refuse(within, message, f"{resource_type}.{within.element}", status)]
    return []


async def check_balances(
    resource_type: str, new: dict, old: dict | None, reads: Any, final: bool = False
) -> list[FinGateError]:
    """The balance rules a write of `resource_type` could break; `old` is None on create. `final`: `reads` show
    the state after the write (a transaction's, after all of its writes) rather than before it."""
    if resource_type == PAYMENT:
        return await _payment_written(new, old, reads, final)
    if resource_type in SETTLED and old is not None:
        return await _target_written(resource_type, new, old, reads)
    return []
