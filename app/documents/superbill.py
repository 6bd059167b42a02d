"""The superbill of a Claim or an Encounter: practice, patient, insurance, diagnoses and procedures with fees and totals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from app.billing.sums import add
from app.documents.cms1500 import Claim1500, group_number, insured_id, plan_name
from app.documents.layout import Sheet
from app.documents.sources import LISTED, Sources
from app.documents.values import (
    NPI,
    SSN,
    TAX_ID,
    address,
    amount,
    code,
    coding,
    day,
    display,
    human_name,
    identifier,
    money_text,
    phone,
    text,
)
from app.fhir.decimals import plain_text


def _address_text(resource: dict[str, Any]) -> str | None:
    found = address(resource)
    if not found:
        return None
    return text(", ".join(p for p in (found["street"], found["city"], f"{found['state']} {found['zip']}".strip()) if p))


def _diagnosis_rows(claims: list[dict[str, Any]], encounter: dict[str, Any] | None) -> list[list[str | None]]:
    rows: list[list[str | None]] = []
    if encounter is not None:
        for d in encounter.get("diagnosis") or ():
            for condition in (d.get("condition") or ()) if isinstance(d, dict) else ():
                concept = condition.get("concept") if isinstance(condition, dict) else None
                if concept:
                    rows.append(["Encounter", code(concept), (coding(concept) or {}).get("system"), display(concept)])
    for claim in claims:
        for d in Claim1500(Sources(claim)).diagnoses():
            concept = d.get("diagnosisCodeableConcept")
            label = f"#{d.get('sequence')}" if encounter is None else f"Claim/{claim.get('id')} #{d.get('sequence')}"
            rows.append([label, code(concept), (coding(concept) or {}).get("system"), display(concept)])
    return rows


def _served(item: dict[str, Any]) -> str | None:
    period = item.get("servicedPeriod")
    if isinstance(period, dict):
        return f"{day(period.get('start')) or ''}–{day(period.get('end')) or ''}"
    return day(item.get("servicedDate"))


def _procedure_rows(claim: dict[str, Any]) -> tuple[list[list[str | None]], list[dict[str | None, Decimal]]]:
    rows: list[list[str | None]] = []
    fees: list[dict[str | None, Decimal]] = []
    for item in claim.get("item") or ():
        if not isinstance(item, dict):
            continue
        service = item.get("productOrService")
        modifiers = " ".join(code(m) or "" for m in item.get("modifier") or () if isinstance(m, dict))
        quantity = amount(item.get("quantity"))
        rows.append(
            [
                f"#{item.get('sequence')}",
                _served(item),
                code(service),
                display(service),
                modifiers or None,
                plain_text(quantity) if quantity is not None else None,
                money_text(item.get("unitPrice")),
                money_text(item.get("net")),
            ]
        )
        if (net := amount(item.get("net"))) is not None:
            fees.append({item["net"].get("currency"): net})
    return rows, fees


def _total_text(amounts: dict[str | None, Decimal]) -> str | None:
    parts = [
        f"{plain_text(v)} {c}" if c else plain_text(v) for c, v in sorted(amounts.items(), key=lambda kv: kv[0] or "")
    ]
    return " + ".join(parts) or None


def render_superbill(sources: Sources) -> bytes:
    """A Claim's superbill (sources.main a Claim) or an Encounter's (its Claims in sources.claims)."""
    main = sources.main
    is_encounter = main.get("resourceType") == "Encounter"
    claims = sources.claims if is_encounter else [main]
    pdf = Sheet(f"Superbill {main.get('resourceType')} {main.get('id')}")
    when = day((main.get("actualPeriod") or {}).get("start")) if is_encounter else day(main.get("created"))
    pdf.title_block("SUPERBILL", f"{main.get('resourceType')}/{main.get('id')} · {when or 'undated'} · FinGate")

    c = Claim1500(sources)
    practice = c.billing_provider if not is_encounter else sources.get("provider") or {}
    pdf.heading("Practice")
    pdf.pairs(
        [
            (
                "Name",
                human_name(practice, last_first=False)
                or text((main.get("provider") or main.get("serviceProvider") or {}).get("display")),
            ),
            ("Address", _address_text(practice)),
            ("Phone", phone(practice)),
            ("NPI", identifier(practice, NPI)),
            ("Tax ID", identifier(practice, TAX_ID) or identifier(practice, SSN)),  # the EIN, else the SSN
        ]
    )
    team = [
        human_name(sources.get(key), last_first=False)
        for key in sorted(k for k in sources.related if k.startswith("careTeam/"))
        if sources.get(key) and (sources.get(key) or {}).get("resourceType") != "PractitionerRole"
    ]
    if team:
        pdf.pairs([("Rendering provider(s)", ", ".join(n for n in team if n))])

    patient = sources.get("patient") or {}
    pdf.heading("Patient")
    pdf.pairs(
        [
            ("Name", human_name(patient)),
            ("Birth date", day(patient.get("birthDate"))),
            ("Address", _address_text(patient)),
            ("Phone", phone(patient)),
        ]
    )

    pdf.heading("Insurance")
    insurer = sources.get("insurer") or {}
    pdf.pairs(
        [
            ("Insurer", human_name(insurer) or text((main.get("insurer") or {}).get("display"))),
            ("Member ID", insured_id(c)),
            ("Group", group_number(c)),
            ("Plan", plan_name(c)),
            ("Subscriber", human_name(sources.get("subscriber"))),
        ]
    )

    pdf.heading("Diagnoses")
    diagnoses = _diagnosis_rows(claims, main if is_encounter else None)
    pdf.rows(["from", "code", "system", "description"], [130, 60, 160, 154], diagnoses, set())

    pdf.heading("Procedures and fees")
    fees: list[dict[str | None, Decimal]] = []
    for claim in claims:
        rows, claim_fees = _procedure_rows(claim)
        fees += claim_fees
        if is_encounter:
            pdf.note(f"Claim/{claim.get('id')} · created {day(claim.get('created')) or 'undated'}")
        pdf.rows(
            ["item", "date", "code", "description", "modifiers", "units", "unit price", "fee"],
            [36, 88, 44, 128, 50, 30, 64, 64],
            rows,
            {5, 6, 7},
            whole=frozenset({1, 2, 4}),  # a service period, the code and every modifier, never cut
        )
    pdf.ln(4)
    pdf.pairs([("Total of fees", _total_text(add(*fees)))])
    if not is_encounter:
        pdf.pairs(
            [("Claim total", money_text(main.get("total"))), ("Paid by patient", money_text(main.get("patientPaid")))]
        )
    if is_encounter and not claims:
        pdf.note(f"No Claim names Encounter/{main.get('id')} in its items: there are no procedures or fees to list.")
    if sources.more:
        pdf.note(f"More than {LISTED} Claims name this Encounter: the first {LISTED} by date are listed.")
    if sources.withheld:
        pdf.note("Not readable with this token's scopes: " + ", ".join(sorted(sources.withheld)) + ".")
    pdf.note("Submit this superbill to your insurer with your claim. Amounts are as recorded, with their currency.")
    return pdf.bytes()
