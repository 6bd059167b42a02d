"""Money: the ISO 4217 minor units (schema/iso4217-minor-units.json) and the amounts paid or allocated held to them."""

from __future__ import annotations

import json
from functools import cache

from app.fhir.model import SCHEMA_DIR

# Money that changes hands: what is paid, tendered, returned, adjusted on a payment or allocated to a
# claim. Such an amount has no more decimal places than its currency's minor unit ("10.005" USD is
# no payment). Prices, unit prices, factors, taxes, nets, totals, balances and adjudicated amounts
# are computed or quoted and may carry more digits; they are not in this table.
PAID_AMOUNTS: tuple[str, ...] = (
    "PaymentReconciliation.amount",
    "PaymentReconciliation.tenderedAmount",
    "PaymentReconciliation.returnedAmount",
    "PaymentReconciliation.allocation.amount",
    "PaymentNotice.amount",
    "ClaimResponse.payment.amount",
    "ClaimResponse.payment.adjustment",
    "ExplanationOfBenefit.payment.amount",
    "ExplanationOfBenefit.payment.adjustment",
    "Claim.patientPaid",
    "Claim.item.patientPaid",
    "Claim.item.detail.patientPaid",
    "Claim.item.detail.subDetail.patientPaid",
    "ExplanationOfBenefit.patientPaid",
    "ExplanationOfBenefit.item.patientPaid",
    "ExplanationOfBenefit.item.detail.patientPaid",
    "ExplanationOfBenefit.item.detail.subDetail.patientPaid",
    "ExplanationOfBenefit.addItem.patientPaid",
    "ExplanationOfBenefit.addItem.detail.patientPaid",
    "ExplanationOfBenefit.addItem.detail.subDetail.patientPaid",
)


@cache
def minor_units() -> dict[str, int | None]:
    """ISO 4217 code -> decimal places of its minor unit (None: the list says N.A., e.g. XAU)."""
    table = json.loads((SCHEMA_DIR / "iso4217-minor-units.json").read_text())
    return {**table["withdrawn"], **table["minorUnits"]}


def minor_unit(currency: str) -> int | None:
    """The decimal places an amount paid in `currency` may have; None when there is no rule to hold it to."""
    return minor_units().get(currency)
