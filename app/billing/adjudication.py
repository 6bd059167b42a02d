"""The `billing` view of an ExplanationOfBenefit: what a payer says it was billed, agreed to pay, and paid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.billing.sums import Amounts, add, listed, money, subtract
from app.store.settlements import ADJUDICATION_SYSTEM, BENEFIT

SUBMITTED = "submitted"  # the adjudication category of the amount billed (R5 adjudication codes, as BENEFIT)


def _category(total: Mapping[str, Any], code: str) -> bool:
    codings = (total.get("category") or {}).get("coding") or []
    return any(c.get("code") == code and c.get("system") in (None, ADJUDICATION_SYSTEM) for c in codings)


def totals(eob: Mapping[str, Any], code: str) -> Amounts:
    """Σ ExplanationOfBenefit.total.amount whose category is `code` (system adjudication, or none), per currency."""
    return add(*(money(t.get("amount")) for t in eob.get("total") or [] if isinstance(t, dict) and _category(t, code)))


def eob_view(eob: Mapping[str, Any]) -> dict[str, Any]:
    submitted, benefit = totals(eob, SUBMITTED), totals(eob, BENEFIT)
    payment = eob.get("payment")
    return {
        "submitted": listed(submitted),
        "adjudicated": listed(benefit),
        "paid": listed(money(payment.get("amount")) if isinstance(payment, dict) else {}),
        "patientShare": listed(subtract(submitted, benefit)),
    }
