"""The patient statement of an Invoice, or of a patient's open Invoices: charges, payments, adjustments, balance, aging."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from app.billing.aging import AGING, UNDATED, billed_on
from app.billing.sums import Amounts, add, payable
from app.documents.layout import Sheet
from app.documents.sources import LISTED, Sources
from app.documents.values import address, amounts_text, code, day, display, human_name, money_text, phone, text
from app.fhir.decimals import plain_text

# Invoice price component types (R5 invoice-priceComponentType) by how a statement shows them.
CHARGES = ("base", "surcharge", "tax")
ADJUSTMENTS = ("deduction", "discount")
AGE_LABELS = {
    "days0to30": "0–30 days",
    "days31to60": "31–60 days",
    "days61to90": "61–90 days",
    "over90": "over 90 days",
    UNDATED: "undated",
}


def age(billed: Any, as_of: date) -> str:
    """The aging bucket (app.billing.aging's) of something billed on `billed` (a FHIR date), counted to `as_of`."""
    found = billed_on(billed)
    if found is None:
        return UNDATED
    days = (as_of - found).days
    return next(name for name, most in AGING if most is None or days <= most)


def _amounts(values: list[dict[str, Any]]) -> Amounts:
    """A billing view's amount list as Amounts."""
    return {v.get("currency"): v["value"] for v in values if isinstance(v.get("value"), Decimal | int)}


def _text(amounts: Amounts) -> str:
    parts = [
        f"{plain_text(v)} {c}" if c else plain_text(v) for c, v in sorted(amounts.items(), key=lambda kv: kv[0] or "")
    ]
    return " + ".join(parts) or "0"


def _line_rows(invoice: dict[str, Any]) -> tuple[list[list[str | None]], list[list[str | None]]]:
    """Charges (base, surcharge, tax components) and adjustments (deduction, discount), line by line."""
    charges: list[list[str | None]] = []
    adjustments: list[list[str | None]] = []
    for line in invoice.get("lineItem") or ():
        if not isinstance(line, dict):
            continue
        concept = line.get("chargeItemCodeableConcept")
        what = display(concept) or code(concept) or text((line.get("chargeItemReference") or {}).get("display"))
        what = what or text((line.get("chargeItemReference") or {}).get("reference"))
        served = day(line.get("servicedDate")) or day((line.get("servicedPeriod") or {}).get("start"))
        for component in line.get("priceComponent") or ():
            if not isinstance(component, dict):
                continue
            kind = component.get("type")
            row = [
                str(line.get("sequence") or ""),
                served,
                what,
                display(component.get("code")) or kind,
                money_text(component.get("amount")),
            ]
            if kind in ADJUSTMENTS:
                adjustments.append(row)
            elif kind in CHARGES:
                charges.append(row)
    for component in invoice.get("totalPriceComponent") or ():
        if isinstance(component, dict) and component.get("type") in ADJUSTMENTS:
            adjustments.append(
                [
                    "total",
                    None,
                    "whole invoice",
                    display(component.get("code")) or component.get("type"),
                    money_text(component.get("amount")),
                ]
            )
    return charges, adjustments


def _parties(pdf: Sheet, sources: Sources, as_of: date) -> None:
    issuer = sources.get("issuer") or {}
    patient = sources.get("patient") or {}
    found = address(patient)
    pdf.heading("From / To")
    pdf.pairs(
        [
            ("From", human_name(issuer, last_first=False)),
            ("Statement date", as_of.isoformat()),
            ("To", human_name(patient, last_first=False)),
            (
                "Address",
                text(
                    ", ".join(
                        p for p in (found["street"], found["city"], f"{found['state']} {found['zip']}".strip()) if p
                    )
                )
                if found
                else None,
            ),
        ]
    )


def _aging(pdf: Sheet, owed: dict[str, list[Amounts]]) -> None:
    pdf.heading("Aging of the balance due")
    rows = [[AGE_LABELS[name], _text(add(*owed.get(name, [])))] for name in (*(n for n, _ in AGING), UNDATED)]
    pdf.rows(["billed", "balance due"], [200, 200], rows, {1})


def _how_to_pay(pdf: Sheet, sources: Sources, invoices: list[dict[str, Any]]) -> None:
    issuer = sources.get("issuer") or {}
    pdf.heading("How to pay")
    terms = [text(i.get("paymentTerms")) for i in invoices if text(i.get("paymentTerms"))]
    for term in dict.fromkeys(terms):
        pdf.note(str(term))
    if not invoices:
        pdf.note("No open invoice: nothing is due.")
        return
    ids = ", ".join(str(i.get("id")) for i in invoices)
    who = human_name(issuer, last_first=False) or "the issuer"
    contact = phone(issuer)
    pdf.note(f"Pay {who}, quoting invoice {ids}" + (f"; questions: {contact}." if contact else "."))


def render_statement(sources: Sources, as_of: date) -> bytes:
    """An Invoice's statement (sources.main an Invoice) or a Patient's (its open Invoices in sources.invoices)."""
    if sources.main.get("resourceType") == "Patient":
        return _patient_statement(sources, as_of)
    invoice = sources.main
    pdf = Sheet(f"Statement Invoice {invoice.get('id')}")
    pdf.title_block(
        "PATIENT STATEMENT",
        f"Invoice/{invoice.get('id')} · {day(invoice.get('date')) or 'undated'} · {invoice.get('status')} · FinGate",
    )
    _parties(pdf, sources, as_of)
    charges, adjustments = _line_rows(invoice)
    widths, headers = [36, 64, 200, 100, 104], ["line", "date", "service", "component", "amount"]
    pdf.heading("Charges")
    pdf.rows(headers, widths, charges, {4})
    pdf.pairs(
        [
            ("Total net", money_text(invoice.get("totalNet"))),
            ("Total gross (payable)", money_text(invoice.get("totalGross"))),
        ]
    )
    pdf.heading("Adjustments")
    pdf.rows(headers, widths, adjustments, {4})
    pdf.heading("Payments")
    view = sources.billing
    if view is None:
        pdf.note(
            "Payments are not readable with this token's scopes (PaymentReconciliation): the balance is not shown."
        )
    else:
        rows = [
            [p.get("date"), (p.get("payment") or {}).get("reference"), amounts_text(p.get("amount") or [])]
            for p in view.get("payments") or ()
        ]
        pdf.rows(["date", "payment", "amount"], [100, 250, 154], rows, {2})
        pdf.pairs(
            [("Paid", amounts_text(view.get("paid") or [])), ("Balance due", amounts_text(view.get("balance") or []))]
        )
        owed = _amounts(view.get("balance") or [])
        _aging(pdf, {age(invoice.get("date"), as_of): [owed]} if invoice.get("status") == "issued" else {})
    _how_to_pay(pdf, sources, [invoice])
    return pdf.bytes()


def _patient_statement(sources: Sources, as_of: date) -> bytes:
    patient = sources.main
    pdf = Sheet(f"Statement Patient {patient.get('id')}")
    pdf.title_block("PATIENT STATEMENT", f"Patient/{patient.get('id')} · open invoices · FinGate")
    _parties(pdf, sources, as_of)
    pdf.heading("Open invoices")
    rows: list[list[str | None]] = []
    owed: dict[str, list[Amounts]] = {}
    balances: list[Amounts] = []
    for invoice, view in sources.invoices:
        billed = payable(invoice)
        balance = _amounts(view.get("balance") or []) if view is not None else None
        rows.append(
            [
                str(invoice.get("id")),
                day(invoice.get("date")),
                _text(billed),
                amounts_text(view.get("paid") or []) if view else None,
                _text(balance) if balance is not None else None,
            ]
        )
        if balance is not None:
            owed.setdefault(age(invoice.get("date"), as_of), []).append(balance)
            balances.append(balance)
    pdf.rows(["invoice", "date", "charged", "paid", "balance due"], [120, 70, 104, 104, 106], rows, {2, 3, 4})
    if sources.more:
        pdf.note(f"More than {LISTED} open invoices: the oldest {LISTED} are listed.")
    if "payments" in sources.withheld:
        pdf.note("Payments are not readable with this token's scopes (PaymentReconciliation): balances are not shown.")
    else:
        pdf.pairs([("Balance due", _text(add(*balances)))])
        _aging(pdf, owed)
    _how_to_pay(pdf, sources, [i for i, _ in sources.invoices])
    return pdf.bytes()
