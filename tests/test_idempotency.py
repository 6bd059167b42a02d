"""The Idempotency-Key header over HTTP and the real database: one effect per key, the first response replayed."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from app.idempotency import REPLAYED, Idempotency, is_mutation, request_hash
from app.settings import Settings
from app.store import IDEMPOTENCY_KEYS, Store
from app.store.idempotency import IdempotencyKeys
from tests.harness import client_for

CREATE = 'mutation { PatientCreate(res: { name: [{ family: "Rivera" }], gender: "female" }) { id meta { versionId lastUpdated } } }'


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    # A generous wait: the first of many concurrent requests may take long on a busy machine.
    async with client_for(store, settings=Settings(idempotency_wait=600)) as c:
        yield c


async def post(client: httpx.AsyncClient, body: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {"content-type": "application/json", **({"idempotency-key": key} if key else {})}
    return await client.post("/graphql", content=json.dumps(body), headers=headers)


async def test_twenty_concurrent_requests_with_one_key_make_one_resource(
    client: httpx.AsyncClient, store: Store
) -> None:
    responses = await asyncio.gather(*(post(client, {"query": CREATE}, "key-20") for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.content for r in responses}) == 1, {r.content for r in responses}
    body = json.loads(responses[0].content)
    assert "errors" not in body
    assert await store.db["Patient"].count_documents({}) == 1
    assert await store.db["audit"].count_documents({}) == 1
    assert sum(r.headers.get(REPLAYED) == "true" for r in responses) == 19


async def test_a_retry_is_replayed_byte_for_byte_and_writes_nothing(client: httpx.AsyncClient, store: Store) -> None:
    first = await post(client, {"query": CREATE}, "k1")
    again = await post(client, {"query": CREATE}, "k1")
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers[REPLAYED] == "true" and REPLAYED not in first.headers
    assert await store.db["Patient"].count_documents({}) == 1
    other = await post(client, {"query": CREATE}, "k2")  # another key: another request
    assert other.content != first.content
    assert await store.db["Patient"].count_documents({}) == 2


async def test_the_same_key_with_another_request_is_refused(client: httpx.AsyncClient, store: Store) -> None:
    await post(client, {"query": CREATE}, "k")
    for changed in (
        {"query": CREATE.replace("Rivera", "Okafor")},
        {"query": CREATE, "variables": {"x": 1}},
        {"query": CREATE.replace("mutation {", "mutation Named {"), "operationName": "Named"},
    ):
        response = await post(client, changed, "k")
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/json"
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert await store.db["Patient"].count_documents({}) == 1


async def test_a_persisted_mutation_sent_by_its_hash_alone_is_held_to_its_key(
    client: httpx.AsyncClient, store: Store
) -> None:
    """A mobile client's retry of a persisted mutation by hash: one effect, the first answer replayed, and the same
    request as the text with its hash."""
    digest = hashlib.sha256(CREATE.encode()).hexdigest()
    hashed = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    unknown = await post(client, hashed, "apq")  # not stored yet: the protocol's answer, and the key stays free
    assert unknown.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    first = await post(client, {"query": CREATE, **hashed}, "apq")  # the resend with the text stores it
    again = await post(client, hashed, "apq")
    assert "errors" not in first.json() and again.content == first.content and again.headers[REPLAYED] == "true"
    other = await post(client, hashed, "apq-2")  # a new key: a new Patient
    assert other.content != first.content and REPLAYED not in other.headers
    assert await store.db["Patient"].count_documents({}) == 2


async def test_queries_ignore_the_header(client: httpx.AsyncClient, store: Store) -> None:
    await post(client, {"query": CREATE}, None)
    query = {"query": "{ PatientList { id } }"}
    a = await post(client, query, "q")
    b = await post(client, {"query": "{ PatientList { id gender } }"}, "q")  # another body, same key: no refusal
    assert a.status_code == b.status_code == 200 and REPLAYED not in b.headers
    assert await store.db[IDEMPOTENCY_KEYS].count_documents({}) == 0


async def test_an_error_that_stored_nothing_is_replayed(client: httpx.AsyncClient, store: Store) -> None:
    bad = {"query": 'mutation { PatientCreate(res: { gender: "sometimes" }) { id } }'}
    first = await post(client, bad, "bad")
    again = await post(client, bad, "bad")
    assert first.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert again.content == first.content and again.headers[REPLAYED] == "true"


async def test_a_retryable_answer_is_not_kept(client: httpx.AsyncClient, store: Store) -> None:
    """A CONFLICT (a stale ifMatch) stored nothing and asks for a retry: the key is given up, the retry runs."""
    created = json.loads((await post(client, {"query": CREATE}, None)).content)["data"]["PatientCreate"]["id"]
    stale = {
        "query": f'mutation {{ PatientUpdate(id: "{created}", ifMatch: "9", res: {{ gender: "male" }}) {{ id }} }}'
    }
    first = await post(client, stale, "stale")
    assert first.json()["errors"][0]["extensions"]["code"] == "CONFLICT"
    assert await store.db[IDEMPOTENCY_KEYS].count_documents({}) == 0
    again = await post(client, stale, "stale")
    assert REPLAYED not in again.headers


async def test_a_retry_while_the_first_runs_gets_a_retryable_conflict(store: Store) -> None:
    """The first request's claim is pending (it is still running): past the wait, the retry is a 409 CONFLICT."""
    await IdempotencyKeys(store, 60).claim("default", "busy", request_hash({"query": CREATE}))
    async with client_for(store, settings=Settings(idempotency_wait=0)) as client:
        response = await post(client, {"query": CREATE}, "busy")
    assert response.status_code == 409 and response.headers["retry-after"]
    assert response.json()["errors"][0]["extensions"]["code"] == "CONFLICT"
    assert await store.db["Patient"].count_documents({}) == 0


class _Watched(IdempotencyKeys):
    """Records reads of a key, so a test knows a retry is waiting (no timing involved)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, 60)
        self.polled = asyncio.Event()

    async def get(self, tenant: str, key: str) -> Any:
        self.polled.set()
        return await super().get(tenant, key)


async def test_a_retry_waits_for_the_first_and_gets_its_answer(store: Store) -> None:
    idempotency = Idempotency(_Watched(store), wait=600)
    release, running, runs = asyncio.Event(), asyncio.Event(), []

    async def execute() -> Response:
        runs.append(1)
        running.set()
        await release.wait()
        return Response(b'{"data":{"done":true}}', media_type="application/json")

    def refuse(*args: Any) -> Response:
        raise AssertionError(args)

    data = {"query": CREATE}
    first = asyncio.create_task(idempotency.run("default", "slow", data, execute, refuse))
    await running.wait()  # the first has claimed the key and runs
    retry = asyncio.create_task(idempotency.run("default", "slow", data, execute, refuse))
    await idempotency.keys.polled.wait()  # type: ignore[attr-defined]
    assert not retry.done()
    release.set()
    a, b = await first, await retry
    assert runs == [1]
    assert a.body == b.body == b'{"data":{"done":true}}' and b.headers[REPLAYED] == "true"


async def test_keys_are_per_tenant_and_expire(store: Store) -> None:
    keys = IdempotencyKeys(store, 60)
    assert await keys.claim("a", "k", "h1") is None
    assert await keys.claim("b", "k", "h2") is None  # another tenant's key of the same name
    held = await keys.claim("a", "k", "h1")
    assert held is not None and held.state == "pending"
    expired = IdempotencyKeys(store, -1)  # records already past their expiry
    assert await expired.claim("a", "gone", "h") is None
    assert await expired.claim("a", "gone", "h") is None  # past it: claimed again, not held
    info = await store.db[IDEMPOTENCY_KEYS].index_information()
    assert any(i.get("expireAfterSeconds") == 0 for i in info.values())
    assert any(i.get("unique") and [k for k, _ in i["key"]] == ["_tenant", "key"] for i in info.values())


def test_what_counts_as_a_mutation() -> None:
    assert is_mutation({"query": CREATE})
    assert not is_mutation({"query": "{ PatientList { id } }"})
    assert is_mutation(
        {"query": 'query Q { PatientList { id } } mutation M { PatientDelete(id: "x") { id } }', "operationName": "M"}
    )
    assert not is_mutation(
        {"query": 'query Q { PatientList { id } } mutation M { PatientDelete(id: "x") { id } }', "operationName": "Q"}
    )
    assert not is_mutation({"query": "mutation {"})
    assert not is_mutation({"extensions": {"persistedQuery": {"sha256Hash": "0" * 64}}})


async def test_a_key_is_the_tenants_own_and_needs_a_verified_caller(store: Store) -> None:
    from tests.tokens import authed_client, bearer, token

    body = json.dumps({"query": CREATE})
    async with authed_client(store) as client:

        async def as_tenant(tenant: str | None) -> httpx.Response:
            auth = bearer(token(tenant=tenant, sub=f"{tenant}-user")) if tenant else {}
            headers = {"content-type": "application/json", "idempotency-key": "shared", **auth}
            return await client.post("/graphql", content=body, headers=headers)

        refused = await as_tenant(None)
        assert refused.status_code == 401 and refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        a, b, a_again = await as_tenant("acme"), await as_tenant("globex"), await as_tenant("acme")
    assert a.status_code == b.status_code == 200 and a.content != b.content
    assert a_again.content == a.content and a_again.headers[REPLAYED] == "true" and REPLAYED not in b.headers
    assert await store.db["Patient"].count_documents({}) == 2
    assert await store.db[IDEMPOTENCY_KEYS].count_documents({}) == 2
