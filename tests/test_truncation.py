"""No list is cut off without a word: `extensions.truncated` on both execution paths, and `_count: 0` as "how many"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.settings import Settings
from app.store import Store, search
from tests.harness import client_for, error_codes, gql, ok

PAYER = "Organization/payer"
MATCHES = 51


async def _put(store: Store, rtype: str, doc: dict[str, Any]) -> None:
    doc = {"resourceType": rtype, "meta": {"versionId": "1"}, **doc}
    await store.db[rtype].insert_one(
        {
            **doc,
            "_id": f"{store.tenant}/{doc['id']}",
            "_tenant": store.tenant,
            "_search": search.index_values(rtype, doc),
        }
    )


@pytest.fixture
async def world(store: Store) -> Store:
    await _put(store, "Organization", {"id": "payer", "name": "Payer"})
    await _put(store, "Organization", {"id": "small", "name": "Small"})
    for i in range(MATCHES):
        await _put(
            store,
            "Claim",
            {
                "id": f"c{i:02}",
                "status": "active",
                "created": f"2026-11-{1 + i % 28:02}",
                "insurer": {"reference": PAYER},
            },
        )
    for i in range(3):
        await _put(store, "Claim", {"id": f"s{i}", "status": "active", "insurer": {"reference": "Organization/small"}})
    return store


@pytest.fixture(params=[True, False], ids=["compiled", "reference"])
async def client(world: Store, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(world, settings=Settings(compiled=request.param)) as c:
        yield c


async def test_a_root_list_cut_at_count_says_more_exist(client: httpx.AsyncClient) -> None:
    result = await gql(client, f'{{ ClaimList(insurer: "{PAYER}") {{ id }} }}')
    assert len(ok(result)["ClaimList"]) == 20
    assert result["extensions"]["truncated"] == [{"path": ["ClaimList"], "returned": 20, "more": True}]


async def test_a_list_holding_every_match_has_no_note(client: httpx.AsyncClient) -> None:
    for query in (
        f'{{ ClaimList(insurer: "{PAYER}", _count: {MATCHES}) {{ id }} }}',
        f'{{ ClaimList(insurer: "{PAYER}", _count: 20, _offset: {MATCHES - 20}) {{ id }} }}',
        '{ Organization(id: "small") { ClaimList(_reference: insurer, _count: 3) { id } } }',
    ):
        result = await gql(client, query)
        assert "errors" not in result and "extensions" not in result, (query, result)


async def test_a_reverse_list_cut_at_count_says_so_at_its_path(client: httpx.AsyncClient) -> None:
    query = (
        '{ OrganizationList(_sort: "name") { id ClaimList(_reference: insurer, _count: 2) { id } }'
        ' cut: ClaimList(insurer: "Organization/small", _count: 1) { id } }'
    )
    result = await gql(client, query)
    data = ok(result)
    assert [len(o["ClaimList"]) for o in data["OrganizationList"]] == [2, 2]
    assert result["extensions"]["truncated"] == [
        {"path": ["OrganizationList", 0, "ClaimList"], "returned": 2, "more": True},
        {"path": ["OrganizationList", 1, "ClaimList"], "returned": 2, "more": True},
        {"path": ["cut"], "returned": 1, "more": True},
    ]


async def test_count_zero_answers_how_many(client: httpx.AsyncClient, world: Store) -> None:
    query = (
        f'{{ ClaimList(insurer: "{PAYER}", _count: 0) {{ id }}'
        ' OrganizationList(_sort: "name") { ClaimList(_reference: insurer, _count: 0) { id } } }'
    )
    before = world.commands.count
    result = await gql(client, query)
    assert world.commands.count - before == 3  # a count, the Organizations, one count for every reverse list
    assert ok(result)["ClaimList"] == []
    assert result["extensions"]["truncated"] == [
        {"path": ["ClaimList"], "returned": 0, "total": MATCHES},
        {"path": ["OrganizationList", 0, "ClaimList"], "returned": 0, "total": MATCHES},
        {"path": ["OrganizationList", 1, "ClaimList"], "returned": 0, "total": 3},
    ]


async def test_a_reverse_list_count_error_names_the_reverse_ways_to_page(client: httpx.AsyncClient) -> None:
    """A reverse list pages with its own `_offset`, or with the parent's `XConnection` and its cursor."""
    result = await gql(client, '{ Organization(id: "payer") { ClaimList(_reference: insurer, _count: 1001) { id } } }')
    assert error_codes(result) == ["BAD_USER_INPUT"]
    assert "_offset" in result["errors"][0]["message"] and "XConnection" in result["errors"][0]["message"]


async def test_the_look_ahead_row_costs_no_extra_command(client: httpx.AsyncClient, world: Store) -> None:
    before = world.commands.count
    ok(await gql(client, "{ OrganizationList { ClaimList(_reference: insurer, _count: 2) { id } } }"))
    assert world.commands.count - before == 2


async def test_the_audit_log_is_a_list_that_says_when_it_stops(client: httpx.AsyncClient, world: Store) -> None:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 11, 1, tzinfo=UTC)
    records = [
        {
            "_tenant": world.tenant,
            "when": start + timedelta(minutes=i),
            "operation": "create",
            "type": "Claim",
            "id": f"c{i:02}",
        }
        for i in range(3)
    ]
    await world.db["audit"].insert_many(records)
    result = await gql(
        client, "{ AuditLog(_count: 2) { id } all: AuditLog(_count: 3) { id } n: AuditLog(_count: 0) { id } }"
    )
    assert [r["id"] for r in ok(result)["AuditLog"]] == ["c02", "c01"]
    assert result["extensions"]["truncated"] == [
        {"path": ["AuditLog"], "returned": 2, "more": True},
        {"path": ["n"], "returned": 0, "total": 3},
    ]


async def test_a_fallback_to_the_reference_path_notes_each_list_once(client: httpx.AsyncClient) -> None:
    """An error makes the compiled path run the operation again on graphql-core's: its own notes are dropped."""
    result = await gql(
        client, '{ ClaimList(insurer: "Organization/payer", _count: 1) { id } Claim(id: "nope") { id } }'
    )
    assert error_codes(result) == ["NOT_FOUND"]
    assert result["extensions"]["truncated"] == [{"path": ["ClaimList"], "returned": 1, "more": True}]


async def test_the_compiled_path_answers_truncated_lists_itself(world: Store) -> None:
    async with client_for(world, settings=Settings(compiled=True)) as c:
        engine = c.fingate_app.state.compiled_engine  # type: ignore[attr-defined]
        before = engine.stats["compiled"]
        result = await gql(
            c, '{ OrganizationList(_sort: "name") { ClaimList(_reference: insurer, _count: 1) { id } } }'
        )
        assert engine.stats["compiled"] == before + 1
        assert [n["path"] for n in result["extensions"]["truncated"]] == [
            ["OrganizationList", 0, "ClaimList"],
            ["OrganizationList", 1, "ClaimList"],
        ]
