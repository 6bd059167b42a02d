"""The R4 -> R5 mapping table: every R4 element has a row, and each row does what it says (R4 input -> R5 output)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app import validation
from app.payers.convert import ConversionError, convert
from app.payers.mapping import BY_R4_PATH, CODES, CONVERT, COPY, DROP, RENAME, ROWS, TYPES, Row

SCHEMA = Path(__file__).resolve().parents[1] / "schema"


def _elements(folder: str, rtype: str) -> dict[str, dict[str, Any]]:
    sd = json.loads((SCHEMA / folder / f"StructureDefinition-{rtype}.json").read_text())
    return {e["path"]: e for e in sd["snapshot"]["element"]}


def _types(element: dict[str, Any]) -> list[str]:
    return [t["code"] if isinstance(t, dict) else t for t in element.get("type", [])]


R4 = {path: e for t in TYPES for path, e in _elements("r4", t).items() if path != t}
R5 = {path: e for t in TYPES for path, e in _elements("definitions", t).items()}


def test_every_r4_element_has_exactly_one_row() -> None:
    assert sorted(BY_R4_PATH) == sorted(R4)
    assert len(BY_R4_PATH) == len(ROWS)


def test_every_row_names_an_r5_element_unless_dropped_and_a_known_rule() -> None:
    for row in ROWS:
        assert (row.r5 is None) == (row.rule == DROP), row
        assert row.r5 is None or row.r5 in R5, row
        assert row.rule != DROP or row.note, f"{row.r4}: a drop says why"
        assert row.rule not in (CONVERT, RENAME, CODES) or row.note, f"{row.r4}: a change says what"
        if row.rule == COPY:  # a copy is only right where R5 has the same element with the same types
            assert row.r5 == row.r4
            assert set(_types(R4[row.r4])) <= set(_types(R5[row.r4])) | {"SimpleQuantity"}, (
                row
            )  # R5 writes SimpleQuantity as Quantity
            assert R4[row.r4].get("max") == R5[row.r4].get("max") or R5[row.r4].get("max") == "*", row


# ---- one R4 sample value per R4 type, so each row can be run on an input of its element's own type

_SAMPLES: dict[str, Any] = {
    "string": "a string",
    "markdown": "some *markdown*",
    "code": "a-code",
    "id": "an-id",
    "uri": "http://example.org/a",
    "boolean": True,
    "date": "2020-01-02",
    "dateTime": "2020-01-02T03:04:05Z",
    "decimal": Decimal("12.30"),
    "positiveInt": 2,
    "unsignedInt": 3,
    "integer": 4,
    "http://hl7.org/fhirpath/System.String": "el-1",
    "Extension": [{"url": "http://example.org/x", "valueString": "x"}],
    "Narrative": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">t</div>'},
    "Meta": {"tag": [{"system": "http://example.org/t", "code": "t"}]},
    "Identifier": {"system": "http://example.org/id", "value": "v1"},
    "CodeableConcept": {"coding": [{"system": "http://example.org/cs", "code": "c1"}], "text": "t"},
    "Coding": {"system": "http://example.org/cs", "code": "c1"},
    "Reference": {"reference": "Organization/o1"},
    "Period": {"start": "2020-01-01", "end": "2020-12-31"},
    "Money": {"value": Decimal("135.570"), "currency": "USD"},
    "SimpleQuantity": {"value": Decimal("1.50"), "unit": "h"},
    "Quantity": {"value": Decimal("1.50"), "unit": "h"},
    "Attachment": {"contentType": "text/plain", "size": 12, "title": "note"},
    "Address": {"city": "Ottawa"},
    "HumanName": {"family": "Rivera", "given": ["Ana"]},
    "ContactPoint": {"system": "phone", "value": "555"},
    "Annotation": {"text": "a note"},
    "Resource": {"resourceType": "Patient", "id": "c1", "active": True},
    "BackboneElement": {"id": "b1"},
    "Element": {"id": "b1"},
}


def _sample(row: Row) -> tuple[str, Any]:
    """The JSON key and an R4 value for the row's element (a choice's first type)."""
    element = R4[row.r4]
    name = row.r4.rpartition(".")[2]
    code = (_types(element) or ["BackboneElement"])[0]
    value = _SAMPLES[code]
    if name.endswith("[x]"):
        name = name.removesuffix("[x]") + code[0].upper() + code[1:]
    if element["max"] == "*" and not isinstance(value, list):
        value = [value]
    return name, value


def _nest(path: str, key: str, value: Any) -> dict[str, Any]:
    """An R4 resource holding `value` under `key` at `path` (each backbone on the way a one-item list or object)."""
    parts = path.split(".")
    node: dict[str, Any] = {key: value}
    for depth in range(len(parts) - 1, 0, -1):
        here = ".".join(parts[: depth + 1])
        node = {parts[depth]: [node] if R4[here]["max"] == "*" else node}
    return {"resourceType": parts[0], **node}


def _at(resource: dict[str, Any], path: str, key: str) -> Any:
    """The value under `key` at R5 `path` (a list on the way: its first item); KeyError when absent."""
    node: Any = resource
    for part in path.split(".")[1:]:
        node = node[part]
        if isinstance(node, list):
            node = node[0]
    return node[key]


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


# What each CONVERT row makes of an R4 input (its own examples, not derived from the table).
CONVERTED: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {
    "Patient.meta": [
        (
            {
                "meta": {
                    "versionId": "7",
                    "lastUpdated": "2020-01-01T00:00:00Z",
                    "profile": ["http://x/p"],
                    "tag": [{"code": "t"}],
                }
            },
            {"meta": {"tag": [{"code": "t"}]}},
        )
    ],
    "Coverage.meta": [
        ({"meta": {"versionId": "2", "security": [{"code": "R"}]}}, {"meta": {"security": [{"code": "R"}]}})
    ],
    "ExplanationOfBenefit.meta": [({"meta": {"lastUpdated": "2020-01-01T00:00:00Z"}}, {})],
    "Patient.contained": [
        (
            {
                "contained": [
                    {"resourceType": "Organization", "id": "o"},
                    {"resourceType": "Patient", "id": "p", "active": True},
                ]
            },
            {"contained": [{"resourceType": "Patient", "id": "p", "active": True}]},
        )
    ],
    "Coverage.contained": [
        (
            {"contained": [{"resourceType": "Coverage", "id": "c", "payor": [{"reference": "Organization/o"}]}]},
            {
                "contained": [
                    {
                        "resourceType": "Coverage",
                        "id": "c",
                        "kind": "insurance",
                        "insurer": {"reference": "Organization/o"},
                    }
                ]
            },
        )
    ],
    "ExplanationOfBenefit.contained": [({"contained": [{"resourceType": "Claim", "id": "c"}]}, {})],
    "Patient.photo": [
        ({"photo": [{"contentType": "image/gif", "size": 12}]}, {"photo": [{"contentType": "image/gif", "size": "12"}]})
    ],
    "Coverage.subscriberId": [({"subscriberId": "AB9876"}, {"subscriberId": [{"value": "AB9876"}]})],
    "Coverage.payor": [
        (
            {"payor": [{"reference": "Organization/2"}]},
            {"kind": "insurance", "insurer": {"reference": "Organization/2"}},
        ),
        (
            {"payor": [{"reference": "Patient/5"}]},
            {"kind": "self-pay", "paymentBy": [{"party": {"reference": "Patient/5"}}]},
        ),
        (
            {"payor": [{"identifier": {"value": "123"}}, {"reference": "RelatedPerson/r"}]},
            {
                "kind": "self-pay",
                "insurer": {"identifier": {"value": "123"}},
                "paymentBy": [{"party": {"reference": "RelatedPerson/r"}}],
            },
        ),
    ],
    "Coverage.class.value": [({"class": [{"value": "CB135"}]}, {"class": [{"value": {"value": "CB135"}}]})],
    "ExplanationOfBenefit.supportingInfo.value[x]": [
        (
            {"supportingInfo": [{"valueAttachment": {"size": 40}}]},
            {"supportingInfo": [{"valueAttachment": {"size": "40"}}]},
        ),
        ({"supportingInfo": [{"valueString": "x"}]}, {"supportingInfo": [{"valueString": "x"}]}),
    ],
    "ExplanationOfBenefit.item.bodySite": [
        (
            {"item": [{"bodySite": {"text": "arm"}, "subSite": [{"text": "left"}]}]},
            {"item": [{"bodySite": [{"site": [{"concept": {"text": "arm"}}], "subSite": [{"text": "left"}]}]}]},
        ),
        (
            {"item": [{"bodySite": {"text": "arm"}}]},
            {"item": [{"bodySite": [{"site": [{"concept": {"text": "arm"}}]}]}]},
        ),
    ],
    "ExplanationOfBenefit.item.subSite": [({"item": [{"subSite": [{"text": "left"}]}]}, {"item": [{}]})],
    "ExplanationOfBenefit.addItem.bodySite": [
        (
            {"addItem": [{"bodySite": {"text": "jaw"}}]},
            {"addItem": [{"bodySite": [{"site": [{"concept": {"text": "jaw"}}]}]}]},
        )
    ],
    "ExplanationOfBenefit.addItem.subSite": [
        (
            {"addItem": [{"bodySite": {"text": "jaw"}, "subSite": [{"text": "upper"}]}]},
            {"addItem": [{"bodySite": [{"site": [{"concept": {"text": "jaw"}}], "subSite": [{"text": "upper"}]}]}]},
        )
    ],
    "ExplanationOfBenefit.item.adjudication.value": [
        (
            {"item": [{"adjudication": [{"value": Decimal("0.80")}]}]},
            {"item": [{"adjudication": [{"quantity": {"value": Decimal("0.80")}}]}]},
        ),
        # the same element reached through a contentReference (item.detail.adjudication is item.adjudication)
        (
            {"item": [{"detail": [{"adjudication": [{"value": Decimal("1.0")}]}]}]},
            {"item": [{"detail": [{"adjudication": [{"quantity": {"value": Decimal("1.0")}}]}]}]},
        ),
    ],
    "ExplanationOfBenefit.processNote.type": [
        (
            {"processNote": [{"type": "display"}]},
            {"processNote": [{"type": {"coding": [{"system": "http://hl7.org/fhir/note-type", "code": "display"}]}}]},
        )
    ],
}


def test_every_convert_row_has_its_own_examples() -> None:
    assert sorted(CONVERTED) == sorted(r.r4 for r in ROWS if r.rule == CONVERT)


def _same(a: Any, b: Any) -> bool:
    """Equal JSON, decimals by their digits (`1.50` is not `1.5`)."""
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return type(a) is type(b) and a.as_tuple() == b.as_tuple()
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.r4)
def test_row(row: Row) -> None:
    rtype = row.r4.split(".")[0]
    if row.rule == CONVERT:
        for r4, r5 in CONVERTED[row.r4]:
            out = convert({"resourceType": rtype, **r4})
            assert _same(out.resource, {"resourceType": rtype, **r5}), (r4, out.resource)
        return
    key, value = _sample(row)
    if row.rule == CODES:
        for r4_code, r5_code in row.codes.items():
            out = convert(_nest(_parent(row.r4), key, r4_code)).resource
            assert _at(out, _parent(row.r5 or ""), key) == r5_code
        return
    out = convert(_nest(_parent(row.r4), key, value))
    if row.rule == DROP:
        with pytest.raises(KeyError):
            _at(out.resource, _parent(row.r4), key)
        assert row.r4 in out.dropped
        return
    r5_key = (row.r5 or "").rpartition(".")[2]
    r5_key = (
        r5_key.removesuffix("[x]") + key[len(row.r4.rpartition(".")[2]) - 3 :] if r5_key.endswith("[x]") else r5_key
    )
    assert _same(_at(out.resource, _parent(row.r5 or ""), r5_key), value)
    assert out.dropped == []
    if row.rule == RENAME:
        with pytest.raises(KeyError):
            _at(out.resource, _parent(row.r4), key)


def test_primitive_companions_follow_their_element() -> None:
    out = convert(
        {
            "resourceType": "Patient",
            "gender": "other",
            "_gender": {"extension": [{"url": "http://x", "valueString": "y"}]},
        }
    )
    assert out.resource["_gender"] == {"extension": [{"url": "http://x", "valueString": "y"}]}
    out = convert({"resourceType": "ExplanationOfBenefit", "careTeam": [{"_qualification": {"id": "q"}}]})
    assert out.resource["careTeam"] == [{"_specialty": {"id": "q"}}]


def test_an_element_r4_does_not_define_is_refused() -> None:
    with pytest.raises(ConversionError) as raised:
        convert({"resourceType": "Coverage", "kind": "insurance", "payor": [{"reference": "Organization/1"}]})
    assert raised.value.paths == ["Coverage.kind"]
    with pytest.raises(ConversionError):
        convert({"resourceType": "Claim"})


EXAMPLES = sorted((SCHEMA / "r4" / "examples").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_official_r4_examples_convert_to_valid_r5_with_their_amounts_exact(path: Path) -> None:
    r4 = json.loads(path.read_text(), parse_float=Decimal)
    out = convert(r4)
    validation.validate(r4["resourceType"], out.resource)  # raises with every problem
    assert out.dropped == []
    if r4["resourceType"] == "ExplanationOfBenefit":
        assert _same(out.resource["total"], r4["total"])
        raw = path.read_text()
        for total in out.resource["total"]:
            assert str(total["amount"]["value"]) in raw  # the digits as the payer wrote them


def test_the_eob_billing_view_sums_its_own_totals_exactly_per_currency() -> None:
    from app.billing import view

    adjudication = "http://terminology.hl7.org/CodeSystem/adjudication"

    def total(code: str, value: str, currency: str, system: str | None = adjudication) -> dict[str, Any]:
        coding = {"code": code, **({"system": system} if system else {})}
        return {"category": {"coding": [coding]}, "amount": {"value": Decimal(value), "currency": currency}}

    eob = {
        "total": [
            total("submitted", "100.10", "USD"),
            total("submitted", "0.005", "USD", None),
            total("benefit", "80.08", "USD"),
            total("benefit", "5", "EUR"),
            total("benefit", "1", "USD", "http://example.org/other"),  # another system's code: not the benefit
            total("copay", "20.02", "USD"),
        ],
        "payment": {"amount": {"value": Decimal("80.08"), "currency": "USD"}},
    }
    got = view("ExplanationOfBenefit", eob)
    assert got["submitted"] == [{"currency": "USD", "value": Decimal("100.105")}]
    assert got["adjudicated"] == [
        {"currency": "EUR", "value": Decimal("5")},
        {"currency": "USD", "value": Decimal("80.08")},
    ]
    assert got["paid"] == [{"currency": "USD", "value": Decimal("80.08")}]
    assert got["patientShare"] == [
        {"currency": "EUR", "value": Decimal("-5")},
        {"currency": "USD", "value": Decimal("20.025")},
    ]
    assert view("ExplanationOfBenefit", {})["paid"] == []


def test_readme_shows_the_mapping_as_it_is() -> None:
    from app.payers.describe import describe_mapping

    readme = (SCHEMA.parent / "README.md").read_text()
    assert describe_mapping().strip() in readme, "README.md's R4 -> R5 table drifted: paste describe_mapping() output"
