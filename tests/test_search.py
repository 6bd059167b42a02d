"""Search against the real database: index values, filters per parameter type, sorts and keyset paging."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.errors import BAD_USER_INPUT, FinGateError
from app.fhir.model import SERVED_RESOURCES
from app.store import CODEC_OPTIONS, search

EXAMPLES = Path(__file__).resolve().parents[1] / "schema" / "examples"
ISO = "urn:iso:std:iso:4217"


def _meta(updated: str) -> dict[str, Any]:
    return {"versionId": "1", "lastUpdated": updated}


def _claim(id: str, status: str, patient: str | None, **more: Any) -> dict[str, Any]:
    out = {"resourceType": "Claim", "id": id, "status": status, **more}
    if patient:
        out["patient"] = {"reference": patient}
    return out


def _invoice(id: str, value: str | None, currency: str = "USD") -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Invoice", "id": id, "status": "issued"}
    if value is not None:
        out["totalGross"] = {"value": Decimal(value), "currency": currency}
    return out


def _account(id: str, name: str, period: dict[str, str] | None, *subjects: str) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Account", "id": id, "status": "active", "name": name}
    if period:
        out["servicePeriod"] = period
    if subjects:
        out["subject"] = [{"reference": s} for s in subjects]
    return out


def _notice(id: str, created: str | None, status: str, updated: str) -> dict[str, Any]:
    out = {"resourceType": "PaymentNotice", "id": id, "status": status, "meta": _meta(updated)}
    if created:
        out["created"] = created
    return out


CLAIMS = [
    _claim(
        "c1", "active", "Patient/p1",
        use="claim",
        created="2024-01-15",  # [2024-01-15, 2024-01-16)
        identifier=[{"system": "http://ex/claims", "value": "A-1"}],
        priority={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        provider={"reference": "Organization/o1"},
        insurer={"reference": "Organization/ins/_history/3"},
        meta=_meta("2024-02-01T10:00:00Z"),
    ),
    _claim(
        "c2", "draft", "Patient/p2",
        created="2024-01-15T23:30:00-05:00",  # 2024-01-16T04:30:00Z
        identifier=[{"value": "A-2"}],
        priority={"coding": [{"code": "stat"}]},
        provider={"reference": "PractitionerRole/r1"},
        meta=_meta("2024-03-01T00:00:00Z"),
    ),
    _claim(
        "c3", "cancelled", "http://other.org/fhir/Patient/p1",
        created="2023-12-31T23:59:59.999Z",
        identifier=[{"system": "http://ex/claims", "value": '{"$ne": null}'}],
        meta=_meta("2024-03-01T00:00:00+01:00"),  # 2024-02-29T23:00:00Z
    ),
    _claim(
        "c4", "active", "Patient/p1",
        created="2024",
        identifier=[{"system": "urn:t", "value": "x,y|z"}],
        meta=_meta("2024-03-05T12:00:00Z"),
    ),
    _claim("c5", "entered-in-error", "Patient/p3", meta=_meta("2024-03-05T12:00:00Z")),
]  # fmt: skip

ACCOUNTS = [
    _account("a1", "Zoë Ärztin", {"start": "2024-01-01", "end": "2024-06-30"}, "Patient/p1", "Organization/o1"),
    _account("a2", "zoe.*", {"start": "2024-03-01"}, "Organization/o1"),
    _account("a3", "Bob", {"end": "2023-12-31"}, "Patient/p2"),
    _account("a4", "Zoey", None, "http://x.org/fhir/Patient/p9"),
]

INVOICES = [
    _invoice("i1", "100.10"),
    _invoice("i2", "100.1"),
    _invoice("i3", "100.099"),
    _invoice("i4", "100", "EUR"),
    _invoice("i5", "99.5"),
    _invoice("i6", "250"),
    _invoice("i7", None),
]

ORGANIZATIONS = [
    {
        "resourceType": "Organization",
        "id": "o1",
        "active": True,
        "name": "Acme Health",
        "identifier": [{"system": "urn:x", "value": "1"}],
        "qualification": [{"identifier": [{"system": "urn:q", "value": "Q1"}], "code": {"text": "q"}}],
        "contact": [{"address": {"line": ["Bahnhofstr. 1"], "city": "Zürich", "postalCode": "8001", "use": "work"}}],
    },
    {"resourceType": "Organization", "id": "o2", "active": False, "name": "Beta Care", "alias": ["Acme Beta"]},
]

CONTRACTS = [
    {"resourceType": "Contract", "id": "k1", "url": "http://ex.org/a"},
    {"resourceType": "Contract", "id": "k2", "url": "http://ex.org/a/b"},
    {"resourceType": "Contract", "id": "k3", "url": ".*"},
]

# Paging: ties on `created` and on `status`, missing `created` values, ties on `_lastUpdated`.
NOTICES = [
    _notice(f"n{i:02d}", created, status, updated)
    for i, (created, status, updated) in enumerate(
        [
            ("2024-01-03", "active", "2024-05-01T00:00:00Z"),
            ("2024-01-01", "draft", "2024-05-01T00:00:00Z"),
            (None, "active", "2024-05-02T00:00:00Z"),
            ("2024-01-02", "active", "2024-05-01T00:00:00Z"),
            ("2024-01-01", "active", "2024-05-03T00:00:00Z"),
            ("2024-01-03", "cancelled", "2024-05-02T00:00:00Z"),
            (None, "draft", "2024-05-01T00:00:00Z"),
            ("2024-01-02", "draft", "2024-05-04T00:00:00Z"),
            ("2024-01-01", "active", "2024-05-01T00:00:00Z"),
            ("2023-12-31T10:00:00Z", "entered-in-error", "2024-05-02T00:00:00Z"),
            ("2024-01-03", "active", "2024-05-01T00:00:00Z"),
            (None, "active", "2024-05-05T00:00:00Z"),
            ("2024-01-02", "cancelled", "2024-05-01T00:00:00Z"),
        ]
    )
]

FIXTURES: dict[str, list[dict[str, Any]]] = {
    "Claim": CLAIMS,
    "Account": ACCOUNTS,
    "Invoice": INVOICES,
    "Organization": ORGANIZATIONS,
    "Contract": CONTRACTS,
    "PaymentNotice": NOTICES,
}


@pytest.fixture(scope="module")
async def db(mongo_uri: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """A database holding FIXTURES, stored as the store stores them, with the indexes `index_keys` asks for."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    database = client.get_database(f"search_{uuid.uuid4().hex[:12]}", codec_options=CODEC_OPTIONS)
    try:
        for rtype, resources in FIXTURES.items():
            for keys in search.index_keys(rtype):
                await database[rtype].create_index(keys)
            docs = [{**r, "_id": r["id"], "_search": search.index_values(rtype, r)} for r in resources]
            await database[rtype].insert_many(docs)
        yield database
    finally:
        await client.drop_database(database.name)
        await client.close()


async def _ids(db: AsyncDatabase[dict[str, Any]], rtype: str, params: dict[str, Any]) -> list[str]:
    return sorted([d["_id"] async for d in db[rtype].find(search.compile_filter(rtype, params), {"_id": 1})])


def _bad(call: Any, *args: Any) -> FinGateError:
    with pytest.raises(FinGateError) as info:
        call(*args)
    assert info.value.code == BAD_USER_INPUT
    return info.value


# (resource type, params, expected ids)
CASES: list[tuple[str, dict[str, str], list[str]]] = [
    # token: code, system|code, |code, system|, identifier, escapes, case-sensitive codes
    ("Claim", {"status": "active"}, ["c1", "c4"]),
    ("Claim", {"status": "ACTIVE"}, []),
    ("Claim", {"use": "claim"}, ["c1"]),
    ("Claim", {"identifier": "A-1"}, ["c1"]),
    ("Claim", {"identifier": "http://ex/claims|A-1"}, ["c1"]),
    ("Claim", {"identifier": "http://other|A-1"}, []),
    ("Claim", {"identifier": "http://ex/claims|"}, ["c1", "c3"]),
    ("Claim", {"identifier": "|A-2"}, ["c2"]),
    ("Claim", {"identifier": "|A-1"}, []),
    ("Claim", {"identifier": r"urn:t|x\,y\|z"}, ["c4"]),
    ("Claim", {"identifier": r"x\,y\|z"}, ["c4"]),
    ("Claim", {"priority": "http://terminology.hl7.org/CodeSystem/processpriority|normal"}, ["c1"]),
    ("Claim", {"priority": "|stat"}, ["c2"]),
    # a `code` element's required binding gives its system: `system|code` and `system|` match it
    ("Claim", {"status": "http://hl7.org/fhir/fm-status|active"}, ["c1", "c4"]),
    ("Claim", {"status": "http://hl7.org/fhir/fm-status|active,draft"}, ["c1", "c2", "c4"]),
    ("Claim", {"status": "http://hl7.org/fhir/other|active"}, []),
    ("Claim", {"status": "http://hl7.org/fhir/claim-use|claim"}, []),
    ("Claim", {"status": "http://hl7.org/fhir/fm-status|"}, ["c1", "c2", "c3", "c4", "c5"]),
    ("Claim", {"use": "http://hl7.org/fhir/claim-use|claim"}, ["c1"]),
    ("Claim", {"use": "http://hl7.org/fhir/claim-use|"}, ["c1"]),
    ("Claim", {"use": "http://hl7.org/fhir/fm-status|"}, []),
    ("Organization", {"active": "true"}, ["o1"]),
    ("Organization", {"active": "false"}, ["o2"]),
    ("Organization", {"identifier": "urn:q|Q1"}, ["o1"]),  # the second branch of a `|` union
    ("Organization", {"address-use": "work"}, ["o1"]),
    # string: starts-with, case and accent insensitive, regex characters literal, unions
    ("Account", {"name": "zoe"}, ["a1", "a2", "a4"]),
    ("Account", {"name": "ZOË"}, ["a1", "a2", "a4"]),
    ("Account", {"name": "zoe arz"}, ["a1"]),
    ("Account", {"name": "Zoë Ärztin"}, ["a1"]),
    ("Account", {"name": "zoe.*"}, ["a2"]),
    ("Account", {"name": ".*"}, []),
    ("Account", {"name": "z.e"}, []),
    ("Account", {"name": "rztin"}, []),
    ("Account", {"name": "bob,zoey"}, ["a3", "a4"]),
    ("Organization", {"name": "acme"}, ["o1", "o2"]),
    ("Organization", {"name": "beta"}, ["o2"]),
    ("Organization", {"address-city": "zur"}, ["o1"]),
    ("Organization", {"address": "bahnhof"}, ["o1"]),
    ("Organization", {"address": "8001"}, ["o1"]),
    # date over partial dates, dateTimes with offsets (UTC) and instants; resource ranges:
    # c1 [01-15, 01-16)  c2 [01-16T04:30:00Z, +1s)  c3 [2023-12-31T23:59:59.999Z, +1ms)  c4 [2024, 2025)  c5 -
    ("Claim", {"created": "2024-01-15"}, ["c1"]),
    ("Claim", {"created": "eq2024-01-15"}, ["c1"]),
    ("Claim", {"created": "2024-01-16"}, ["c2"]),
    ("Claim", {"created": "2024-01"}, ["c1", "c2"]),
    ("Claim", {"created": "2024"}, ["c1", "c2", "c4"]),
    ("Claim", {"created": "2023"}, ["c3"]),
    ("Claim", {"created": "2024-01-15T23:30:00-05:00"}, ["c2"]),
    ("Claim", {"created": "2024-01-16T04:30Z"}, ["c2"]),
    ("Claim", {"created": "2023-12-31T23:59:59.999Z"}, ["c3"]),
    ("Claim", {"created": "ne2024-01"}, ["c3", "c4"]),
    ("Claim", {"created": "gt2024-01-15"}, ["c2", "c4"]),
    ("Claim", {"created": "lt2024-01-15"}, ["c3", "c4"]),
    ("Claim", {"created": "ge2024-01-15"}, ["c1", "c2", "c4"]),
    ("Claim", {"created": "le2024-01-15"}, ["c1", "c3", "c4"]),
    ("Claim", {"created": "sa2024-01-15"}, ["c2"]),
    ("Claim", {"created": "sa2023"}, ["c1", "c2", "c4"]),
    ("Claim", {"created": "eb2024"}, ["c3"]),
    ("Claim", {"created": "eb2023"}, []),
    ("Claim", {"created": "ap2024-01-15"}, ["c1", "c2", "c3", "c4"]),
    ("Claim", {"created": "ap2010-01-15"}, []),
    ("Claim", {"created": "2024-01-15,2023"}, ["c1", "c3"]),
    # Period: a1 [2024-01-01, 2024-07-01)  a2 [2024-03-01, open)  a3 [open, 2024-01-01)  a4 -
    ("Account", {"period": "2024"}, ["a1"]),
    ("Account", {"period": "2024-04-01"}, []),
    ("Account", {"period": "ne2024-04-01"}, ["a1", "a2", "a3"]),
    ("Account", {"period": "ge2024-06"}, ["a2"]),
    ("Account", {"period": "gt2030"}, ["a2"]),
    ("Account", {"period": "lt2024"}, ["a3"]),
    ("Account", {"period": "le1900"}, ["a3"]),
    ("Account", {"period": "sa2023"}, ["a1", "a2"]),
    ("Account", {"period": "eb2024-03"}, ["a3"]),
    # _lastUpdated: c1 02-01T10Z  c2 03-01T00Z  c3 02-29T23Z  c4 c5 03-05T12Z
    ("Claim", {"_lastUpdated": "ge2024-03-01"}, ["c2", "c4", "c5"]),
    ("Claim", {"_lastUpdated": "2024-02"}, ["c1", "c3"]),
    ("Claim", {"_lastUpdated": "2024-03-05T12:00:00Z"}, ["c4", "c5"]),
    # reference: Type/id, bare id over the targets, absolute URLs, history stripped, where(resolve() is T)
    ("Claim", {"patient": "Patient/p1"}, ["c1", "c4"]),
    ("Claim", {"patient": "p1"}, ["c1", "c4"]),
    ("Claim", {"patient": "Patient/p1/_history/2"}, ["c1", "c4"]),
    ("Claim", {"patient": "http://other.org/fhir/Patient/p1"}, ["c3"]),
    ("Claim", {"patient": "Patient/p1,p3"}, ["c1", "c4", "c5"]),
    ("Claim", {"insurer": "Organization/ins"}, ["c1"]),
    ("Claim", {"provider": "o1"}, ["c1"]),
    ("Claim", {"provider": "r1"}, ["c2"]),
    ("Account", {"subject": "o1"}, ["a1", "a2"]),
    ("Account", {"subject": "Organization/o1"}, ["a1", "a2"]),
    ("Account", {"patient": "p1"}, ["a1"]),
    ("Account", {"patient": "Patient/p2"}, ["a3"]),
    ("Account", {"patient": "http://x.org/fhir/Patient/p9"}, ["a4"]),
    # quantity (Money): i1 100.10  i2 100.1  i3 100.099  i4 100 EUR  i5 99.5  i6 250  (USD unless said)
    ("Invoice", {"totalgross": "100"}, ["i1", "i2", "i3", "i4", "i5"]),
    ("Invoice", {"totalgross": "100.1"}, ["i1", "i2", "i3"]),
    ("Invoice", {"totalgross": "100.10"}, ["i1", "i2", "i3"]),
    ("Invoice", {"totalgross": "100.100"}, ["i1", "i2"]),
    ("Invoice", {"totalgross": "100.099"}, ["i3"]),
    ("Invoice", {"totalgross": "1.00099e2"}, ["i3"]),
    ("Invoice", {"totalgross": "gt100.1"}, ["i6"]),
    ("Invoice", {"totalgross": "ge100.1"}, ["i1", "i2", "i6"]),
    ("Invoice", {"totalgross": "lt100.1"}, ["i3", "i4", "i5"]),
    ("Invoice", {"totalgross": "le100.10"}, ["i1", "i2", "i3", "i4", "i5"]),
    ("Invoice", {"totalgross": "ne100"}, ["i6"]),
    ("Invoice", {"totalgross": "sa100.099"}, ["i1", "i2", "i6"]),
    ("Invoice", {"totalgross": "eb100"}, ["i5"]),
    ("Invoice", {"totalgross": "ap100"}, ["i1", "i2", "i3", "i4", "i5"]),
    ("Invoice", {"totalgross": "ap250"}, ["i6"]),
    ("Invoice", {"totalgross": "100||EUR"}, ["i4"]),
    ("Invoice", {"totalgross": f"100|{ISO}|USD"}, ["i1", "i2", "i3", "i5"]),
    ("Invoice", {"totalgross": "ge100||USD"}, ["i1", "i2", "i3", "i6"]),
    ("Invoice", {"totalgross": "100|urn:other|"}, []),
    ("Invoice", {"totalgross": "99.5,250"}, ["i5", "i6"]),
    # uri: exact
    ("Contract", {"url": "http://ex.org/a"}, ["k1"]),
    ("Contract", {"url": "http://ex.org"}, []),
    ("Contract", {"url": ".*"}, ["k3"]),
    # _id, AND of params, GraphQL argument names, nothing
    ("Claim", {"_id": "c1"}, ["c1"]),
    ("Claim", {"_id": "c1,c3"}, ["c1", "c3"]),
    ("Claim", {"status": "active", "patient": "p1"}, ["c1", "c4"]),
    ("Claim", {"status": "active", "created": "2024-01"}, ["c1"]),
    ("Claim", {"status": "active,draft", "_lastUpdated": "lt2024-03-02"}, ["c1", "c2"]),
    # a list of values is AND (a date range), a comma inside one stays OR
    ("Claim", {"created": ["ge2024-01-15", "lt2024-01-16"]}, ["c1", "c4"]),
    ("Claim", {"created": ["ge2024-01-15", "le2024-01-15"]}, ["c1", "c4"]),
    ("Claim", {"created": ["gt2023", "lt2024-02"]}, ["c1", "c2", "c4"]),
    ("Claim", {"created": ["2024-01-15,2023", "lt2024"]}, ["c3"]),
    ("Claim", {"status": ["active"]}, ["c1", "c4"]),
    ("Claim", {"status": ["active", "draft"]}, []),
    ("Account", {"period": ["ge2024-03", "le2024-04"]}, ["a1", "a2"]),
    ("Claim", {}, ["c1", "c2", "c3", "c4", "c5"]),
    # injection: user values are literals, never operators or patterns
    ("Claim", {"identifier": '{"$ne": null}'}, ["c3"]),
    ("Claim", {"identifier": 'http://ex/claims|{"$ne": null}'}, ["c3"]),
    ("Claim", {"status": '{"$ne": null}'}, []),
    ("Claim", {"status": ".*"}, []),
    ("Claim", {"patient": '{"$ne": null}'}, []),
    ("Claim", {"_id": '{"$ne": null}'}, []),
    ("Account", {"name": '{"$ne": null}'}, []),
    ("Account", {"name": "$where"}, []),
]


@pytest.mark.parametrize(("rtype", "params", "expected"), CASES, ids=[f"{t}-{p}" for t, p, _ in CASES])
async def test_search(
    db: AsyncDatabase[dict[str, Any]], rtype: str, params: dict[str, str], expected: list[str]
) -> None:
    assert await _ids(db, rtype, params) == expected


BAD = [
    ("Claim", {"foo": "1"}, "known: _id, _lastUpdated, care-team"),
    ("Claim", {"name": "x"}, "Unknown search parameter 'name'"),
    ("Patient", {"nickname": "x"}, "known: _id, _lastUpdated"),
    ("Claim", {"status:missing": "true"}, "Unknown"),
    ("Claim", {"status": 5}, "expected a string"),
    ("Claim", {"status": None}, "expected a string"),
    ("Claim", {"status": ["active", 5]}, "expected a string"),
    ("Claim", {"status": []}, "an empty list of values"),
    ("Claim", {"created": ["ge2024", ""]}, "empty value"),
    ("Claim", {"status": ""}, "empty value"),
    ("Claim", {"status": "active,"}, "empty value"),
    ("Claim", {"identifier": "a|b|c"}, "use code, system|code"),
    ("Claim", {"identifier": "|"}, "use code, system|code"),
    ("Claim", {"created": "2024-13"}, "YYYY, YYYY-MM, YYYY-MM-DD"),
    ("Claim", {"created": "2024-02-30"}, "is not a date"),
    ("Claim", {"created": "yesterday"}, "is not a date"),
    ("Claim", {"created": "gt"}, "is not a date"),
    ("Claim", {"created": "2024-01-01T10"}, "is not a date"),
    ("Claim", {"created": "xx2024"}, "is not a date"),
    ("Claim", {"created": '{"$gt": ""}'}, "is not a date"),
    ("Claim", {"patient": "Organization/o1"}, "points at Patient"),
    ("Claim", {"patient": "a/b/c"}, "use Type/id, id"),
    ("Account", {"patient": "Organization/o1"}, "points at Patient"),
    ("Invoice", {"totalgross": "abc"}, "[prefix]number|system|code"),
    ("Invoice", {"totalgross": "100|USD"}, "[prefix]number||code"),
    ("Invoice", {"totalgross": "NaN"}, "is not a quantity"),
    ("Invoice", {"totalgross": "1" + "0" * 40}, "34 digits"),
    ("Invoice", {"totalgross": '{"$ne": null}'}, "is not a quantity"),
    ("Claim", {"status": "\ud800"}, "not valid Unicode"),
]


@pytest.mark.parametrize(("rtype", "params", "message"), BAD, ids=[f"{t}-{p}" for t, p, _ in BAD])
def test_bad_input(rtype: str, params: dict[str, Any], message: str) -> None:
    assert message in _bad(search.compile_filter, rtype, params).message


def test_the_store_takes_codes_only() -> None:
    """Argument names become codes once, in the GraphQL layer (app.graphql.resolvers)."""
    assert search.compile_filter("PaymentReconciliation", {"payment-issuer": "Organization/2"})
    assert (
        "Unknown search parameter 'payment_issuer'"
        in _bad(search.compile_filter, "PaymentReconciliation", {"payment_issuer": "Organization/2"}).message
    )
    assert "Unknown sort parameter" in _bad(search.compile_sort, "PaymentReconciliation", "payment_issuer").message


def test_sort_accepts_argument_names_in_the_graphql_layer() -> None:
    from app.graphql.resolvers import sort_codes

    codes = {"payment_issuer": "payment-issuer", "created": "created"}
    assert sort_codes(codes, "payment_issuer, -created,-_id") == "payment-issuer,-created,-_id"
    assert sort_codes(codes, None) is None


# -- sort and keyset paging --------------------------------------------------------------------


def _mongo_order(values: list[Any], direction: int) -> list[Any]:
    """Expected order of one key: MongoDB puts null/missing lowest."""
    present = sorted(v for v in values if v is not None)
    nulls = [None] * (len(values) - len(present))
    return nulls + present if direction == 1 else present[::-1] + nulls


def _expected(sort: str) -> list[str]:
    def key(code: str, doc: dict[str, Any]) -> Any:
        if code == "_id":
            return doc["id"]
        if code == "_lastUpdated":
            return search.parse_date(doc["meta"]["lastUpdated"])[0]
        value = doc.get(code)
        return search.parse_date(value)[0] if code == "created" and value else value

    fields = [(f.lstrip("-"), -1 if f.startswith("-") else 1) for f in sort.split(",") if f]
    fields += [("_id", fields[-1][1] if fields else 1)]  # ties: in the last key's direction

    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        for code, direction in fields:
            va, vb = key(code, a), key(code, b)
            if va == vb:
                continue
            order = _mongo_order([va, vb], direction)
            return -1 if order[0] == va else 1
        return 0

    return [d["id"] for d in sorted(NOTICES, key=functools.cmp_to_key(compare))]


SORTS = ["created", "-created", "status,-created", "-status,created", "_lastUpdated", "-_lastUpdated", "", "-_id"]


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("size", [1, 3, 5])
async def test_keyset_paging(db: AsyncDatabase[dict[str, Any]], sort: str, size: int) -> None:
    coll = db["PaymentNotice"]
    order = search.compile_sort("PaymentNotice", sort)
    full = [d["_id"] async for d in coll.find({}, {"_id": 1}, sort=order)]
    assert full == _expected(sort)
    walked: list[str] = []
    cursor = None
    while True:
        query = search.keyset_filter("PaymentNotice", sort, cursor) if cursor else {}
        page = [d async for d in coll.find(query, sort=order, limit=size)]
        walked += [d["_id"] for d in page]
        if len(page) < size:
            break
        cursor = search.keyset_position("PaymentNotice", sort, page[-1])
    assert walked == full
    position = search.keyset_position("PaymentNotice", sort, (await coll.find_one({"_id": full[-1]})) or {})
    back = [full[-1]]  # then walked backwards from the last
    while True:
        query = search.keyset_filter("PaymentNotice", sort, position, backward=True)
        page = [d async for d in coll.find(query, sort=search.reversed_sort(order), limit=size)]
        back += [d["_id"] for d in page]
        if len(page) < size:
            break
        position = search.keyset_position("PaymentNotice", sort, page[-1])
    assert back == full[::-1]


async def test_paging_with_a_filter(db: AsyncDatabase[dict[str, Any]]) -> None:
    coll, sort = db["PaymentNotice"], "-created"
    query = search.compile_filter("PaymentNotice", {"status": "active,draft"})
    order = search.compile_sort("PaymentNotice", sort)
    full = [d["_id"] async for d in coll.find(query, sort=order)]
    walked, cursor = [], None
    while True:
        paged = {"$and": [query, search.keyset_filter("PaymentNotice", sort, cursor)]} if cursor else query
        page = [d async for d in coll.find(paged, sort=order, limit=2)]
        walked += [d["_id"] for d in page]
        if not page:
            break
        cursor = search.keyset_position("PaymentNotice", sort, page[-1])
    assert walked == full and len(full) == 10


def test_compile_sort() -> None:
    assert search.compile_sort("Claim", None) == [("_id", 1)]
    assert search.compile_sort("Claim", "status,-created") == [
        ("_search.status_sort", 1),
        ("_search.created_sort", -1),
        ("_id", -1),
    ]
    assert search.compile_sort("Claim", "-_id") == [("_id", -1)]
    assert search.compile_sort("PaymentReconciliation", "payment-issuer") == [
        ("_search.payment-issuer_sort", 1),
        ("_id", 1),
    ]
    assert "known: _id" in _bad(search.compile_sort, "Claim", "name").message
    assert "twice" in _bad(search.compile_sort, "Claim", "created,-created").message


def test_keyset_positions_are_checked() -> None:
    doc = {"_id": "n1", "_search": search.index_values("PaymentNotice", NOTICES[0])}
    position = search.keyset_position("PaymentNotice", "created", doc)
    bounded = search.keyset_filter("PaymentNotice", "created", position)
    assert list(bounded["$and"][0]["_search.created_sort"]) == ["$gte"]  # a range the index bounds can start at
    for bad in [
        [],
        "not a position",
        search.keyset_position("PaymentNotice", "status,-created", doc),  # another sort
        [{"$gt": ""}, "n1"],
        [{"d": "1"}, "n1"],
        [{"d": 1}, None],
        [{"d": 1}],
    ]:
        _bad(search.keyset_filter, "PaymentNotice", "created", bad)
    amount = {"_id": "i1", "_search": search.index_values("Invoice", INVOICES[0])}
    after = search.keyset_filter("Invoice", "totalgross", search.keyset_position("Invoice", "totalgross", amount))
    assert (
        str(after["$and"][1]["$or"][0]["_search.totalgross_sort"]["$gt"]) == "100.10"
    )  # digits survive the round trip


# -- references and indexes ------------------------------------------------------------------------


def test_reference_keys() -> None:
    assert search.reference_key("ClaimResponse", "request") == "_search.request"
    assert search.reference_key("PaymentReconciliation", "allocation-target") == "_search.allocation-target"
    assert {"allocation-target", "allocation-response", "payment-issuer"} <= set(
        search.reference_params("PaymentReconciliation")
    )
    assert "use one of" in _bad(search.reference_key, "Claim", "status").message
    assert search.reference_params("Patient") == ["general-practitioner", "link", "organization"]


def test_where_resolve_keeps_only_that_type() -> None:
    values = search.index_values("Account", ACCOUNTS[0])
    assert values["patient"] == ["Patient/p1"]
    assert values["subject"] == ["Patient/p1", "Organization/o1"]


@pytest.mark.parametrize("rtype", SERVED_RESOURCES)
def test_index_keys(rtype: str) -> None:
    keys = search.index_keys(rtype)
    assert ["_search._lastUpdated.lo", "_search._lastUpdated.hi"] == [k for k, _ in keys[0]]
    assert len(keys) < 64  # MongoDB's limit per collection, `_id` included


# -- the R5 examples ------------------------------------------------------------------------------

EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.json") if not p.name.startswith("_"))


def _example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text(), parse_float=Decimal)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_index_values_over_examples(path: Path) -> None:
    resource = _example(path.name)
    values = search.index_values(resource["resourceType"], resource)
    params = search.indexed_params(resource["resourceType"]).values()
    modified = {f"{p.code}:{m}" for p in params for m, _ in p.modified}
    assert set(values) <= {k for p in params for k in (p.code, f"{p.code}_sort")} | modified


def test_example_values() -> None:
    er2500 = search.index_values("PaymentReconciliation", _example("PaymentReconciliation-ER2500.json"))
    assert er2500["payment-issuer"] == ["Organization/2"]
    assert er2500["status"] == [{"s": None, "c": "active"}]
    claim = search.index_values("Claim", _example("Claim-100150.json"))
    assert claim["patient"] == ["Patient/1"]
    assert claim["identifier"] == [{"s": "http://happyvalley.com/claim", "c": "12345"}]
    invoice = search.index_values("Invoice", _example("Invoice-example.json"))
    assert [(str(e["v"]), e["s"], e["c"]) for e in invoice["totalgross"]] == [("48", ISO, "EUR")]
    account = search.index_values("Account", _example("Account-example.json"))
    assert [(e["lo"].isoformat(), e["hi"].isoformat()) for e in account["period"]] == [
        ("2016-01-01T00:00:00+00:00", "2016-07-01T00:00:00+00:00")
    ]


async def test_reverse_reference_over_examples(db: AsyncDatabase[dict[str, Any]]) -> None:
    coll = db["PaymentReconciliation"]
    er2500 = _example("PaymentReconciliation-ER2500.json")
    await coll.insert_one(
        {**er2500, "_id": er2500["id"], "_search": search.index_values("PaymentReconciliation", er2500)}
    )
    key = search.reference_key("PaymentReconciliation", "payment-issuer")
    assert [d["_id"] async for d in coll.find({key: {"$in": ["Organization/2", "Organization/9"]}})] == ["ER2500"]
    assert await _ids(db, "PaymentReconciliation", {"payment-issuer": "2", "created": "2014-08-16"}) == ["ER2500"]


# -- every served type's R5 parameters ------------------------------------------------------------


def test_every_served_type_serves_its_r5_parameters() -> None:
    """All of `search-parameters.json` but the types that are not a path's values and the listed exceptions."""
    from app.fhir.model import SCHEMA_DIR, UNSERVED_SEARCH_PARAMETERS, spec

    vendored = json.loads((SCHEMA_DIR / "search-parameters.json").read_text())
    for rtype in SERVED_RESOURCES:
        assert vendored[rtype], rtype
        wanted = {
            p["code"]
            for p in vendored[rtype]
            if p["type"] not in ("special", "composite") and (rtype, p["code"]) not in UNSERVED_SEARCH_PARAMETERS
        }
        served = set(search.search_params(rtype)) - {"_id", "_lastUpdated"}
        assert served - set(spec().search_params[rtype]) == set()
        assert wanted <= served, (rtype, wanted - served)


def test_the_fhirpath_forms_of_the_non_financial_types() -> None:
    patient = {
        "resourceType": "Patient", "id": "p", "deceasedDateTime": "2026-01-02",
        "telecom": [{"system": "email", "value": "a@b.org"}, {"system": "phone", "value": "555"}],
    }  # fmt: skip
    values = search.index_values("Patient", patient)
    assert values["email"] == [{"s": None, "c": "a@b.org"}] and values["phone"] == [{"s": None, "c": "555"}]
    assert values["deceased"] == [{"s": None, "c": "true"}] and values["death-date"][0]["lo"].day == 2
    assert search.index_values("Patient", {"id": "q"})["deceased"] == [{"s": None, "c": "false"}]
    assert search.index_values("Patient", {"id": "r", "deceasedBoolean": False})["deceased"][0]["c"] == "false"
    assert search.index_values("Practitioner", {"id": "s", "deceasedBoolean": True})["deceased"][0]["c"] == "true"
    charge = {
        "id": "c",
        "occurrenceTiming": {"event": ["2026-03-01"], "repeat": {"boundsPeriod": {"start": "2026-04-01"}}},
    }
    assert len(search.index_values("ChargeItem", charge)["occurrence"]) == 2
    task = {"id": "t", "output": [{"valueReference": {"reference": "Claim/1"}}, {"valueString": "x"}]}
    assert search.index_values("Task", task)["output"] == ["Claim/1"]
    encounter = {"id": "e", "length": {"value": 30, "unit": "min"}, "class": [{"coding": [{"code": "AMB"}]}]}
    values = search.index_values("Encounter", encounter)
    assert values["length"][0]["c"] == "min" and values["class"] == [{"s": None, "c": "AMB"}]


def test_a_keyword_parameter_is_an_argument_named_as_its_code() -> None:
    from app.graphql.compat import graphql_schema
    from tests.harness import schema

    assert "class" in graphql_schema(schema()).query_type.fields["EncounterList"].args  # type: ignore[union-attr]
    assert search.compile_filter("Encounter", {"class": ["AMB"]}) == {"_search.class.c": "AMB"}
