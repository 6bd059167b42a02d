"""What is billed, paid and outstanding, computed exactly: FinGate's billing views (README "Billing views")."""

from app.billing.aging import AGING, ITEMS_SHOWN, PARTY_TYPES, UNDATED, party_view
from app.billing.sums import Amounts, add, limit, listed, money, payable, subtract
from app.billing.views import CUT, NO_LEDGER, NO_SETTLEMENT, PAYMENTS_SHOWN, VIEW_TYPES, paid, view
from app.store.settlements import AccountLedger, Settlement

__all__ = [
    "AGING",
    "CUT",
    "ITEMS_SHOWN",
    "NO_LEDGER",
    "NO_SETTLEMENT",
    "PARTY_TYPES",
    "PAYMENTS_SHOWN",
    "UNDATED",
    "VIEW_TYPES",
    "AccountLedger",
    "Amounts",
    "Settlement",
    "add",
    "limit",
    "listed",
    "money",
    "paid",
    "party_view",
    "payable",
    "subtract",
    "view",
]
