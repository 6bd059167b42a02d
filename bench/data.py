"""The benchmark's generated FHIR data: deterministic (fixed seed), valid R5, shaped like billing traffic."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from app.demo import SERVICES
from app.fhir.values import Resource

SEED = 5_2026
CENT = Decimal("0.01")
SIZES = (10, 50, 200)  # allocations per reconciliation, for the database-command counts
W1_SIZE = 50
W2_SIZE = 10
W2_COUNT = 20

_CPT = "http://www.ama-assn.org/go/cpt"
_ICD10 = "http://hl7.org/fhir/sid/icd-10"
_CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
_ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
_SERVICES = [*SERVICES, ("36415", "Routine venipuncture", Decimal("12.75"))]
_DIAGNOSES = [
    ("E11.9", "Type 2 diabetes mellitus"),
    ("I10", "Essential hypertension"),
    ("J06.9", "Acute upper respiratory infection"),
]
_FAMILIES = ["Rivera", "Okafor", "Lindqvist", "Nakamura", "Haddad", "Novak", "Silva", "Mensah"]
_GIVEN = ["Ana", "Chidi", "Maja", "Kenji", "Layla", "Petra", "Joao", "Ama"]


def usd(value: Decimal) -> Resource:
    return {"value": value.quantize(CENT), "currency": "USD"}


def ref(rtype: str, id: str, display: str | None = None) -> Resource:
    return {"reference": f"{rtype}/{id}", **({"display": display} if display else {})}


def concept(system: str, code: str, display: str | None = None) -> Resource:
    return {"coding": [{"system": system, "code": code, **({"display": display} if display else {})}]}


def organization(id: str, name: str) -> Resource:
    return {"resourceType": "Organization", "id": id, "active": True, "name": name,
            "identifier": [{"system": "http://example.org/orgs", "value": id.upper()}]}  # fmt: skip


def patient(rnd: random.Random, id: str) -> Resource:
    return {"resourceType": "Patient", "id": id, "active": True, "gender": rnd.choice(["female", "male", "unknown"]),
            "name": [{"family": rnd.choice(_FAMILIES), "given": [rnd.choice(_GIVEN)]}],
            "birthDate": f"19{rnd.randint(40, 99)}-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)}",
            "identifier": [{"system": "http://example.org/mrn", "value": f"MRN-{id}"}]}  # fmt: skip


def coverage(id: str, patient_id: str, payer: str) -> Resource:
    return {"resourceType": "Coverage", "id": id, "status": "active", "kind": "insurance",
            "beneficiary": ref("Patient", patient_id), "insurer": ref("Organization", payer)}  # fmt: skip


def claim_items(rnd: random.Random, n: int, day: str) -> list[Resource]:
    items = []
    for seq in range(1, n + 1):
        code, display, price = rnd.choice(_SERVICES)
        qty = rnd.randint(1, 3)
        items.append({"sequence": seq, "productOrService": concept(_CPT, code, display), "servicedDate": day,
                      "quantity": {"value": qty}, "unitPrice": usd(price), "net": usd(price * qty)})  # fmt: skip
    return items


def claim(rnd: random.Random, id: str | None, patient_id: str, payer: str, n_items: int) -> Resource:
    day = f"2026-{rnd.randint(1, 10):02d}-{rnd.randint(1, 28):02d}"
    items = claim_items(rnd, n_items, day)
    code, display = rnd.choice(_DIAGNOSES)
    out: Resource = {
        "resourceType": "Claim", "status": "active", "use": "claim", "created": f"{day}T10:00:00Z",
        "identifier": [{"system": "http://example.org/claims", "value": f"CLM-{id or 'new'}"}],
        "type": concept(_CLAIM_TYPE, "professional"), "patient": ref("Patient", patient_id),
        "insurer": ref("Organization", payer, "Acme Health Insurance"),
        "provider": ref("Organization", "bench-clinic", "Riverside Clinic"),
        "priority": concept("http://terminology.hl7.org/CodeSystem/processpriority", "normal"),
        "insurance": [{"sequence": 1, "focal": True, "coverage": ref("Coverage", f"{patient_id}-coverage")}],
        "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": concept(_ICD10, code, display)}],
        "item": items, "total": usd(sum((i["net"]["value"] for i in items), Decimal(0))),
    }  # fmt: skip
    if id is not None:
        out["id"] = id
    return out


def claim_response(rnd: random.Random, id: str, c: Resource) -> Resource:
    rate = Decimal(rnd.choice(["0.80", "0.90", "1.00"]))
    paid = (c["total"]["value"] * rate).quantize(CENT)
    items = [{"itemSequence": i["sequence"], "adjudication": [
        {"category": concept(_ADJUDICATION, "submitted"), "amount": i["net"]},
        {"category": concept(_ADJUDICATION, "benefit"), "amount": usd(i["net"]["value"] * rate)}]} for i in c["item"]]  # fmt: skip
    return {
        "resourceType": "ClaimResponse", "id": id, "status": "active", "use": "claim", "outcome": "complete",
        "type": c["type"], "patient": c["patient"], "created": c["created"], "insurer": c["insurer"],
        "requestor": ref("Organization", "bench-clinic"), "request": ref("Claim", c["id"]),
        "disposition": "Claim settled as per contract.", "item": items,
        "total": [{"category": concept(_ADJUDICATION, "benefit"), "amount": usd(paid)}],
        "payment": {"type": concept("http://terminology.hl7.org/CodeSystem/ex-paymenttype", "complete"), "amount": usd(paid)},
    }  # fmt: skip


def reconciliation(id: str, payer: str, settled: list[tuple[Resource, Resource]]) -> Resource:
    amounts = [r["payment"]["amount"]["value"] for _, r in settled]
    return {
        "resourceType": "PaymentReconciliation", "id": id, "status": "active", "outcome": "complete",
        "type": concept("http://terminology.hl7.org/CodeSystem/payment-type", "payment"),
        "created": "2026-11-10T12:00:00Z", "date": "2026-11-10", "disposition": f"Bulk payment {id}",
        "paymentIssuer": ref("Organization", payer, "Acme Health Insurance"), "requestor": ref("Organization", "bench-clinic"),
        "paymentIdentifier": {"system": "http://example.org/payments", "value": f"EFT-{id}"},
        "amount": usd(sum(amounts, Decimal(0))),
        "allocation": [
            {"identifier": {"system": "http://example.org/payments", "value": f"EFT-{id}-{n}"},
             "target": ref("Claim", c["id"]), "response": ref("ClaimResponse", r["id"]),
             "submitter": ref("Organization", "bench-clinic", "Riverside Clinic"),
             "payee": ref("Organization", "bench-clinic", "Riverside Clinic"),
             "date": "2026-11-10", "amount": r["payment"]["amount"]}
            for n, (c, r) in enumerate(settled, 1)
        ],
    }  # fmt: skip


@dataclass
class Fixture:
    """The query workloads' data: what to load, and the ids and search values the queries use."""

    resources: list[Resource]
    w1_ids: dict[int, str]  # allocations -> PaymentReconciliation id
    w2_payers: dict[int, str]  # allocations per reconciliation -> payment issuer reference
    w3_claim: str


def fixture(pool: int, w1_sizes: tuple[int, ...], w2_lists: dict[int, int]) -> Fixture:
    """`pool` Claims with 3 items and their ClaimResponses; a reconciliation per W1 size; per W2 size that many
    reconciliations of one payer (allocations cycle through the pool)."""
    rnd = random.Random(SEED)
    out = [organization("bench-payer", "Acme Health Insurance"), organization("bench-clinic", "Riverside Clinic")]
    patients = [f"bench-patient-{n}" for n in range(1, 21)]
    for pid in patients:
        out += [patient(rnd, pid), coverage(f"{pid}-coverage", pid, "bench-payer")]
    settled = []
    for n in range(pool):
        c = claim(rnd, f"bench-claim-{n}", patients[n % len(patients)], "bench-payer", 3)
        settled.append((c, claim_response(rnd, f"bench-claimresponse-{n}", c)))
    out += [r for pair in settled for r in pair]
    w1 = {k: f"bench-w1-{k}" for k in w1_sizes}
    out += [reconciliation(id, "bench-payer", [settled[i % pool] for i in range(k)]) for k, id in w1.items()]
    payers = {k: f"bench-payer-{k}" for k in w2_lists}
    for k, payer in payers.items():
        out.append(organization(payer, f"Payer {k}"))
        out += [
            reconciliation(f"bench-w2-{k}-{p}", payer, [settled[(p * k + i) % pool] for i in range(k)])
            for p in range(w2_lists[k])
        ]
    return Fixture(out, w1, {k: f"Organization/{p}" for k, p in payers.items()}, "bench-claim-0")


def new_claim(items: int = 10) -> Resource:
    """W4's claim: the server assigns the id."""
    c = claim(random.Random(SEED + 4), None, "bench-patient-1", "bench-payer", items)
    c.pop("resourceType")
    return c


def load_mix(total: int) -> list[Resource]:
    """W5: blocks of 25 (an Organization, 2 Patients, a Coverage, 10 Claims of 1-6 items, their ClaimResponses, a reconciliation)."""
    rnd = random.Random(SEED + 5)
    out: list[Resource] = []
    for b in range(-(-total // 25)):
        payer, pids = f"load-org-{b}", [f"load-patient-{b}-{i}" for i in (1, 2)]
        block = [
            organization(payer, f"Payer {b}"),
            *(patient(rnd, p) for p in pids),
            coverage(f"{pids[0]}-coverage", pids[0], payer),
        ]
        pairs = []
        for n in range(10):
            c = claim(rnd, f"load-claim-{b}-{n}", pids[n % 2], payer, rnd.randint(1, 6))
            pairs.append((c, claim_response(rnd, f"load-claimresponse-{b}-{n}", c)))
        block += [r for pair in pairs for r in pair]
        block.append(reconciliation(f"load-payment-{b}", payer, pairs))
        out += block
    return out[:total]
