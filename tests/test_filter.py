"""`_filter` expressions and search modifiers against the real database: every operator, chains, errors, both engines."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.errors import BAD_USER_INPUT, FinGateError
from app.graphql import resolvers
from app.graphql.build import SearchModifier
from app.settings import Settings
from app.store import Store, filter, search
from tests.conftest import fresh_store
from tests.harness import client_for


def _org(id: str, name: str, active: bool | None = None, city: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Organization", "id": id, "name": name}
    if active is not None:
        out["active"] = active
    if city:
        out["contact"] = [{"address": {"city": city}}]
    return out


def _claim(id: str, status: str, use: str, patient: str, provider: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Claim", "id": id, "status": status, "use": use,
        "patient": {"reference": patient}, "provider": {"reference": provider}, **more,
    }  # fmt: skip


def _account(id: str, name: str | None, owner: str | None, period: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Account", "id": id, "status": "active"}
    for key, value in (("name", name), ("owner", owner and {"reference": owner}), ("servicePeriod", period)):
        if value:
            out[key] = value
    return out


def _invoice(
    id: str, status: str, total: str | None, currency: str = "USD", account: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Invoice", "id": id, "status": status}
    if total:
        out["totalGross"] = {"value": Decimal(total), "currency": currency}
    if account:
        out["account"] = {"reference": account}
    return out


DATA: list[dict[str, Any]] = [
    _org("o1", "Acme Health", active=True, city="Zürich"),
    _org("o2", "Beta Care", active=False),
    _org("o3", "Acme Beta"),
    {"resourceType": "Patient", "id": "p1"},
    {"resourceType": "Patient", "id": "p2"},
    _claim(
        "c1", "active", "claim", "Patient/p1", "Organization/o1",
        created="2024-01-15",
        identifier=[{"system": "http://ex/claims", "value": "A-1"}],
        priority={"coding": [{"code": "normal", "display": "Normal"}]},
        insurer={"reference": "Organization/o1", "identifier": {"system": "urn:ins", "value": "X1"}},
    ),
    _claim(
        "c2", "draft", "claim", "Patient/p2", "Organization/o2",
        created="2024-02-10T10:00:00Z",
        identifier=[{"value": "A-2"}],
        priority={"coding": [{"code": "stat"}], "text": "Urgent"},
    ),
    _claim(
        "c3", "cancelled", "preauthorization", "Patient/p1", "PractitionerRole/r1",
        created="2023-12-31",
        insurer={"identifier": {"system": "urn:ins", "value": "X9"}},
    ),
    _claim("c4", "active", "claim", "Patient/p2", "Organization/o3", insurer={"reference": "Organization/o2"}),
    _account("a1", "Zoë Ärztin", "Organization/o1", {"start": "2024-01-01", "end": "2024-06-30"}),
    _account("a2", "zoe", "Organization/o2"),
    _account("a3", "Bob Smith", None, {"start": "2025-01-01"}),
    _account("a4", None, None),
    _invoice("i1", "issued", "100.10", account="Account/a1"),
    _invoice("i2", "draft", "250", "EUR", account="Account/a2"),
    _invoice("i3", "issued", "99.5", account="Account/a3"),
    _invoice("i4", "cancelled", None),
]  # fmt: skip


OTHER_TENANT = "other"
# Another tenant's Claim pointing at an Organization id the default tenant has.
OTHER_DATA = [_claim("c9", "active", "claim", "Patient/p1", "Organization/o1")]


@pytest.fixture(scope="module")
async def store(mongo_uri: str) -> AsyncIterator[Store]:
    """DATA stored as the store stores it (tenant, `_search`), past validation: the filters are under test."""
    async with fresh_store(mongo_uri) as s:
        for tenant, resources in ((s.tenant, DATA), (OTHER_TENANT, OTHER_DATA)):
            for r in resources:
                doc = {**r, "_id": f"{tenant}/{r['id']}", "_tenant": tenant}
                await s.db[r["resourceType"]].insert_one({**doc, "_search": search.index_values(r["resourceType"], r)})
        yield s


async def _ids(store: Store, rtype: str, params: dict[str, str]) -> list[str]:
    return sorted(r["id"] for r in await store.search(rtype, params, 100))


async def _bad(store: Store, rtype: str, params: dict[str, str]) -> FinGateError:
    with pytest.raises(FinGateError) as info:
        await store.search(rtype, params, 100)
    assert info.value.code == BAD_USER_INPUT
    return info.value


# `_filter` expressions and the plain arguments they say the same as: the very same Mongo filter (and so index).
SAME_AS_PLAIN: list[tuple[str, str, dict[str, str]]] = [
    ("Claim", "status eq active", {"status": "active"}),
    ("Claim", 'identifier eq "http://ex/claims|A-1"', {"identifier": "http://ex/claims|A-1"}),
    ("Claim", "created ge 2024-01-15", {"created": "ge2024-01-15"}),
    ("Claim", "created eq 2024", {"created": "2024"}),
    ("Claim", "patient eq Patient/p1", {"patient": "Patient/p1"}),
    ("Claim", "patient eq p1", {"patient": "p1"}),
    ("Claim", "_id eq c1", {"_id": "c1"}),
    ("Invoice", "totalgross gt 100", {"totalgross": "gt100"}),
    ("Invoice", 'totalgross eq "250||EUR"', {"totalgross": "250||EUR"}),
    ("Account", 'name sw "Zoë"', {"name": "Zoë"}),
]


async def _no_chains(target: str, query: dict[str, Any], limit: int) -> list[str]:
    raise AssertionError("no chain here")


@pytest.mark.parametrize(("rtype", "expression", "params"), SAME_AS_PLAIN, ids=[e for _, e, _ in SAME_AS_PLAIN])
async def test_filter_compiles_like_the_plain_argument(rtype: str, expression: str, params: dict[str, str]) -> None:
    assert await filter.compile_expression(rtype, expression, _no_chains) == search.compile_filter(rtype, params)


def _nested(levels: int) -> str:
    """`status eq draft`, inside `levels` alternating and/or."""
    out = "status eq draft"
    for i in range(levels):
        out = f"status eq draft {('or', 'and')[i % 2]} ({out})"
    return out


# (resource type, `_filter`, expected ids)
CASES: list[tuple[str, str, list[str]]] = [
    # tokens, references, ids: eq ne pr
    ("Claim", "status eq active", ["c1", "c4"]),
    ("Claim", "status ne active", ["c2", "c3"]),
    ("Claim", 'identifier eq "http://ex/claims|A-1"', ["c1"]),
    ("Claim", 'identifier eq "A-2"', ["c2"]),
    ("Claim", "priority eq normal", ["c1"]),
    ("Claim", "patient eq Patient/p2", ["c2", "c4"]),
    ("Claim", "patient eq p2", ["c2", "c4"]),
    ("Claim", "patient ne Patient/p1", ["c2", "c4"]),
    ("Claim", "insurer pr false", ["c2", "c3"]),
    ("Claim", "insurer pr true", ["c1", "c4"]),
    ("Claim", "_id eq c3", ["c3"]),
    ("Claim", "_id ne c3", ["c1", "c2", "c4"]),
    ("Organization", "active eq true", ["o1"]),
    # logic: and, or, not, parentheses; `and` binds tighter; keywords in any case; several lines
    ("Claim", "status eq active or status eq draft", ["c1", "c2", "c4"]),
    ("Claim", "status eq active and use eq claim", ["c1", "c4"]),
    ("Claim", "not(status eq active)", ["c2", "c3"]),
    ("Claim", "not (not (status eq draft))", ["c2"]),
    ("Claim", "use eq claim and (status eq draft or status eq cancelled)", ["c2"]),
    ("Claim", "status eq draft or status eq cancelled and use eq claim", ["c2"]),
    ("Claim", "(status eq draft or status eq cancelled) and use eq preauthorization", ["c3"]),
    ("Claim", "NOT (status eq active) AND use eq claim", ["c2"]),
    ("Claim", " or ".join(["status eq draft"] * 200), ["c2"]),
    ("Claim", "(" * 50 + "status eq draft" + ")" * 50, ["c2"]),
    ("Claim", _nested(20), ["c2"]),
    ("Claim", "status eq active\n  and provider.name co acme", ["c1", "c4"]),
    # dates: every prefix, and pr
    ("Claim", "created eq 2024-01-15", ["c1"]),
    ("Claim", "created ne 2024-01-15", ["c2", "c3"]),
    ("Claim", "created gt 2024-01-15", ["c2"]),
    ("Claim", "created lt 2024-01-15", ["c3"]),
    ("Claim", "created ge 2024-01-15", ["c1", "c2"]),
    ("Claim", "created le 2024-01-15", ["c1", "c3"]),
    ("Claim", "created sa 2024-01", ["c2"]),
    ("Claim", "created eb 2024", ["c3"]),
    ("Claim", "created pr true", ["c1", "c2", "c3"]),
    ("Claim", "created pr false", ["c4"]),
    ("Account", "period sa 2024-12-31", ["a3"]),
    ("Account", "period eb 2024-12-31", ["a1"]),
    # strings: folded case and accents; eq sw co ew, pr
    ("Account", 'name eq "zoe"', ["a2"]),
    ("Account", "name sw ZOE", ["a1", "a2"]),
    ("Account", 'name co "ärzt"', ["a1"]),
    ("Account", "name ew SMITH", ["a3"]),
    ("Account", 'name co "."', []),
    ("Account", "name ne zoe", ["a1", "a3", "a4"]),
    ("Account", "name pr false", ["a4"]),
    ("Organization", "address-city eq zurich", ["o1"]),
    # quantities: every prefix, with a currency
    ("Invoice", "totalgross eq 100.10", ["i1"]),
    ("Invoice", "totalgross ne 250", ["i1", "i3"]),
    ("Invoice", "totalgross gt 100", ["i1", "i2"]),
    ("Invoice", "totalgross lt 100", ["i3"]),
    ("Invoice", "totalgross ge 250", ["i2"]),
    ("Invoice", "totalgross le 99.5", ["i3"]),
    ("Invoice", "totalgross sa 100.1", ["i2"]),
    ("Invoice", "totalgross eb 100", ["i3"]),
    ("Invoice", "totalgross ap 100", ["i1", "i3"]),
    ("Invoice", 'totalgross eq "250||EUR"', ["i2"]),
    ("Invoice", "totalgross pr false", ["i4"]),
    # chains: a reference parameter, then one of the target's, one and two levels deep
    ("Claim", 'provider.name co "acme"', ["c1", "c4"]),
    ("Claim", "provider.name sw beta", ["c2"]),
    ("Claim", 'provider.name eq "ACME health"', ["c1"]),
    ("Claim", "provider.name ew care", ["c2"]),
    ("Claim", "provider.active eq true", ["c1"]),
    ("Claim", "insurer.name co beta", ["c4"]),
    ("Claim", "patient._id eq p1", ["c1", "c3"]),
    ("Claim", "not(provider.name co acme)", ["c2", "c3"]),
    ("Account", "owner.name co care", ["a2"]),
    ("Invoice", "account.owner.name sw acme", ["i1"]),
    ("Invoice", "account.name co zoe and status eq issued", ["i1"]),
]


@pytest.mark.parametrize(("rtype", "expression", "expected"), CASES, ids=[f"{t}: {e[:40]}" for t, e, _ in CASES])
async def test_filter_finds(store: Store, rtype: str, expression: str, expected: list[str]) -> None:
    assert await _ids(store, rtype, {"_filter": expression}) == expected


# (resource type, `_filter`, a part of the message)
ERRORS: list[tuple[str, str, str]] = [
    ("Claim", "status eq", "syntax error at line 1, column 10: the expression ends too early"),
    ("Claim", "status eq active and", "line 1, column 21: the expression ends too early"),
    ("Claim", "(status eq active", "line 1, column 18: the expression ends too early"),
    ("Claim", 'status eq "active', "line 1, column 11: unexpected '\"'"),
    ("Claim", "status eq active\n  or )", "line 2, column 6: unexpected ')'"),
    ("Claim", "status active", "line 1, column 8: unexpected 'active'"),
    ("Claim", "   ", "_filter: empty"),
    ("Claim", "nonsense eq 1", "nonsense at line 1, column 1: Claim has no search parameter 'nonsense'"),
    ("Claim", "created sw 2024", "a date parameter takes eq, ne, gt, lt, ge, le, sa, eb, ap, pr, not 'sw'"),
    ("Claim", "status gt active", "a token parameter takes eq, ne, pr, not 'gt'"),
    ("Claim", "status in active", "a token parameter takes eq, ne, pr, not 'in'"),
    ("Account", "name gt zoe", "a string parameter takes eq, ne, sw, co, ew, pr, not 'gt'"),
    ("Invoice", "totalgross co 1", "a quantity parameter takes eq, ne, gt, lt, ge, le, sa, eb, ap, pr, not 'co'"),
    ("Claim", "status.name eq x", "only a reference parameter can be chained; status is a token"),
    ("Claim", "provider.nonsense eq x", "has a search parameter 'nonsense'"),
    ("Claim", "created eq yesterday", "created at line 1, column 1: 'yesterday' is not a date; use YYYY"),
    ("Claim", "created pr maybe", "`pr` takes true or false, not 'maybe'"),
    ("Claim", _nested(21), "nested deeper than 20 levels"),
    ("Claim", "not(" * 21 + "status eq active" + ")" * 21, "nested deeper than 20 levels"),
    ("Claim", " or ".join(["provider.name co x"] * 11), "more than 10 chained parameters"),
    ("Claim", "x" * 4097, "longer than 4096 characters"),
    ("Invoice", "totalgross eq lots", "totalgross at line 1, column 1: 'lots' is not a quantity; use a number"),
]


@pytest.mark.parametrize(("rtype", "expression", "message"), ERRORS, ids=[e[:40] for _, e, _ in ERRORS])
async def test_filter_errors_say_where(store: Store, rtype: str, expression: str, message: str) -> None:
    error = await _bad(store, rtype, {"_filter": expression})
    assert message in error.message, error.message


async def test_a_chain_matching_too_many_targets_is_an_error_not_a_cut(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filter, "MAX_CHAIN_MATCHES", 1)
    assert await _ids(store, "Claim", {"_filter": "provider.name sw beta"}) == ["c2"]
    error = await _bad(store, "Claim", {"_filter": "provider.name co acme"})
    assert "the chain matches more than 1 resources" in error.message


async def test_a_chain_looks_for_targets_in_the_callers_tenant_only(store: Store) -> None:
    other = store.for_tenant(OTHER_TENANT)
    assert await _ids(other, "Claim", {"provider": "Organization/o1"}) == ["c9"]
    assert await _ids(other, "Claim", {"_filter": "provider.name co acme"}) == []


async def test_filter_and_plain_arguments_are_anded(store: Store) -> None:
    params = {"status": "active", "_filter": "provider.name co acme or use eq preauthorization"}
    assert await _ids(store, "Claim", params) == ["c1", "c4"]


# (resource type, params with `code:modifier` keys, expected ids)
MODIFIED: list[tuple[str, dict[str, str], list[str]]] = [
    ("Claim", {"insurer:missing": "true"}, ["c2", "c3"]),
    ("Claim", {"insurer:missing": "false"}, ["c1", "c4"]),
    ("Claim", {"created:missing": "true"}, ["c4"]),
    ("Account", {"name:missing": "true"}, ["a4"]),
    ("Claim", {"status:not": "active"}, ["c2", "c3"]),
    ("Claim", {"status:not": "active,draft"}, ["c3"]),
    ("Claim", {"patient:not": "Patient/p1"}, ["c2", "c4"]),
    ("Account", {"name:exact": "zoe"}, ["a2"]),
    ("Account", {"name:exact": "Zoë Ärztin"}, ["a1"]),
    ("Account", {"name:exact": "zoë ärztin"}, []),
    ("Account", {"name:exact": "Zoë"}, []),
    ("Account", {"name:contains": "RZT"}, ["a1"]),
    ("Account", {"name:contains": "o"}, ["a1", "a2", "a3"]),
    ("Account", {"name:contains": "mit,zoe"}, ["a1", "a2", "a3"]),
    ("Claim", {"insurer:identifier": "urn:ins|X9"}, ["c3"]),
    ("Claim", {"insurer:identifier": "X1"}, ["c1"]),
    ("Claim", {"insurer:identifier": "urn:other|X1"}, []),
    ("Claim", {"priority:text": "urg"}, ["c2"]),
    ("Claim", {"priority:text": "NORMAL"}, ["c1"]),
    ("Claim", {"status": "active", "insurer:missing": "false", "_filter": "provider.name co acme"}, ["c1", "c4"]),
]


@pytest.mark.parametrize(("rtype", "params", "expected"), MODIFIED, ids=[json.dumps(p) for _, p, _ in MODIFIED])
async def test_modifiers_find(store: Store, rtype: str, params: dict[str, str], expected: list[str]) -> None:
    assert await _ids(store, rtype, params) == expected


MODIFIER_ERRORS: list[tuple[str, dict[str, str], str]] = [
    ("Claim", {"created:exact": "2024"}, "created:exact: a date parameter takes the modifiers missing"),
    ("Claim", {"status:contains": "act"}, "a token parameter takes the modifiers missing, not, text"),
    ("Claim", {"status:missing": "yes"}, "status:missing takes true or false, not 'yes'"),
    ("Claim", {"nope:not": "x"}, "Unknown search parameter 'nope' for Claim"),
    ("Account", {"name:exact": "a,"}, "name:exact: empty value in 'a,'"),
]


@pytest.mark.parametrize(("rtype", "params", "message"), MODIFIER_ERRORS, ids=[m for _, _, m in MODIFIER_ERRORS])
async def test_modifier_errors(store: Store, rtype: str, params: dict[str, str], message: str) -> None:
    error = await _bad(store, rtype, params)
    assert message in error.message, error.message


def test_modifier_index_values_hold_what_the_main_index_folds_away() -> None:
    claim = next(r for r in DATA if r["id"] == "c1")
    values = search.index_values("Claim", claim)
    assert values["priority:text"] == ["normal"]
    assert values["insurer:identifier"] == [{"s": "urn:ins", "c": "X1"}]
    assert search.index_values("Account", _account("x", "Zoë", None))["name:exact"] == ["Zoë"]


# -- over HTTP, on both execution paths ----------------------------------------------------------


@pytest.fixture(scope="module")
async def clients(store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    compiled = client_for(store, settings=Settings(compiled=True))
    reference = client_for(store, settings=Settings(compiled=False))
    async with compiled, reference:
        yield compiled, reference


QUERIES = {
    "filter": '{ ClaimList(_filter: "provider.name co \\"acme\\" and created pr true") { id status } }',
    "modifiers": '{ ClaimList(_modifiers: [{param: "insurer", modifier: "missing", value: "true"},'
    ' {param: "status", modifier: "not", value: "draft"}]) { id } }',
    "connection": '{ AccountConnection(_filter: "name sw zoe", _modifiers: [{param: "name", modifier: "exact",'
    ' value: "zoe"}]) { count edges { resource { id } } } }',
    "syntax-error": '{ ClaimList(_filter: "status eq (") { id } }',
    "twice": '{ ClaimList(_modifiers: [{param: "status", modifier: "not", value: "a"},'
    ' {param: "status", modifier: "not", value: "b"}]) { id } }',
}
ERROR_AT = {"syntax-error": "_filter", "twice": "_modifiers"}
EXPECTED = {
    "filter": {"data": {"ClaimList": [{"id": "c1", "status": "active"}]}},
    "modifiers": {"data": {"ClaimList": [{"id": "c3"}]}},
    "connection": {"data": {"AccountConnection": {"count": 1, "edges": [{"resource": {"id": "a2"}}]}}},
}


@pytest.mark.parametrize("name", list(QUERIES))
async def test_both_engines_answer_alike(clients: tuple[httpx.AsyncClient, httpx.AsyncClient], name: str) -> None:
    body = json.dumps({"query": QUERIES[name]})
    headers = {"content-type": "application/json"}
    compiled, reference = clients
    a = await compiled.post("/graphql", content=body, headers=headers)
    b = await reference.post("/graphql", content=body, headers=headers)
    assert a.content == b.content
    answer = a.json()
    if name in EXPECTED:
        assert answer == EXPECTED[name]
    else:
        (error,) = answer["errors"]
        assert error["extensions"]["code"] == BAD_USER_INPUT, error
        (issue,) = error["extensions"]["operationOutcome"]["issue"]
        assert issue["expression"] == [ERROR_AT[name]], issue
        assert "Traceback" not in a.text


# -- the README's example, on the demo data -------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


async def test_the_readme_example_works_on_the_demo_data(demo_store: Store) -> None:
    section = README.read_text().split("### `_filter` and search modifiers", 1)[1].split("\n### ", 1)[0]
    (block,) = re.findall(r"```graphql\n(.*?)```", section, re.S)
    body = json.dumps({"query": block})
    headers = {"content-type": "application/json"}
    answers = []
    for compiled in (True, False):
        async with client_for(demo_store, settings=Settings(compiled=compiled)) as client:
            answers.append((await client.post("/graphql", content=body, headers=headers)).content)
    assert answers[0] == answers[1]
    data = json.loads(answers[0])["data"]
    assert data["ClaimList"] and all(c["created"] >= "2026-10-05" or c["status"] != "active" for c in data["ClaimList"])
    assert [a["id"] for a in data["AccountList"]] and all("Rivera" in a["name"] for a in data["AccountList"])


def test_modifiers_take_argument_names_and_become_fhir_keys() -> None:
    codes = {"payment_issuer": "payment-issuer", "status": "status"}
    given = {
        "status": "active",
        "_filter": "x eq 1",
        "_modifiers": [SearchModifier(param="payment_issuer", modifier="missing", value="true")],
    }
    assert resolvers.search_params(codes, given) == {
        "status": "active",
        "_filter": "x eq 1",
        "payment-issuer:missing": "true",
    }
    twice = [SearchModifier(param="status", modifier="not", value=v) for v in "ab"]
    with pytest.raises(FinGateError, match="status:not appears twice"):
        resolvers.search_params(codes, {"_modifiers": twice})
