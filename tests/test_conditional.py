"""Conditional create (`TCreate(res, ifNoneExist)`): FHIR's ifNoneExist over HTTP and the real database, races included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.store import Store
from tests.harness import client_for, error_codes, gql, ok

CREATE = """mutation($res: PatientInput!, $if: String) {
  PatientCreate(res: $res, ifNoneExist: $if) { id gender meta { versionId } }
}"""


def patient(value: str, gender: str = "female") -> dict[str, Any]:
    return {"identifier": [{"system": "http://example.org/mrn", "value": value}], "gender": gender}


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store) as c:
        yield c


async def create(client: httpx.AsyncClient, res: dict[str, Any], criteria: str | None) -> dict[str, Any]:
    return await gql(client, CREATE, {"res": res, "if": criteria})


async def test_no_match_creates_one_match_returns_it_unchanged(client: httpx.AsyncClient, store: Store) -> None:
    first = ok(await create(client, patient("123"), "identifier=http://example.org/mrn|123"))["PatientCreate"]
    # The same criteria with other content: the match, as it is; nothing written, nothing audited.
    again = ok(await create(client, patient("123", "male"), "identifier=http://example.org/mrn|123"))["PatientCreate"]
    assert again == first and again["gender"] == "female"
    assert await store.db["Patient"].count_documents({}) == 1
    assert await store.db["audit"].count_documents({}) == 1
    # Other criteria, no match: a second Patient.
    other = ok(await create(client, patient("456"), "identifier=http://example.org/mrn|456&gender=female"))
    assert other["PatientCreate"]["id"] != first["id"]
    # A repeated parameter ANDs, as in PatientList: this one matches nothing (no Patient is both).
    both = ok(await create(client, patient("789"), "gender=female&gender=male"))["PatientCreate"]
    assert both["id"] not in (first["id"], other["PatientCreate"]["id"])


async def test_several_matches_are_a_precondition_failure(client: httpx.AsyncClient, store: Store) -> None:
    ok(await create(client, patient("1"), None))
    ok(await create(client, patient("2"), None))
    result = await create(client, patient("3"), "gender=female")
    assert result["data"] == {"PatientCreate": None}
    assert error_codes(result) == ["PRECONDITION_FAILED"]
    issue = result["errors"][0]["extensions"]["operationOutcome"]["issue"][0]
    assert issue["code"] == "multiple-matches" and issue["expression"] == ["ifNoneExist"]
    assert await store.db["Patient"].count_documents({}) == 2


@pytest.mark.parametrize("criteria", ["", "not a search", "nosuchparam=1", "birthdate=notadate", "=x"])
async def test_bad_criteria_are_refused(client: httpx.AsyncClient, store: Store, criteria: str) -> None:
    result = await create(client, patient("1"), criteria)
    assert error_codes(result) == ["BAD_USER_INPUT"], result
    issue = result["errors"][0]["extensions"]["operationOutcome"]["issue"][0]
    assert issue["expression"] == ["ifNoneExist"]
    assert await store.db["Patient"].count_documents({}) == 0


async def test_ten_racing_conditional_creates_make_one_resource(client: httpx.AsyncClient, store: Store) -> None:
    criteria = "identifier=http://example.org/mrn|race"
    results = await asyncio.gather(*(create(client, patient("race"), criteria) for _ in range(10)))
    ids = {ok(r)["PatientCreate"]["id"] for r in results}
    assert len(ids) == 1
    assert await store.db["Patient"].count_documents({}) == 1
    assert await store.db["audit"].count_documents({"operation": "create"}) == 1


async def test_racing_conditional_creates_on_different_criteria_each_create(
    client: httpx.AsyncClient, store: Store
) -> None:
    results = await asyncio.gather(
        *(create(client, patient(f"r{i}"), f"identifier=http://example.org/mrn|r{i}") for i in range(5))
    )
    assert len({ok(r)["PatientCreate"]["id"] for r in results}) == 5
    assert await store.db["Patient"].count_documents({}) == 5


async def test_both_searching_before_either_creates_still_makes_one(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst interleaving, forced: both racers search (and find nothing) before either writes; the criteria
    document makes one of them conflict, and its second search finds the other's resource."""
    searched = store.search
    both_searched = asyncio.Barrier(2)
    calls: list[int] = []

    async def search(*args: Any, **kwargs: Any) -> Any:
        found = await searched(*args, **kwargs)
        calls.append(len(found))
        if len(calls) <= 2:
            await both_searched.wait()
        return found

    monkeypatch.setattr(store, "search", search)
    from app.writes import Writer

    res = {"resourceType": "Patient", **patient("forced")}
    results = await asyncio.gather(
        *(
            Writer(store).create_if_none_exist("Patient", dict(res), "identifier=http://example.org/mrn|forced")
            for _ in range(2)
        )
    )
    assert sorted(created for created, _ in results) == [False, True]
    assert len({r["id"] for _, r in results}) == 1
    assert calls[:2] == [0, 0] and calls[-1] == 1  # the loser searched again and found the winner's
    assert await store.db["Patient"].count_documents({}) == 1


async def test_the_criteria_document_alone_makes_the_second_transaction_conflict(store: Store) -> None:
    """What makes racing creates safe on any database: both write the criteria's document, so the second
    transaction conflicts even where two inserts into one collection would not (MongoDB)."""
    from app.errors import FinGateError

    async with store.transaction() as first:
        await store.claim_criteria("Patient", "identifier=x%7C1", first)
        with pytest.raises(FinGateError) as raised:
            async with store.transaction() as second:
                await store.claim_criteria("Patient", "identifier=x%7C1", second)
        assert raised.value.code == "CONFLICT"
    async with store.transaction() as third:  # after the first committed: another write of the same document
        await store.claim_criteria("Patient", "identifier=x%7C1", third)
    assert await store.db["conditional_keys"].count_documents({}) == 1


async def test_the_criteria_search_only_the_callers_tenant(store: Store) -> None:
    from app.writes import Writer

    res = {"resourceType": "Patient", **patient("t1")}
    criteria = "identifier=http://example.org/mrn|t1"
    created_a, a = await Writer(store.for_tenant("a")).create_if_none_exist("Patient", dict(res), criteria)
    created_b, b = await Writer(store.for_tenant("b")).create_if_none_exist("Patient", dict(res), criteria)
    again, a2 = await Writer(store.for_tenant("a")).create_if_none_exist("Patient", dict(res), criteria)
    assert created_a and created_b and not again
    assert a2["id"] == a["id"] != b["id"]


async def test_racing_conditional_creates_in_batches_make_one_resource(client: httpx.AsyncClient, store: Store) -> None:
    query = "mutation($e: [BundleEntryInput!]!) { batch(entries: $e) { outcome id error { code } } }"
    entry = {
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=http://example.org/mrn|batch"},
        "resource": {"resourceType": "Patient", **patient("batch")},
    }
    results = await asyncio.gather(*(gql(client, query, {"e": [entry]}) for _ in range(10)))
    outcomes = [ok(r)["batch"][0] for r in results]
    assert all(o["error"] is None for o in outcomes), outcomes
    assert sorted(o["outcome"] for o in outcomes) == ["created"] + ["matched"] * 9
    assert len({o["id"] for o in outcomes}) == 1
    assert await store.db["Patient"].count_documents({}) == 1
