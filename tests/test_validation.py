"""Validation of client FHIR JSON: the R5 examples pass unchanged, each named bad case fails where it should."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.errors import BAD_USER_INPUT, FinGateError
from app.fhir.model import SERVED_RESOURCES
from app.validation import MAX_DEPTH, model_issues, validate

EXAMPLES = Path(__file__).resolve().parents[1] / "schema" / "examples"

# HL7's own example breaks a target type: Encounter.careTeam is Reference(CareTeam).
KNOWN_EXAMPLE_DEFECTS = {"Encounter-example.json": ["Encounter.careTeam[0].reference"]}


def _examples() -> list[Any]:
    out = []
    for path in sorted(EXAMPLES.glob("*.json")) + sorted((EXAMPLES / "referenced-other").glob("*.json")):
        if path.name.startswith("_"):
            continue
        doc = json.loads(path.read_text(), parse_float=Decimal)
        if doc["resourceType"] in SERVED_RESOURCES:
            out.append(pytest.param(path, id=path.name))
    return out


# ---- harness


def problems(resource_type: str, doc: Any, model_check: bool = False) -> list[str]:
    """The `expression` of every issue validation reports ([] when the document is accepted)."""
    try:
        validate(resource_type, doc, model_check=model_check)
    except FinGateError as e:
        assert e.code == BAD_USER_INPUT
        assert e.extensions["operationOutcome"]["resourceType"] == "OperationOutcome"
        return [i["expression"][0] for i in e.issues]
    return []


def refusal(resource_type: str, doc: Any) -> FinGateError:
    with pytest.raises(FinGateError) as info:
        validate(resource_type, doc)
    return info.value


def claim(**changes: Any) -> dict:
    doc: dict[str, Any] = {
        "resourceType": "Claim",
        "id": "c1",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "oral"}]},
        "use": "claim",
        "patient": {"reference": "Patient/1"},
        "created": "2014-08-16",
        "provider": {"reference": "Organization/1"},
        "identifier": [{"use": "official", "value": "12345"}],
        "item": [
            {
                "sequence": 1,
                "productOrService": {"coding": [{"code": "1200"}]},
                "servicedDate": "2014-08-16",
                "unitPrice": {"value": Decimal("100.10"), "currency": "USD"},
            }
        ],
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = doc
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return doc


DELETE = object()

PAYMENT = {
    "resourceType": "PaymentReconciliation",
    "status": "active",
    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/payment-type", "code": "payment"}]},
    "created": "2026-11-01",
    "date": "2026-11-01",
    "amount": {"value": Decimal("10.00"), "currency": "USD"},
}
NOTICE = {
    "resourceType": "PaymentNotice",
    "status": "active",
    "created": "2026-11-01",
    "recipient": {"reference": "Organization/1"},
    "amount": {"value": Decimal("10.00"), "currency": "USD"},
}


def nested_extension(levels: int) -> dict:
    ext: dict[str, Any] = {"url": "http://x.org/leaf", "valueString": "x"}
    for _ in range(levels):
        ext = {"url": "http://x.org/n", "extension": [ext]}
    return ext


# ---- the spec's own examples


@pytest.mark.parametrize("path", _examples())
@pytest.mark.parametrize("model_check", [False, True], ids=["walk", "walk+model"])
def test_r5_example_validates_unchanged(path, model_check):
    doc = json.loads(path.read_text(), parse_float=Decimal)
    before = copy.deepcopy(doc)
    if path.name in KNOWN_EXAMPLE_DEFECTS:
        assert problems(doc["resourceType"], doc, model_check) == KNOWN_EXAMPLE_DEFECTS[path.name]
        return
    out = validate(doc["resourceType"], doc, model_check=model_check)
    assert out == before and doc == before
    assert json.dumps(out, default=str) == json.dumps(before, default=str)  # same digits, same order


def test_client_digits_are_kept():
    out = validate("Claim", claim())
    assert str(out["item"][0]["unitPrice"]["value"]) == "100.10"


def test_resource_type_is_set_when_absent():
    doc = claim()
    del doc["resourceType"]
    assert validate("Claim", doc)["resourceType"] == "Claim"
    assert "resourceType" not in doc


# ---- named bad cases: (name, type, document, expected expressions in order)

BAD_CASES = [
    ("unknown field", "Claim", claim(item__0__foo=1), ["Claim.item[0].foo"]),
    ("unknown top-level field", "Claim", claim(colour="red"), ["Claim.colour"]),
    ("string where object", "Claim", claim(type="oral"), ["Claim.type"]),
    ("object where string", "Claim", claim(created={"date": "2014"}), ["Claim.created"]),
    ("array where single", "Claim", claim(status=["active"]), ["Claim.status"]),
    ("single where array", "Claim", claim(identifier={"value": "1"}), ["Claim.identifier"]),
    ("number where string", "Claim", claim(use=1), ["Claim.use"]),
    ("string where integer", "Claim", claim(item__0__sequence="1"), ["Claim.item[0].sequence"]),
    ("positiveInt zero", "Claim", claim(item__0__sequence=0), ["Claim.item[0].sequence"]),
    ("primitive extension not an object", "Claim", claim(_created="x"), ["Claim._created"]),
    ("unknown key in a primitive extension", "Claim", claim(_created={"foo": 1}), ["Claim._created.foo"]),
    (
        "string where decimal",
        "Claim",
        claim(item__0__unitPrice={"value": "abc", "currency": "USD"}),
        ["Claim.item[0].unitPrice.value"],
    ),
    (
        "float decimal",
        "Claim",
        claim(item__0__unitPrice={"value": 100.1, "currency": "USD"}),
        ["Claim.item[0].unitPrice.value"],
    ),
    ("bad date", "Claim", claim(created="2024-13-45"), ["Claim.created"]),
    ("no such day", "Claim", claim(item__0__servicedDate="2023-02-30"), ["Claim.item[0].servicedDate"]),
    ("dateTime without zone", "Claim", claim(created="2024-01-01T10:00:00"), ["Claim.created"]),
    ("bad id", "Claim", claim(id="a b"), ["Claim.id"]),
    ("empty string", "Claim", claim(identifier=[{"value": ""}]), ["Claim.identifier[0].value"]),
    ("missing required", "Claim", claim(patient=DELETE), ["Claim.patient"]),
    ("null in list", "Claim", claim(identifier=[None]), ["Claim.identifier[0]"]),
    ("two choice types", "Claim", claim(item__0__servicedPeriod={"start": "2014"}), ["Claim.item[0].servicedPeriod"]),
    ("code outside binding", "Claim", claim(status="bogus"), ["Claim.status"]),
    (
        "currency outside binding",
        "Claim",
        claim(item__0__unitPrice={"value": 1, "currency": "DOLLARS"}),
        ["Claim.item[0].unitPrice.currency"],
    ),
    (
        "Identifier.use outside binding",
        "Claim",
        claim(identifier=[{"use": "primary", "value": "1"}]),
        ["Claim.identifier[0].use"],
    ),
    (
        "CodeableConcept binding",
        "Account",
        {"status": "active", "currency": {"coding": [{"code": "DOLLARS"}]}},
        ["Account.currency"],
    ),
    ("wrong resourceType", "Claim", {**claim(), "resourceType": "Patient"}, ["Claim.resourceType"]),
    ("unserved type", "Device", {"resourceType": "Device"}, ["Device"]),
    ("not an object", "Claim", ["Claim"], ["Claim"]),
    ("reference to wrong type", "Claim", claim(patient={"reference": "Organization/1"}), ["Claim.patient.reference"]),
    (
        "versioned reference to wrong type",
        "Claim",
        claim(patient={"reference": "Organization/1/_history/2"}),
        ["Claim.patient.reference"],
    ),
    (
        "CodeableReference to wrong type",
        "ChargeItem",
        {
            "status": "billable",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/1"},
            "product": [{"reference": {"reference": "Patient/1"}}],
        },
        ["ChargeItem.product[0].reference.reference"],
    ),
    ("$where key", "Claim", claim(**{"$where": "1"}), ["Claim.$where"]),
    (
        "nested $ key",
        "Claim",
        claim(item__0__unitPrice={"value": 1, "currency": "USD", "$gt": 0}),
        ["Claim.item[0].unitPrice.$gt"],
    ),
    ("$ key in primitive sibling", "Claim", claim(_status={"$set": 1}), ["Claim._status.$set"]),
    ("dotted key", "Claim", claim(**{"a.b": 1}), ["Claim.a.b"]),
    ("nesting 200 levels", "Claim", claim(extension=[nested_extension(200)]), None),
    (
        "1 MB string",
        "Claim",
        claim(item__0__productOrService={"text": "x" * ((1 << 20) + 1)}),
        ["Claim.item[0].productOrService.text"],
    ),
    (
        "1 MB multibyte string",
        "Claim",
        claim(item__0__productOrService={"text": "é" * ((1 << 19) + 1)}),
        ["Claim.item[0].productOrService.text"],
    ),
    (
        "1000-digit decimal",
        "Claim",
        claim(item__0__unitPrice={"value": Decimal("1" * 1000), "currency": "USD"}),
        ["Claim.item[0].unitPrice.value"],
    ),
    (
        "35-digit decimal",
        "Claim",
        claim(item__0__unitPrice={"value": Decimal("1" * 18 + "." + "1" * 17), "currency": "USD"}),
        ["Claim.item[0].unitPrice.value"],
    ),
    (
        "1e400 decimal",
        "Claim",
        claim(item__0__unitPrice={"value": Decimal("1e400"), "currency": "USD"}),
        ["Claim.item[0].unitPrice.value"],
    ),
    (
        "19 integer digits",
        "Claim",
        claim(item__0__unitPrice={"value": 10**18, "currency": "USD"}),
        ["Claim.item[0].unitPrice.value"],
    ),
    ("18 decimals", "Claim", claim(item__0__factor=Decimal("0." + "0" * 17 + "1")), ["Claim.item[0].factor"]),
    ("1e-18 decimal", "Claim", claim(item__0__factor=Decimal("1e-18")), ["Claim.item[0].factor"]),
    ("NaN decimal", "Claim", claim(item__0__factor=Decimal("NaN")), ["Claim.item[0].factor"]),
    ("infinite decimal", "Claim", claim(item__0__factor=Decimal("-Infinity")), ["Claim.item[0].factor"]),
    (
        "decimal beyond range in a contained resource",
        "Claim",
        claim(contained=[{"resourceType": "Basic", "id": "b", "amount": Decimal("1e400")}]),
        ["Claim.contained[0].amount"],
    ),
    (
        "an integer of 1e999999 is refused at once",
        "Claim",
        claim(item__0__sequence=Decimal("1e999999")),
        ["Claim.item[0].sequence"],
    ),
    (
        "payment in USD with a tenth of a cent",
        "PaymentReconciliation",
        {**PAYMENT, "amount": {"value": Decimal("10.005"), "currency": "USD"}},
        ["PaymentReconciliation.amount.value"],
    ),
    (
        "allocation in JPY with decimals",
        "PaymentReconciliation",
        {**PAYMENT, "allocation": [{"amount": {"value": Decimal("100.0"), "currency": "JPY"}}]},
        ["PaymentReconciliation.allocation[0].amount.value"],
    ),
    (
        "payment notice in KWD with 4 decimals",
        "PaymentNotice",
        {**NOTICE, "amount": {"value": Decimal("1.2345"), "currency": "KWD"}},
        ["PaymentNotice.amount.value"],
    ),
    (
        "patient paid in USD with 3 decimals",
        "Claim",
        claim(patientPaid={"value": Decimal("5.000"), "currency": "USD"}),
        ["Claim.patientPaid.value"],
    ),
    (
        "payment notice contained in a claim",
        "Claim",
        claim(contained=[{**NOTICE, "id": "n", "amount": {"value": Decimal("0.001"), "currency": "EUR"}}]),
        ["Claim.contained[0].amount.value"],
    ),
    (
        "contained resource checked",
        "Claim",
        claim(contained=[{"resourceType": "Organization", "id": "o", "identifier": [{"use": "bogus"}]}]),
        ["Claim.contained[0].identifier[0].use"],
    ),
    (
        "several problems",
        "Claim",
        claim(
            status="bogus",
            created="2024-13-45",
            patient={"reference": "Organization/1"},
            item__0__foo=1,
            **{"$where": "1"},
        ),
        ["Claim.status", "Claim.patient.reference", "Claim.created", "Claim.item[0].foo", "Claim.$where"],
    ),
]


@pytest.mark.parametrize("name,rtype,doc,expected", BAD_CASES, ids=[c[0] for c in BAD_CASES])
@pytest.mark.parametrize("model_check", [False, True], ids=["walk", "walk+model"])
def test_bad_case(name, rtype, doc, expected, model_check):
    found = problems(rtype, doc, model_check)
    if expected is None:  # too deep: one issue somewhere down the chain, never a RecursionError
        assert len(found) == 1 and found[0].startswith("Claim.extension[0].extension[0]")
    elif model_check:
        assert found[: len(expected)] == expected  # the model may add its own view after ours
    else:
        assert found == expected


def test_messages_say_how_to_fix():
    cases = [
        (claim(status="bogus"), "Claim.status: 'bogus' is not one of active | cancelled | draft | entered-in-error"),
        (claim(patient={"reference": "Organization/1"}), "may only reference Patient"),
        (claim(item__0__unitPirce={"value": 1}), "did you mean 'unitPrice'?"),
        (claim(created="2024-13-45"), "YYYY-MM-DD"),
        (claim(item__0__unitPrice={"value": Decimal("1" * 1000), "currency": "USD"}), "at most 18 digits before"),
        (
            {**PAYMENT, "amount": {"value": Decimal("10.005"), "currency": "USD"}},
            "10.005 USD has 3 decimal places: an amount paid or allocated keeps to its currency's minor unit, 2 for USD",
        ),
        (claim(**{"$where": "1"}), "may not start with '$'"),
    ]
    for doc, text in cases:
        assert text in refusal(doc["resourceType"], doc).message


def test_several_problems_message_counts_them():
    err = refusal("Claim", claim(status="bogus", use="nope"))
    assert err.message.endswith("(and 1 more problem)")
    assert len(err.extensions["operationOutcome"]["issue"]) == 2


def test_too_deep_is_reported_not_raised():
    err = refusal("Claim", claim(extension=[nested_extension(200)]))
    assert f"deeper than {MAX_DEPTH}" in err.message


# ---- references left alone, and the shapes that are fine

GOOD_CASES = [
    ("absolute reference", "Claim", claim(patient={"reference": "http://other.org/fhir/Organization/1"})),
    (
        "contained reference",
        "Claim",
        claim(patient={"reference": "#p1"}, contained=[{"resourceType": "Patient", "id": "p1"}]),
    ),
    ("urn:uuid reference", "Claim", claim(patient={"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"})),
    ("identifier-only reference", "Claim", claim(patient={"identifier": {"value": "x"}})),
    (
        "Reference(Any)",
        "Claim",
        claim(
            supportingInfo=[
                {"sequence": 1, "category": {"text": "x"}, "valueReference": {"reference": "Organization/1"}}
            ]
        ),
    ),
    (
        "primitive extension sibling",
        "Claim",
        claim(_created={"extension": [{"url": "http://x.org/e", "valueString": "x"}]}),
    ),
    (
        "required via extension only",
        "Claim",
        claim(
            created=DELETE, _created={"extension": [{"url": "http://x.org/data-absent-reason", "valueCode": "unknown"}]}
        ),
    ),
    (
        "null lined up with primitive extension",
        "Patient",
        {
            "name": [
                {
                    "given": [None, "Bob"],
                    "_given": [{"extension": [{"url": "http://x.org/e", "valueString": "x"}]}, None],
                }
            ]
        },
    ),
    ("integer decimal", "Claim", claim(item__0__unitPrice={"value": 100, "currency": "USD"})),
    (
        "34-digit decimal",
        "Claim",
        claim(item__0__unitPrice={"value": Decimal("1" * 18 + "." + "1" * 16), "currency": "USD"}),
    ),
    ("17 decimals", "Claim", claim(item__0__factor=Decimal("0." + "0" * 16 + "1"))),
    ("18 integer digits", "Claim", claim(item__0__unitPrice={"value": 10**18 - 1, "currency": "USD"})),
    ("exponent within range", "Claim", claim(item__0__factor=Decimal("1.5e3"))),
    ("unit price below a cent", "Claim", claim(item__0__unitPrice={"value": Decimal("0.125"), "currency": "USD"})),
    (
        "payment in USD cents",
        "PaymentReconciliation",
        {**PAYMENT, "amount": {"value": Decimal("10.5"), "currency": "USD"}},
    ),
    (
        "payment in KWD fils",
        "PaymentReconciliation",
        {**PAYMENT, "amount": {"value": Decimal("10.005"), "currency": "KWD"}},
    ),
    ("payment without a currency", "PaymentReconciliation", {**PAYMENT, "amount": {"value": Decimal("10.005")}}),
    (
        "payment in gold",
        "PaymentReconciliation",
        {**PAYMENT, "amount": {"value": Decimal("1.00005"), "currency": "XAU"}},
    ),
    (
        "payment in a withdrawn currency",
        "PaymentReconciliation",
        {**PAYMENT, "amount": {"value": Decimal("1.05"), "currency": "HRK"}},
    ),
    ("nesting within limit", "Claim", claim(extension=[nested_extension(20)])),
    ("leap second", "Claim", claim(created="2016-12-31T23:59:60Z")),
    ("partial date", "Claim", claim(created="2024-05")),
]


@pytest.mark.parametrize("name,rtype,doc", GOOD_CASES, ids=[c[0] for c in GOOD_CASES])
def test_good_case(name, rtype, doc):
    assert problems(rtype, doc) == []


# ---- fhir.resources agrees with the walk on the structural cases

MODEL_AGREES = [
    "unknown field",
    "string where object",
    "bad date",
    "no such day",
    "dateTime without zone",
    "bad id",
    "empty string",
    "missing required",
    "null in list",
    "two choice types",
    "positiveInt zero",
    "string where decimal",
    "primitive extension not an object",
    "unknown key in a primitive extension",
]


@pytest.mark.parametrize("name", MODEL_AGREES)
def test_model_also_refuses(name):
    _, rtype, doc, expected = next(c for c in BAD_CASES if c[0] == name)
    issues = model_issues(rtype, {"resourceType": rtype, **doc})
    assert issues, f"fhir.resources accepts the '{name}' case"


@pytest.mark.parametrize("name", [c[0] for c in GOOD_CASES if c[0] not in ("nesting within limit",)])
def test_model_also_accepts(name):
    _, rtype, doc = next(c for c in GOOD_CASES if c[0] == name)
    assert model_issues(rtype, {"resourceType": rtype, **doc}) == []
