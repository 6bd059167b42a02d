"""The PDF documents (app/documents): every filled CMS-1500 box read back with pypdf at its grid position and checked
against the data (a complete claim, the R5 Claim examples, the demo claims); superbills and statements line by line;
the same bytes for the same data; the routes' auth, compartments, tenants and JSON refusals."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.demo import example_items
from app.documents.cms1500 import BOXES, LINE_BOXES, SERVICE_LINES
from app.documents.values import DASH
from app.fhir.model import SERVED
from app.http import loads
from app.store import Store
from app.writes import Writer
from tests.documents_harness import (
    HEADER_EXPECTED,
    LINE_EXPECTED,
    ClaimData,
    _group,
    _id,
    _member_id,
    _part,
    _person,
    _phone,
    _plan,
    _s,
    _street,
    by_position,
    check_box,
    expected_form,
    missing_listed,
    pages,
    position,
    rows_of,
    texts,
    unfillable,
)
from tests.harness import client_for
from tests.tokens import authed_client, bearer, token

SOPT = "https://nahdo.org/sopt"
CPT = "http://www.ama-assn.org/go/cpt"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
NPI = "http://hl7.org/fhir/sid/us-npi"
EIN = "urn:oid:2.16.840.1.113883.4.4"


def _usd(value: str) -> dict[str, Any]:
    return {"value": Decimal(value), "currency": "USD"}


def _address(line: str, city: str, state: str, zip: str) -> dict[str, Any]:
    return {"use": "work", "line": [line], "city": city, "state": state, "postalCode": zip}


# A professional claim with everything the form asks for, and what it points at.
COMPLETE: list[dict[str, Any]] = [
    {
        "resourceType": "Organization",
        "id": "doc-practice",
        "name": "Maple Family Practice",
        "identifier": [{"system": NPI, "value": "1234567893"}, {"system": EIN, "value": "12-3456789"}],
        "contact": [
            {
                "address": _address("12 Maple St", "Springfield", "IL", "62701"),
                "telecom": [{"system": "phone", "value": "217-555-0100"}],
            }
        ],
    },
    {
        "resourceType": "Organization",
        "id": "doc-payer",
        "name": "Prairie Mutual",
        "contact": [{"address": _address("PO Box 100", "Chicago", "IL", "60601")}],
    },
    {
        "resourceType": "Patient",
        "id": "doc-patient",
        "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Q"]}],
        "gender": "female",
        "birthDate": "1980-04-09",
        "address": [{"use": "home", "line": ["5 Elm St"], "city": "Springfield", "state": "IL", "postalCode": "62704"}],
        "telecom": [{"system": "phone", "value": "217-555-0142"}],
        "identifier": [
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": "http://maple.example/mrn",
                "value": "MRN-0042",
            }
        ],
    },
    {
        "resourceType": "Practitioner",
        "id": "doc-practitioner",
        "name": [{"family": "Lee", "given": ["Ann"]}],
        "identifier": [{"system": NPI, "value": "1987654321"}],
    },
    {
        "resourceType": "Location",
        "id": "doc-facility",
        "name": "Maple Clinic Annex",
        "address": {"line": ["14 Maple St"], "city": "Springfield", "state": "IL", "postalCode": "62701"},
        "identifier": [{"system": NPI, "value": "1555555555"}],
    },
    {
        "resourceType": "Coverage",
        "id": "doc-coverage",
        "status": "active",
        "kind": "insurance",
        "type": {"coding": [{"system": SOPT, "code": "5"}]},
        "subscriber": {"reference": "Patient/doc-patient"},
        "subscriberId": [{"value": "PMX-778899"}],
        "beneficiary": {"reference": "Patient/doc-patient"},
        "relationship": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": "self"}]
        },
        "insurer": {"reference": "Organization/doc-payer"},
        "class": [
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "group"}]
                },
                "value": {"value": "GRP-5501"},
            },
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]
                },
                "value": {"value": "GOLD"},
                "name": "Prairie Gold PPO",
            },
        ],
    },
    {
        "resourceType": "Coverage",
        "id": "doc-coverage-2",
        "status": "active",
        "kind": "insurance",
        "subscriber": {"reference": "Patient/doc-patient"},
        "beneficiary": {"reference": "Patient/doc-patient"},
        "insurer": {"reference": "Organization/doc-payer"},
        "class": [
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "group"}]
                },
                "value": {"value": "SEC-77"},
            },
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]
                },
                "value": {"value": "S1"},
                "name": "Prairie Secondary",
            },
        ],
    },
    {
        "resourceType": "Claim",
        "id": "doc-claim",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim",
        "patient": {"reference": "Patient/doc-patient"},
        "created": "2026-11-03",
        "insurer": {"reference": "Organization/doc-payer"},
        "provider": {"reference": "Organization/doc-practice"},
        "facility": {"reference": "Location/doc-facility"},
        "priority": {"coding": [{"code": "normal"}]},
        "payee": {"type": {"coding": [{"code": "provider"}]}},
        "careTeam": [{"sequence": 1, "provider": {"reference": "Practitioner/doc-practitioner"}}],
        "supportingInfo": [
            {
                "sequence": 1,
                "category": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/claiminformationcategory", "code": "onset"}
                    ]
                },
                "timingDate": "2026-10-30",
            }
        ],
        "diagnosis": [
            {"sequence": 1, "diagnosisCodeableConcept": {"coding": [{"system": ICD10, "code": "J06.9"}]}},
            {"sequence": 2, "diagnosisCodeableConcept": {"coding": [{"system": ICD10, "code": "R05.9"}]}},
        ],
        "insurance": [
            {
                "sequence": 1,
                "focal": True,
                "coverage": {"reference": "Coverage/doc-coverage"},
                "preAuthRef": ["PA-3141"],
            },
            {"sequence": 2, "focal": False, "coverage": {"reference": "Coverage/doc-coverage-2"}},
        ],
        "item": [
            {
                "sequence": 1,
                "careTeamSequence": [1],
                "diagnosisSequence": [1, 2],
                "productOrService": {"coding": [{"system": CPT, "code": "99213", "display": "Office visit"}]},
                "modifier": [{"coding": [{"code": "25"}]}],
                "servicedDate": "2026-11-03",
                "locationCodeableConcept": {"coding": [{"code": "11"}]},
                "quantity": {"value": 1},
                "unitPrice": _usd("125.00"),
                "net": _usd("125.00"),
            },
            {
                "sequence": 2,
                "careTeamSequence": [1],
                "diagnosisSequence": [1],
                "productOrService": {"coding": [{"system": CPT, "code": "87880", "display": "Strep test"}]},
                "modifier": [{"coding": [{"code": "QW"}]}],
                "servicedPeriod": {"start": "2026-11-03", "end": "2026-11-04"},
                "locationCodeableConcept": {"coding": [{"code": "11"}]},
                "quantity": {"value": 2},
                "unitPrice": _usd("18.25"),
                "net": _usd("36.50"),
            },
        ],
        "patientPaid": _usd("20.00"),
        "total": _usd("161.50"),
    },
    {
        "resourceType": "Invoice",
        "id": "doc-invoice",
        "status": "issued",
        "subject": {"reference": "Patient/doc-patient"},
        "recipient": {"reference": "Patient/doc-patient"},
        "issuer": {"reference": "Organization/doc-practice"},
        "date": "2026-10-01",
        "lineItem": [
            {
                "sequence": 1,
                "servicedDate": "2026-09-28",
                "chargeItemCodeableConcept": {"coding": [{"system": CPT, "code": "99213", "display": "Office visit"}]},
                "priceComponent": [
                    {"type": "base", "amount": _usd("100.00")},
                    {"type": "discount", "code": {"text": "Prompt-pay discount"}, "amount": _usd("-10.00")},
                    {"type": "tax", "amount": _usd("4.50")},
                ],
            }
        ],
        "totalNet": _usd("90.00"),
        "totalGross": _usd("94.50"),
        "paymentTerms": "Pay within 30 days by card at maple.example/pay.",
    },
    {
        "resourceType": "PaymentReconciliation",
        "id": "doc-payment",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/payment-type", "code": "payment"}]},
        "created": "2026-11-05",
        "date": "2026-11-05",
        "amount": _usd("40.00"),
        "allocation": [{"target": {"reference": "Invoice/doc-invoice"}, "amount": _usd("40.00")}],
    },
]

# A claim for the rules the examples and demo data never reach: an auto accident and its state, a hospital stay,
# additional information, four modifiers and a service period on a line, a line in another currency, and more
# lines than one form holds.
EDGE_CLAIM: dict[str, Any] = {
    **copy.deepcopy(next(r for r in COMPLETE if r["id"] == "doc-claim")),
    "id": "doc-claim-edge",
    "status": "draft",
    "accident": {
        "date": "2026-10-29",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "MVA"}]},
        "locationAddress": {"city": "Peoria", "state": "IL"},
    },
    "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/doc-coverage"}}],
    "provider": {"reference": "Organization/doc-practice-ssn"},
    "careTeam": [{"sequence": 1, "provider": {"reference": "PractitionerRole/doc-edge-role"}}],
}
# Its billing provider lists an SSN before its EIN (box 25 takes the EIN and checks EIN); its care team member is a
# PractitionerRole without an NPI of its own (box 24J takes its Practitioner's).
EDGE_PARTIES: list[dict[str, Any]] = [
    {
        "resourceType": "Organization",
        "id": "doc-practice-ssn",
        "name": "Lee Solo Practice",
        "identifier": [
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"},
            {"system": NPI, "value": "1245319599"},
            {"system": EIN, "value": "98-7654321"},
        ],
        "contact": [{"address": _address("9 Oak Ave", "Urbana", "IL", "61801")}],
    },
    {
        "resourceType": "PractitionerRole",
        "id": "doc-edge-role",
        "practitioner": {"reference": "Practitioner/doc-practitioner"},
        "organization": {"reference": "Organization/doc-practice-ssn"},
    },
]
EDGE_CLAIM["supportingInfo"] = [
    *EDGE_CLAIM["supportingInfo"],
    {
        "sequence": 2,
        "category": {"coding": [{"code": "hospitalized"}]},
        "timingPeriod": {"start": "2026-10-30", "end": "2026-11-01"},
    },
    {"sequence": 3, "category": {"coding": [{"code": "info"}]}, "valueString": "Seen after a rear-end collision"},
]
EDGE_CLAIM["item"] = [
    {
        **EDGE_CLAIM["item"][1],
        "sequence": n,
        "modifier": [{"coding": [{"code": m}]} for m in ("25", "59", "XS", "QW")],
        "net": _usd(f"{n}.25"),
        "unitPrice": _usd(f"{n}.25"),
        "quantity": {"value": 1},
    }
    for n in range(1, 8)
]
EDGE_CLAIM["item"][2]["net"] = EDGE_CLAIM["item"][2]["unitPrice"] = {"value": Decimal("9.90"), "currency": "EUR"}
EDGE_CLAIM["total"] = _usd("25.75")
COMPLETE += [*EDGE_PARTIES, EDGE_CLAIM]


# What every box of doc-claim's form says: written out by hand from COMPLETE above.
COMPLETE_FORM = {
    "carrier": "Prairie Mutual",
    "carrier street": "PO Box 100",
    "carrier city": "Chicago IL 60601",
    "1a": "PMX-778899",
    "2": "Doe, Jane Q",
    "3": "04 09 80",
    "4": "Doe, Jane Q",
    "5": "5 Elm St",
    "5 city": "Springfield",
    "5 state": "IL",
    "5 zip": "62704",
    "5 phone": "217-555-0142",
    "7": "5 Elm St",
    "7 city": "Springfield",
    "7 state": "IL",
    "7 zip": "62704",
    "7 phone": "217-555-0142",
    "9": "Doe, Jane Q",
    "9a": "SEC-77",
    "9d": "Prairie Secondary",
    "11": "GRP-5501",
    "11a": "04 09 80",
    "11c": "Prairie Gold PPO",
    "14": "10 30 26",
    "21 ind": "0",
    "21A": "J06.9",
    "21B": "R05.9",
    "23": "PA-3141",
    "24A from line 1": "11 03 26",
    "24A to line 1": "11 03 26",
    "24B line 1": "11",
    "24D line 1": "99213",
    "24D modifier 1 line 1": "25",
    "24E line 1": "AB",
    "24F line 1": "125.00",
    "24G line 1": "1",
    "24J line 1": "1987654321",
    "24A from line 2": "11 03 26",
    "24A to line 2": "11 04 26",
    "24B line 2": "11",
    "24D line 2": "87880",
    "24D modifier 1 line 2": "QW",
    "24E line 2": "A",
    "24F line 2": "36.50",
    "24G line 2": "2",
    "24J line 2": "1987654321",
    "25": "12-3456789",
    "26": "MRN-0042",
    "28": "161.50 USD",
    "29": "20.00",
    "31 date": "11 03 26",
    "32": "Maple Clinic Annex",
    "32 street": "14 Maple St",
    "32 city": "Springfield IL 62701",
    "32a": "1555555555",
    "33": "Maple Family Practice",
    "33 phone": "217-555-0100",
    "33 street": "12 Maple St",
    "33 city": "Springfield IL 62701",
    "33a": "1234567893",
}
COMPLETE_CHECKS = {
    "1": "Group",
    "3 sex": "F",
    "6": "Self",
    "10a": "NO",
    "10b": "NO",
    "10c": "NO",
    "11a sex": "F",
    "11d": "YES",
    "25 kind": "EIN",
    "27": "YES",
}


@pytest.fixture(scope="module")
async def docs_store(demo_store: Store) -> AsyncIterator[Store]:
    writer = Writer(demo_store)
    for resource in COMPLETE:
        await writer.create(resource["resourceType"], copy.deepcopy(resource), keep_id=True)
    yield demo_store


@pytest.fixture(scope="module")
async def client(docs_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(docs_store) as c:
        yield c


async def _pdf(client: httpx.AsyncClient, path: str, **headers: str) -> bytes:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    return response.content


def _grid(data: bytes) -> list[dict[tuple[int, int], str]]:
    return [by_position(page) for page in pages(data)]


# -- the CMS-1500 -------------------------------------------------------------------------------------------


async def test_a_complete_claim_fills_every_box_it_can_and_nothing_is_missing(client: httpx.AsyncClient) -> None:
    data = await _pdf(client, "/Claim/doc-claim/$cms1500?layout=form")
    [grid] = _grid(data)
    expected = {position(box): text for box, text in COMPLETE_FORM.items()}
    expected |= {check_box(box, option): "X" for box, option in COMPLETE_CHECKS.items()}
    assert grid == expected
    [page] = texts(data)
    assert "Missing" not in page and DASH not in page


async def test_the_plain_paper_layout_has_the_same_boxes_with_outlines_and_labels(client: httpx.AsyncClient) -> None:
    form = await _pdf(client, "/Claim/doc-claim/$cms1500?layout=form")
    plain = await _pdf(client, "/Claim/doc-claim/$cms1500")
    grid, labelled = _grid(form)[0], _grid(plain)[0]
    assert {k: v for k, v in labelled.items() if k in grid} == grid
    text = texts(plain)[0]
    for label in ("INSURED'S I.D. NUMBER", "PATIENT'S NAME", "BILLING PROVIDER INFO", "TOTAL CHARGE"):
        assert label in text
    assert b" re" in pages(plain)[0].get_contents().get_data()  # rectangles: the box outlines


def _claims() -> list[dict[str, Any]]:
    found = [r for item in example_items() for r in item.resources if r.get("resourceType") == "Claim"]
    return found


EXAMPLE_CLAIMS = sorted(r["id"] for r in _claims())
DEMO_CLAIMS = [f"demo-claim-{n:02d}" for n in range(1, 21)]


def _digits(money: Any) -> str:
    return format(Decimal(str(money["value"])), "f")


async def _stored(store: Store) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for rtype in ("Organization", "Patient", "Coverage", "Claim"):
        for r in await store.search(rtype, {}, 1000):
            out[(rtype, r["id"])] = r
    return out


async def _claim_data(store: Store, claim_id: str) -> ClaimData:
    """The stored Claim, and what its references name read from the store ("#id": the Claim's contained)."""
    claim = await store.get("Claim", claim_id)
    assert claim is not None
    contained = {c["id"]: c for c in claim.get("contained") or []}
    wanted: set[tuple[str, str]] = set()

    def targets(value: Any) -> None:  # every relative reference, however deep (contained ones included)
        if isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str) and ref.count("/") == 1 and ref.split("/")[0] in SERVED:
                wanted.add((ref.split("/")[0], ref.split("/")[1]))
            for v in value.values():
                targets(v)
        elif isinstance(value, list):
            for v in value:
                targets(v)

    targets(claim)
    found: dict[str, dict[str, Any]] = {}
    for _ in range(2):  # the Claim's targets, then theirs (a Coverage's subscriber, a role's practitioner)
        for rtype, rid in sorted(wanted - {tuple(k.split("/")) for k in found}):  # type: ignore[misc]
            resource = await store.get(rtype, rid)
            if resource is not None:
                found[f"{rtype}/{rid}"] = resource
                targets(resource)

    def resolve(ref: str) -> dict[str, Any] | None:
        return contained.get(ref[1:]) if ref.startswith("#") else found.get(ref)

    return ClaimData(claim, resolve)


@pytest.mark.parametrize("claim_id", [*EXAMPLE_CLAIMS, *DEMO_CLAIMS, "doc-claim", "doc-claim-edge"])
async def test_every_box_the_table_fills_says_what_the_stored_data_says(
    client: httpx.AsyncClient, docs_store: Store, claim_id: str
) -> None:
    """Every page's grid, read back from the PDF, is exactly the boxes worked out from the stored JSON by the
    harness's own readers: fillable boxes with their values, "—" where a required box lacks data, and nothing
    at all in the boxes the table declares unfillable."""
    data = await _pdf(client, f"/Claim/{claim_id}/$cms1500?layout=form")
    found, page_texts = _grid(data), texts(data)
    expected = expected_form(await _claim_data(docs_store, claim_id))
    assert len(found) == len(expected)
    for grid, page_text, (want, missing) in zip(found, page_texts, expected, strict=True):
        assert grid == want, {
            k: (grid.get(k), want.get(k)) for k in grid.keys() | want.keys() if grid.get(k) != want.get(k)
        }
        for box in (b for b in BOXES if unfillable(b.rule)):
            assert (box.line, box.column) not in grid, box.box
        for n in range(len(SERVICE_LINES)):
            for col in (c for c in LINE_BOXES if unfillable(c.rule)):
                assert (SERVICE_LINES[n], col.column) not in grid, col.box
        # A "—" box is listed at the foot of the page, and the data truly has nothing for it.
        assert sorted(missing_listed(page_text)) == sorted(missing)
        for box in missing:
            assert grid[position(box)] == DASH
    kind = (await docs_store.get("Claim", claim_id) or {})["type"]["coding"][0]["code"]
    assert (f"this Claim's type is {kind}" in page_texts[0]) == (kind != "professional")


def test_the_oracle_covers_every_box_the_table_fills() -> None:
    """A box added to the table without an expected-value reader here fails, rather than going unchecked."""
    fillable = {b.box for b in BOXES if not unfillable(b.rule)} - {"28"}
    assert fillable == set(HEADER_EXPECTED)
    assert {c.box for c in LINE_BOXES if not unfillable(c.rule)} == set(LINE_EXPECTED)
    assert all(b.fill is None for b in BOXES if unfillable(b.rule))
    assert all(c.fill is None for c in LINE_BOXES if unfillable(c.rule))


async def test_more_than_six_service_lines_continue_on_another_form(
    client: httpx.AsyncClient, docs_store: Store
) -> None:
    resources = await _stored(docs_store)
    many = {**resources[("Claim", "doc-claim")], "id": "doc-claim-long", "status": "draft"}
    many["item"] = [
        {**many["item"][0], "sequence": n, "net": _usd(f"{n}.10"), "unitPrice": _usd(f"{n}.10")} for n in range(1, 9)
    ]
    many["total"] = _usd(format(sum(Decimal(f"{n}.10") for n in range(1, 9)), "f"))
    await Writer(docs_store).create("Claim", many, keep_id=True)
    data = await _pdf(client, "/Claim/doc-claim-long/$cms1500?layout=form")
    first, second = _grid(data)
    assert [first[position(f"24F line {n}")] for n in range(1, 7)] == [f"{n}.10" for n in range(1, 7)]
    assert first[position("28")] == "21.60 USD"  # 1.10 + ... + 6.10: each form totals its own lines
    assert [second[position(f"24F line {n}")] for n in (1, 2)] == ["7.10", "8.10"]
    assert second[position("28")] == "15.20 USD"
    assert "page 2 of 2" in texts(data)[1]


async def test_a_practitioner_role_bills_as_its_organization_and_renders_as_its_practitioner(
    client: httpx.AsyncClient, docs_store: Store
) -> None:
    writer = Writer(docs_store)
    role = {
        "resourceType": "PractitionerRole",
        "id": "doc-role",
        "practitioner": {"reference": "Practitioner/doc-practitioner"},
        "organization": {"reference": "Organization/doc-practice"},
    }
    await writer.create("PractitionerRole", role, keep_id=True)
    claim = (await _stored(docs_store))[("Claim", "doc-claim")]
    by_role = {
        **claim,
        "id": "doc-claim-role",
        "status": "draft",
        "provider": {"reference": "PractitionerRole/doc-role"},
    }
    by_role["careTeam"] = [{"sequence": 1, "provider": {"reference": "PractitionerRole/doc-role"}}]
    await writer.create("Claim", by_role, keep_id=True)
    [grid] = _grid(await _pdf(client, "/Claim/doc-claim-role/$cms1500?layout=form"))
    assert grid[position("33")] == "Maple Family Practice" and grid[position("33a")] == "1234567893"
    assert grid[position("24J line 1")] == grid[position("24J line 2")] == "1987654321"


async def test_same_data_same_bytes_with_fonts_embedded(client: httpx.AsyncClient) -> None:
    for path in (
        "/Claim/doc-claim/$cms1500",
        "/Claim/doc-claim/$superbill",
        "/Invoice/doc-invoice/$statement?asOf=2026-12-01",
        "/Patient/doc-patient/$statement?asOf=2026-12-01",
    ):
        first, again = await _pdf(client, path), await _pdf(client, path)
        assert first == again, path
        fonts = pages(first)[0]["/Resources"]["/Font"]
        for font in fonts.values():
            descriptor = font.get_object()["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
            assert "/FontFile2" in descriptor, path  # the TrueType program is in the file
        assert b"D:20000101000000" in first  # the fixed creation date, not the clock


# -- superbills and statements ------------------------------------------------------------------------------


async def test_the_superbill_lists_practice_patient_insurance_diagnoses_and_fees(client: httpx.AsyncClient) -> None:
    text = "\n".join(texts(await _pdf(client, "/Claim/doc-claim/$superbill")))
    for expected in (
        "Maple Family Practice",
        "12 Maple St, Springfield, IL 62701",
        "1234567893",
        "12-3456789",
        "Ann Lee",
        "Doe, Jane Q",
        "1980-04-09",
        "Prairie Mutual",
        "PMX-778899",
        "GRP-5501",
        "Prairie Gold PPO",
        "J06.9",
        "R05.9",
        "99213",
        "Office visit",
        "87880",
        "QW",
        "125.00 USD",
        "18.25 USD",
        "36.50 USD",
        "Total of fees",
        "161.50 USD",
        "20.00 USD",
    ):
        assert expected in text, expected


async def test_a_demo_claims_superbill_has_its_services_and_exact_fees(
    client: httpx.AsyncClient, docs_store: Store
) -> None:
    claim = (await _stored(docs_store))[("Claim", "demo-claim-04")]
    text = "\n".join(texts(await _pdf(client, "/Claim/demo-claim-04/$superbill")))
    for item in claim["item"]:
        assert item["productOrService"]["coding"][0]["code"] in text
        assert f"{_digits(item['net'])} USD" in text
    assert f"{_digits(claim['total'])} USD" in text and "Riverside Clinic" in text


def _sections(rows: list[list[str]], headings: tuple[str, ...]) -> dict[str, list[list[str]]]:
    """A flowing document's lines under each heading (the title block under "")."""
    out: dict[str, list[list[str]]] = {"": []}
    current = ""
    for row in rows:
        if len(row) == 1 and row[0] in headings:
            current = row[0]
            out[current] = []
        else:
            out[current].append(row)
    return out


def _money(money: Any) -> str:
    """A Money as the harness expects it printed: its digits exactly, then its currency; "—" when absent."""
    if not isinstance(money, dict) or not isinstance(money.get("value"), Decimal | int):
        return DASH
    return f"{_digits(money)} {money['currency']}" if money.get("currency") else _digits(money)


def _sum_text(moneys: list[Any], empty: str) -> str:
    sums: dict[str, Decimal] = {}
    for m in moneys:
        if isinstance(m, dict) and isinstance(m.get("value"), Decimal | int):
            sums[m.get("currency") or ""] = sums.get(m.get("currency") or "", Decimal(0)) + Decimal(str(m["value"]))
    return " + ".join(f"{format(v, 'f')} {k}".strip() for k, v in sorted(sums.items())) or empty


def _cell(shown: str, value: str | None) -> bool:
    """A table's text cell: the value, or (too wide for its column) its start and an ellipsis."""
    value = value or DASH
    return shown == value or (shown.endswith("…") and value.startswith(shown[:-1]) and len(shown) > 1)


def _day(value: Any) -> str | None:
    return value[:10] if isinstance(value, str) and len(value) >= 10 else None


def _superbill_line(item: dict[str, Any]) -> list[str]:
    """One procedure line of a superbill, from the Claim.item's JSON: item, date(s), code, modifiers, units,
    unit price and fee (the description is checked apart: a long one is cut to its column)."""
    period = item.get("servicedPeriod")
    served = (
        f"{_day(period.get('start')) or ''}–{_day(period.get('end')) or ''}"
        if isinstance(period, dict)
        else _day(item.get("servicedDate"))
    )
    codings = (item.get("productOrService") or {}).get("coding") or [{}]
    modifiers = " ".join(((m.get("coding") or [{}])[0].get("code") or "") for m in item.get("modifier") or [])
    quantity = (item.get("quantity") or {}).get("value")
    return [
        f"#{item.get('sequence')}",
        served or DASH,
        codings[0].get("code") or DASH,
        modifiers or DASH,
        format(Decimal(str(quantity)), "f") if quantity is not None else DASH,
        _money(item.get("unitPrice")),
        _money(item.get("net")),
    ]


def _given_first(resource: dict[str, Any] | None) -> str | None:
    """An Organization's name; a person's official (else first) name as `FIRST MIDDLE LAST`."""
    if not resource:
        return None
    if isinstance(resource.get("name"), str):
        return resource["name"]
    names = [n for n in resource.get("name") or [] if isinstance(n, dict)]
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    return " ".join([*name.get("given", []), name.get("family", "")]).strip() or None


SUPERBILL_HEADINGS = ("Practice", "Patient", "Insurance", "Diagnoses", "Procedures and fees")


@pytest.mark.parametrize("claim_id", [*DEMO_CLAIMS, "doc-claim", "doc-claim-edge"])
async def test_every_superbill_line_says_what_the_claim_says(
    client: httpx.AsyncClient, docs_store: Store, claim_id: str
) -> None:
    """Each procedure line (date, code, modifiers, units, unit price, fee) and the totals, read back from the PDF,
    against the stored Claim; the parties against what it references."""
    data = await _claim_data(docs_store, claim_id)
    claim = data.claim
    sections = _sections(rows_of(await _pdf(client, f"/Claim/{claim_id}/$superbill")), SUPERBILL_HEADINGS)
    procedures = sections["Procedures and fees"]
    assert procedures[0] == ["item", "date", "code", "description", "modifiers", "units", "unit price", "fee"]
    items = [i for i in claim.get("item") or [] if isinstance(i, dict)]
    lines = procedures[1 : 1 + len(items)]
    assert len(lines) == len(items)
    for line, item in zip(lines, items, strict=True):
        concept = item.get("productOrService") or {}
        description = concept.get("text") or ((concept.get("coding") or [{}])[0].get("display"))
        assert [*line[:3], *line[4:]] == _superbill_line(item), (line, item)
        assert _cell(line[3], description), (line[3], description)
    fees = [i.get("net") for i in items]
    assert procedures[1 + len(items) :][:3] == [
        ["Total of fees", _sum_text(fees, DASH)],
        ["Claim total", _money(claim.get("total"))],
        ["Paid by patient", _money(claim.get("patientPaid"))],
    ]
    # The parties, from what the Claim references.
    practice = data.billing or {}
    where = [
        _street(practice),
        _part(practice, "city"),
        f"{_part(practice, 'state') or ''} {_part(practice, 'postalCode') or ''}",
    ]
    members = [
        data.get(m.get("provider")) for m in sorted(claim.get("careTeam") or [], key=lambda m: str(m.get("sequence")))
    ]
    # A PractitionerRole renders as its Practitioner.
    members = [
        data.get(m.get("practitioner")) if (m or {}).get("resourceType") == "PractitionerRole" else m for m in members
    ]
    team = [_given_first(m) for m in members if m and _given_first(m)]
    assert sections["Practice"] == [
        ["Name", _given_first(practice) or _s((claim.get("provider") or {}).get("display")) or DASH],
        ["Address", ", ".join(p.strip() for p in where if p and p.strip()) or DASH],
        ["Phone", _phone(practice) or DASH],
        ["NPI", _id(practice, NPI) or DASH],
        ["Tax ID", _id(practice, EIN) or _id(practice, "http://hl7.org/fhir/sid/us-ssn") or DASH],
        *([["Rendering provider(s)", ", ".join(team)]] if team else []),
    ]
    patient = data.patient or {}
    assert sections["Patient"][:2] == [
        ["Name", _person(patient) or DASH],
        ["Birth date", patient.get("birthDate", DASH)],
    ]
    assert sections["Insurance"] == [
        ["Insurer", data.payer_lines()[0] if data.payer_lines() else DASH],
        ["Member ID", _member_id(data.coverage) or DASH],
        ["Group", _group(data.coverage) or DASH],
        ["Plan", _plan(data.coverage) or DASH],
        ["Subscriber", _person(data.subscriber) or DASH],
    ]
    diagnoses = [
        [f"#{d['sequence']}", *(d["diagnosisCodeableConcept"]["coding"][0].get(k) or DASH for k in ("code", "system"))]
        for d in data.diagnoses
    ]
    assert [row[:3] for row in sections["Diagnoses"][1:]] == (diagnoses or [["none"]])


async def test_an_invoice_statement_has_charges_adjustments_payments_balance_aging_and_how_to_pay(
    client: httpx.AsyncClient,
) -> None:
    text = "\n".join(texts(await _pdf(client, "/Invoice/doc-invoice/$statement?asOf=2026-12-01")))
    for expected in (
        "Maple Family Practice",
        "Jane Q Doe",
        "Statement date",
        "2026-12-01",
        "Office visit",
        "100.00 USD",
        "4.50 USD",
        "Prompt-pay discount",
        "-10.00 USD",
        "90.00 USD",
        "94.50 USD",
        "2026-11-05",
        "PaymentReconciliation/doc-payment",
        "40.00 USD",
        "Balance due",
        "54.50 USD",
        "Pay within 30 days by card at maple.example/pay.",
        "quoting invoice doc-invoice",
    ):
        assert expected in text, expected
    aging = text.split("Aging of the balance due", 1)[1]
    assert "61–90 days 54.50 USD" in aging and "0–30 days 0" in aging  # 2026-10-01 is 61 days before 2026-12-01


async def test_the_demo_invoice_statement_is_settled(client: httpx.AsyncClient) -> None:
    text = "\n".join(texts(await _pdf(client, "/Invoice/demo-invoice-1/$statement?asOf=2026-12-01")))
    assert "PaymentReconciliation/demo-payment-patient-1" in text and "2026-11-15" in text
    assert "Paid 184.60 USD" in text and "Balance due 0.00 USD" in text
    charges = text.split("Charges", 1)[1].split("Total net", 1)[0]
    assert charges.strip().split("\n") == ["line date service component amount", "none"]  # no lineItem


STATEMENT_HEADINGS = (
    "From / To",
    "Charges",
    "Adjustments",
    "Payments",
    "Open invoices",
    "Aging of the balance due",
    "How to pay",
)
AGES = (("0–30 days", 30), ("31–60 days", 60), ("61–90 days", 90), ("over 90 days", None))


def _concept_text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    coding = (concept.get("coding") or [{}])[0]
    return concept.get("text") or coding.get("display")


def _statement_lines(invoice: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """Charges (base, surcharge, tax) and adjustments (discount, deduction) as the statement's rows."""
    charges, adjustments = [], []
    for line in invoice.get("lineItem") or []:
        concept = line.get("chargeItemCodeableConcept")
        what = _concept_text(concept) or ((concept or {}).get("coding") or [{}])[0].get("code")
        served = _day(line.get("servicedDate")) or _day((line.get("servicedPeriod") or {}).get("start"))
        for component in line.get("priceComponent") or []:
            row = [
                str(line.get("sequence") or ""),
                served or DASH,
                what or DASH,
                _concept_text(component.get("code")) or component["type"],
                _money(component.get("amount")),
            ]
            if component["type"] in ("discount", "deduction"):
                adjustments.append(row)
            elif component["type"] in ("base", "surcharge", "tax"):
                charges.append(row)
    for component in invoice.get("totalPriceComponent") or []:
        if component.get("type") in ("discount", "deduction"):
            label = _concept_text(component.get("code")) or component["type"]
            adjustments.append(["total", DASH, "whole invoice", label, _money(component.get("amount"))])
    return charges, adjustments


async def _payments(store: Store, invoice_id: str) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """The active PaymentReconciliations' allocations to the Invoice: (date, id, amounts), by date then id."""
    out = []
    for payment in await store.search("PaymentReconciliation", {}, 1000):
        allocated = [
            a["amount"]
            for a in payment.get("allocation") or []
            if (a.get("target") or {}).get("reference") == f"Invoice/{invoice_id}" and isinstance(a.get("amount"), dict)
        ]
        if payment.get("status") == "active" and allocated:
            out.append((payment.get("date") or "", payment["id"], allocated))
    return sorted(out)


def _negated(moneys: list[Any]) -> list[dict[str, Any]]:
    return [{**m, "value": -Decimal(str(m["value"]))} for m in moneys]


def _age(billed: Any, as_of: str) -> str:
    if _day(billed) is None:
        return "undated"
    days = (date.fromisoformat(as_of) - date.fromisoformat(billed[:10])).days
    return next(label for label, most in AGES if most is None or days <= most)


def _aging_rows(owed: dict[str, list[Any]]) -> list[list[str]]:
    return [["billed", "balance due"]] + [
        [label, _sum_text(owed.get(label, []), "0")] for label in (*(a for a, _ in AGES), "undated")
    ]


def _to(patient: dict[str, Any]) -> list[list[str]]:
    name = (patient.get("name") or [{}])[0]
    address = (patient.get("address") or [None])[0]
    where = (
        ", ".join(
            p
            for p in (
                ", ".join(address.get("line") or []),
                address.get("city"),
                f"{address.get('state') or ''} {address.get('postalCode') or ''}".strip(),
            )
            if p
        )
        if address
        else None
    )
    return [
        ["To", " ".join([*name.get("given", []), name.get("family", "")]).strip() or DASH],
        ["Address", where or DASH],
    ]


@pytest.mark.parametrize("as_of", ["2026-10-15", "2026-12-01", "2027-03-01"])
@pytest.mark.parametrize("invoice_id", ["demo-invoice-1", "doc-invoice"])
async def test_every_statement_line_says_what_the_invoice_and_its_payments_say(
    client: httpx.AsyncClient, docs_store: Store, invoice_id: str, as_of: str
) -> None:
    """Charges, adjustments, payments (from PaymentReconciliation allocations), paid, balance and aging, read back
    line by line and worked out from the stored Invoice and payments."""
    invoice = await docs_store.get("Invoice", invoice_id)
    assert invoice is not None
    issuer = await docs_store.get(*invoice["issuer"]["reference"].split("/"))
    patient = await docs_store.get(*invoice["recipient"]["reference"].split("/"))
    sections = _sections(
        rows_of(await _pdf(client, f"/Invoice/{invoice_id}/$statement?asOf={as_of}")), STATEMENT_HEADINGS
    )
    assert sections["From / To"] == [["From", (issuer or {})["name"]], ["Statement date", as_of], *_to(patient or {})]
    charges, adjustments = _statement_lines(invoice)
    header = ["line", "date", "service", "component", "amount"]
    totals = [
        ["Total net", _money(invoice.get("totalNet"))],
        ["Total gross (payable)", _money(invoice.get("totalGross"))],
    ]
    assert sections["Charges"] == [header, *(charges or [["none"]]), *totals]
    assert sections["Adjustments"] == [header, *(adjustments or [["none"]])]
    payments = await _payments(docs_store, invoice_id)
    paid = [m for *_, amounts in payments for m in amounts]
    payable = invoice.get("totalGross") or invoice.get("totalNet")
    balance = _sum_text([payable, *_negated(paid)], "0")
    assert sections["Payments"] == [
        ["date", "payment", "amount"],
        *([d, f"PaymentReconciliation/{pid}", _sum_text(amounts, "0")] for d, pid, amounts in payments),
        *([] if payments else [["none"]]),
        ["Paid", _sum_text(paid, "0")],
        ["Balance due", balance],
    ]
    owed = {_age(invoice.get("date"), as_of): [payable, *_negated(paid)]} if invoice["status"] == "issued" else {}
    assert sections["Aging of the balance due"] == _aging_rows(owed)
    how = [row for row in sections["How to pay"]]
    expected_how = [[invoice["paymentTerms"]]] if invoice.get("paymentTerms") else []
    phone = next((t["value"] for c in (issuer or {}).get("contact") or [] for t in c.get("telecom") or []), None)
    expected_how.append(
        [f"Pay {issuer['name']}, quoting invoice {invoice_id}" + (f"; questions: {phone}." if phone else ".")]
    )
    assert how == expected_how


@pytest.mark.parametrize("patient_id", ["demo-patient-1", "demo-patient-2", "demo-patient-3", "doc-patient"])
async def test_every_patient_statement_line_says_what_the_open_invoices_say(
    client: httpx.AsyncClient, docs_store: Store, patient_id: str
) -> None:
    """A patient's statement: one line per open (issued) Invoice addressed to them, oldest first, with what it
    charges, what was paid and what is due; the balance and its aging, worked out from the stored JSON."""
    as_of = "2026-12-01"
    patient = await docs_store.get("Patient", patient_id)
    sections = _sections(
        rows_of(await _pdf(client, f"/Patient/{patient_id}/$statement?asOf={as_of}")), STATEMENT_HEADINGS
    )
    invoices = sorted(
        (
            i
            for i in await docs_store.search("Invoice", {}, 1000)
            if (i.get("recipient") or {}).get("reference") == f"Patient/{patient_id}" and i.get("status") == "issued"
        ),
        key=lambda i: i.get("date") or "",
    )
    rows, balances, owed = [], [], {}
    for invoice in invoices:
        payable = invoice.get("totalGross") or invoice.get("totalNet")
        paid = [m for *_, amounts in await _payments(docs_store, invoice["id"]) for m in amounts]
        due = [payable, *_negated(paid)]
        rows.append(
            [
                invoice["id"],
                _day(invoice.get("date")) or DASH,
                _money(payable),
                _sum_text(paid, "0"),
                _sum_text(due, "0"),
            ]
        )
        balances += due
        owed.setdefault(_age(invoice.get("date"), as_of), []).extend(due)
    assert sections["From / To"][1:] == [["Statement date", as_of], *_to(patient or {})]
    assert sections["Open invoices"] == [
        ["invoice", "date", "charged", "paid", "balance due"],
        *(rows or [["none"]]),
        ["Balance due", _sum_text(balances, "0")],
    ]
    assert sections["Aging of the balance due"] == _aging_rows(owed)
    if not invoices:
        assert sections["How to pay"] == [["No open invoice: nothing is due."]]


async def test_a_patient_statement_lists_the_open_invoices(client: httpx.AsyncClient) -> None:
    text = "\n".join(texts(await _pdf(client, "/Patient/doc-patient/$statement?asOf=2026-12-01")))
    assert "doc-invoice" in text and "94.50 USD" in text and "40.00 USD" in text
    assert "Balance due 54.50 USD" in text and "61–90 days 54.50 USD" in text
    settled = "\n".join(texts(await _pdf(client, "/Patient/demo-patient-1/$statement?asOf=2026-12-01")))
    assert "No open invoice: nothing is due." in settled and "demo-invoice-1" not in settled  # balanced


async def test_an_encounter_superbill_lists_the_claims_that_name_it(
    client: httpx.AsyncClient, docs_store: Store
) -> None:
    writer = Writer(docs_store)
    encounter = {
        "resourceType": "Encounter",
        "id": "doc-encounter",
        "status": "completed",
        "subject": {"reference": "Patient/doc-patient"},
        "serviceProvider": {"reference": "Organization/doc-practice"},
        "actualPeriod": {"start": "2026-11-03T09:00:00Z"},
    }
    await writer.create("Encounter", encounter, keep_id=True)
    claim = (await _stored(docs_store))[("Claim", "doc-claim")]
    linked = {**claim, "id": "doc-claim-encounter", "status": "draft"}
    linked["item"] = [{**claim["item"][0], "encounter": [{"reference": "Encounter/doc-encounter"}]}]
    linked["total"] = claim["item"][0]["net"]
    await writer.create("Claim", linked, keep_id=True)
    text = "\n".join(texts(await _pdf(client, "/Encounter/doc-encounter/$superbill")))
    assert "Claim/doc-claim-encounter · created 2026-11-03" in text and "99213" in text and "125.00 USD" in text
    assert "Maple Family Practice" in text and "Doe, Jane Q" in text and "87880" not in text
    assert "Subscriber Doe, Jane Q" in text and "Claim/doc-claim-encounter #1 J06.9" in text


# -- the routes: errors, auth, compartments, tenants, links -------------------------------------------------


async def test_refusals_are_json_with_a_code(client: httpx.AsyncClient) -> None:
    for path, status, code in (
        ("/Claim/nope/$cms1500", 404, "NOT_FOUND"),
        ("/Invoice/nope/$statement", 404, "NOT_FOUND"),
        ("/Patient/nope/$statement", 404, "NOT_FOUND"),
        ("/Encounter/nope/$superbill", 404, "NOT_FOUND"),
        ("/Claim/doc-claim/$cms1500?layout=red", 400, "BAD_USER_INPUT"),
        ("/Invoice/doc-invoice/$statement?asOf=12/01/2026", 400, "BAD_USER_INPUT"),
        ("/Claim/demo-claim-withdrawn/$cms1500", 404, "NOT_FOUND"),
        ("/Invoice/doc-invoice/$cms1500", 404, "NOT_FOUND"),  # no such document for an Invoice
    ):
        response = await client.get(path)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["errors"][0]["extensions"]["code"] == code, path
    response = await client.post("/Claim/doc-claim/$cms1500")
    assert response.status_code == 405 and response.headers["content-type"] == "application/json"


async def test_the_routes_take_the_callers_scopes_compartment_and_tenant(docs_store: Store) -> None:
    tenant = docs_store.tenant
    async with authed_client(docs_store) as c:
        refused = await c.get("/Claim/doc-claim/$cms1500")
        assert refused.status_code == 401 and refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        clerk = bearer(token(scope="user/*.rs", tenant=tenant))
        assert (await c.get("/Claim/doc-claim/$cms1500", headers=clerk)).status_code == 200
        # Another tenant's caller: not found, exactly as a missing id.
        elsewhere = await c.get("/Claim/doc-claim/$cms1500", headers=bearer(token(scope="user/*.rs", tenant="other")))
        assert elsewhere.status_code == 404 and elsewhere.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        # No read scope on the type: FORBIDDEN.
        no_claims = bearer(token(scope="user/Patient.rs", tenant=tenant))
        forbidden = await c.get("/Claim/doc-claim/$cms1500", headers=no_claims)
        assert forbidden.status_code == 403 and forbidden.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        # A patient's token: their own documents only; what their scopes do not reach is marked, not shown.
        mine = bearer(token(scope="patient/*.rs", tenant=tenant, patient="doc-patient"))
        own = await c.get("/Claim/doc-claim/$cms1500?layout=form", headers=mine)
        assert own.status_code == 200, own.text
        [grid] = _grid(own.content)
        assert grid[position("2")] == "Doe, Jane Q" and grid[position("33")] == DASH  # Organization: outside
        assert "Not readable with this token's scopes (—): " in texts(own.content)[0]
        for path in (
            "/Claim/demo-claim-01/$cms1500",
            "/Invoice/demo-invoice-1/$statement",
            "/Patient/demo-patient-1/$statement",
        ):
            other = await c.get(path, headers=mine)
            assert other.status_code == 404, (path, other.text)
        statement = await c.get("/Invoice/doc-invoice/$statement?asOf=2026-12-01", headers=mine)
        assert statement.status_code == 200
        # Payments are in no compartment, but what was paid on the patient's own invoice is theirs: the balance shows.
        shown = "\n".join(texts(statement.content))
        assert "Balance due" in shown and "not readable" not in shown


async def test_graphql_links_to_the_documents(client: httpx.AsyncClient) -> None:
    query = """{ Claim(id: "doc-claim") { cms1500Url superbillUrl } Invoice(id: "doc-invoice") { statementUrl }
                 Patient(id: "doc-patient") { statementUrl } }"""
    response = await client.post("/graphql", json={"query": query})
    data = loads(response.content)["data"]
    assert data["Claim"] == {"cms1500Url": "/Claim/doc-claim/$cms1500", "superbillUrl": "/Claim/doc-claim/$superbill"}
    assert data["Invoice"]["statementUrl"] == "/Invoice/doc-invoice/$statement"
    assert data["Patient"]["statementUrl"] == "/Patient/doc-patient/$statement"
    for url in (data["Claim"]["cms1500Url"], data["Invoice"]["statementUrl"], data["Patient"]["statementUrl"]):
        assert (await client.get(url)).headers["content-type"] == "application/pdf"
    # A contained resource has no document of its own.
    contained = '{ Claim(id: "100152") { contained { ... on Patient { id statementUrl } } } }'
    patients = [
        r
        for r in loads((await client.post("/graphql", json={"query": contained})).content)["data"]["Claim"]["contained"]
        if r
    ]
    assert patients == [{"id": "patient-1", "statementUrl": None}]


async def test_each_document_is_one_metrics_label(client: httpx.AsyncClient) -> None:
    await client.get("/Claim/doc-claim/$superbill")
    await client.get("/Invoice/nope/$statement")
    metrics = (await client.get("/metrics")).text
    assert 'path="/{type}/{id}/$superbill"' in metrics and 'path="/{type}/{id}/$statement"' in metrics
    assert "doc-claim" not in metrics and "nope" not in metrics


def test_the_readme_documents_the_box_table_as_generated() -> None:
    from app.documents.describe import BEGIN, END, describe_cms1500

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert BEGIN in readme and END in readme, "README lacks the generated CMS-1500 table"
    assert readme.split(BEGIN, 1)[1].split(END, 1)[0].strip() == describe_cms1500().strip()
