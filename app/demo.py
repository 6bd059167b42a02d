"""Deterministic demo data that shows what FinGate is for: payments walked to the claims they settle."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.fhir.model import SERVED_RESOURCES
from app.fhir.values import Resource
from app.load import Item, LoadReport, load, read_items
from app.writes import Writer

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "schema" / "examples"
SEED = 20261123
CLAIMS = 20
PAYMENTS = 3
CENT = Decimal("0.01")

_CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
_PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/payment-type"
SERVICES = [  # (CPT code, display, unit price): shared with bench/data.py
    ("99213", "Office visit, established patient", Decimal("125.00")),
    ("85025", "Complete blood count", Decimal("42.50")),
    ("80053", "Comprehensive metabolic panel", Decimal("61.10")),
    ("71046", "Chest X-ray, 2 views", Decimal("98.40")),
    ("93000", "Electrocardiogram", Decimal("57.35")),
    ("97110", "Therapeutic exercise, 15 min", Decimal("38.90")),
]


def _usd(value: Decimal) -> Resource:
    return {"value": value.quantize(CENT), "currency": "USD"}


def _ref(rtype: str, id: str, display: str | None = None) -> Resource:
    ref: Resource = {"reference": f"{rtype}/{id}"}
    if display:
        ref["display"] = display
    return ref


def demo_resources(seed: int = SEED) -> list[Resource]:
    """The demo set: one payer, a clinic, patients, 20 Claims, their ClaimResponses, 3 payments, an Invoice."""
    rnd = random.Random(seed)
    out: list[Resource] = [
        {
            "resourceType": "Organization",
            "id": "demo-payer",
            "active": True,
            "name": "Acme Health Insurance",
            "identifier": [{"system": "http://example.org/payers", "value": "ACME-01"}],
        },
        {"resourceType": "Organization", "id": "demo-clinic", "active": True, "name": "Riverside Clinic"},
    ]
    patients = [
        ("demo-patient-1", "Rivera", "Ana"),
        ("demo-patient-2", "Okafor", "Chidi"),
        ("demo-patient-3", "Lindqvist", "Maja"),
    ]
    for pid, family, given in patients:
        out.append(
            {"resourceType": "Patient", "id": pid, "name": [{"family": family, "given": [given]}], "gender": "unknown"}
        )
        out.append(
            {
                "resourceType": "Coverage",
                "id": f"{pid}-coverage",
                "status": "active",
                "kind": "insurance",
                "beneficiary": _ref("Patient", pid),
                "insurer": _ref("Organization", "demo-payer", "Acme Health Insurance"),
            }
        )
    claims: list[tuple[str, str, Decimal, Decimal]] = []
    for n in range(1, CLAIMS + 1):
        pid = patients[(n - 1) % len(patients)][0]
        day = f"2026-10-{n:02d}"
        items = []
        total = Decimal(0)
        for seq in range(1, rnd.randint(1, 3) + 1):
            code, display, price = rnd.choice(SERVICES)
            qty = rnd.randint(1, 3)
            net = price * qty
            total += net
            items.append(
                {
                    "sequence": seq,
                    "productOrService": {
                        "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code, "display": display}]
                    },
                    "servicedDate": day,
                    "quantity": {"value": qty},
                    "unitPrice": _usd(price),
                    "net": _usd(net),
                }
            )
        cid = f"demo-claim-{n:02d}"
        out.append(
            {
                "resourceType": "Claim",
                "id": cid,
                "status": "active",
                "type": {"coding": [{"system": _CLAIM_TYPE, "code": "professional"}]},
                "use": "claim",
                "patient": _ref("Patient", pid),
                "created": f"{day}T10:00:00Z",
                "insurer": _ref("Organization", "demo-payer", "Acme Health Insurance"),
                "provider": _ref("Organization", "demo-clinic", "Riverside Clinic"),
                "priority": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]
                },
                "insurance": [{"sequence": 1, "focal": True, "coverage": _ref("Coverage", f"{pid}-coverage")}],
                "item": items,
                "total": _usd(total),
            }
        )
        paid = (total * Decimal(rnd.choice(["0.80", "0.90", "1.00"]))).quantize(CENT)
        out.append(
            {
                "resourceType": "ClaimResponse",
                "id": f"demo-claimresponse-{n:02d}",
                "status": "active",
                "type": {"coding": [{"system": _CLAIM_TYPE, "code": "professional"}]},
                "use": "claim",
                "patient": _ref("Patient", pid),
                "created": f"2026-11-{(n % 5) + 1:02d}T09:00:00Z",
                "insurer": _ref("Organization", "demo-payer", "Acme Health Insurance"),
                "requestor": _ref("Organization", "demo-clinic"),
                "request": _ref("Claim", cid),
                "outcome": "complete",
                "disposition": "Claim settled as per contract.",
                "total": [
                    {
                        "category": {
                            "coding": [
                                {"system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "benefit"}
                            ]
                        },
                        "amount": _usd(paid),
                    }
                ],
                "payment": {
                    "type": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/ex-paymenttype", "code": "complete"}
                        ]
                    },
                    "amount": _usd(paid),
                },
            }
        )
        claims.append((cid, pid, total, paid))
    per_payment = -(-CLAIMS // PAYMENTS)
    for p in range(PAYMENTS):
        batch = claims[p * per_payment : (p + 1) * per_payment]
        amount = sum((paid for *_, paid in batch), Decimal(0))
        out.append(
            {
                "resourceType": "PaymentReconciliation",
                "id": f"demo-payment-{p + 1}",
                "status": "active",
                "type": {"coding": [{"system": _PAYMENT_TYPE, "code": "payment"}]},
                "created": f"2026-11-{10 + p:02d}T12:00:00Z",
                "date": f"2026-11-{10 + p:02d}",
                "paymentIssuer": _ref("Organization", "demo-payer", "Acme Health Insurance"),
                "requestor": _ref("Organization", "demo-clinic"),
                "outcome": "complete",
                "disposition": f"Bulk payment {p + 1} of {PAYMENTS}",
                "amount": _usd(amount),
                "paymentIdentifier": {"system": "http://example.org/payments", "value": f"EFT-2026-{p + 1:04d}"},
                "allocation": [
                    {
                        "identifier": {
                            "system": "http://example.org/payments",
                            "value": f"EFT-2026-{p + 1:04d}-{i + 1}",
                        },
                        "target": _ref("Claim", cid),
                        "response": _ref("ClaimResponse", cid.replace("claim", "claimresponse")),
                        "submitter": _ref("Organization", "demo-clinic"),
                        "payee": _ref("Organization", "demo-clinic"),
                        "date": f"2026-11-{10 + p:02d}",
                        "amount": _usd(paid),
                    }
                    for i, (cid, _pid, _total, paid) in enumerate(batch)
                ],
            }
        )
    invoice_total = Decimal("184.60")
    out.append(
        {
            "resourceType": "Account",
            "id": "demo-account-1",
            "status": "active",
            "name": "Ana Rivera, patient account",
            "subject": [_ref("Patient", "demo-patient-1")],
            "owner": _ref("Organization", "demo-clinic"),
        }
    )
    out.append(
        {
            "resourceType": "Invoice",
            "id": "demo-invoice-1",
            "status": "issued",
            "account": _ref("Account", "demo-account-1"),
            "subject": _ref("Patient", "demo-patient-1"),
            "recipient": _ref("Patient", "demo-patient-1"),
            "date": "2026-11-02",
            "issuer": _ref("Organization", "demo-clinic"),
            "totalNet": _usd(invoice_total),
            "totalGross": _usd(invoice_total),
        }
    )
    out.append(
        {
            "resourceType": "PaymentReconciliation",
            "id": "demo-payment-patient-1",
            "status": "active",
            "type": {"coding": [{"system": _PAYMENT_TYPE, "code": "payment"}]},
            "created": "2026-11-15T16:20:00Z",
            "date": "2026-11-15",
            "paymentIssuer": _ref("Patient", "demo-patient-1"),
            "outcome": "complete",
            "method": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0570", "code": "CCCA"}]},
            "amount": _usd(invoice_total),
            "allocation": [{"target": _ref("Invoice", "demo-invoice-1"), "amount": _usd(invoice_total)}],
        }
    )
    return out


# Official examples that break R5's own rules; FinGate refuses them like any other bad input.
INVALID_EXAMPLES: dict[str, str] = {
    "Encounter/example": "careTeam points at Encounter/example; R5 allows only a CareTeam there",
}


def _key(item: Item) -> str:
    return f"{item.resources[0].get('resourceType')}/{item.resources[0].get('id')}"


def example_items(*, include_invalid: bool = False) -> list[Item]:
    """The vendored R5 examples of the served types (the others are there for reference only)."""
    items, _ = read_items([EXAMPLES_DIR])
    served = set(SERVED_RESOURCES)
    return [
        item
        for item in items
        if item.resources[0].get("resourceType") in served and (include_invalid or _key(item) not in INVALID_EXAMPLES)
    ]


WITHDRAWN_CLAIM = "demo-claim-withdrawn"


def _withdrawn_claim() -> Resource:
    """A draft the clinic withdrew before submitting it: created, then deleted (its history shows the delete)."""
    return {
        "resourceType": "Claim",
        "id": WITHDRAWN_CLAIM,
        "status": "draft",
        "type": {"coding": [{"system": _CLAIM_TYPE, "code": "professional"}]},
        "use": "claim",
        "patient": _ref("Patient", "demo-patient-2"),
        "created": "2026-11-05",
        "insurance": [{"sequence": 1, "focal": True, "coverage": _ref("Coverage", "demo-patient-2-coverage")}],
        "total": _usd(Decimal("57.35")),
    }


async def load_demo(writer: Writer, progress: Any = None) -> LoadReport:
    """The R5 examples and the demo set; then the patient's payment settles the demo Invoice, and a withdrawn
    draft claim is deleted."""
    items = example_items() + [Item(f"demo:{r['resourceType']}/{r['id']}", [r]) for r in demo_resources()]
    report = await load(writer, [], progress, items=items)
    invoice = await writer.store.get("Invoice", "demo-invoice-1")
    if invoice is not None and invoice.get("status") == "issued":
        await writer.update("Invoice", "demo-invoice-1", {**invoice, "status": "balanced"})
    if not await writer.store.history("Claim", WITHDRAWN_CLAIM):
        await writer.create("Claim", _withdrawn_claim(), keep_id=True)
        await writer.delete("Claim", WITHDRAWN_CLAIM)
    return report
