"""The HTTP layer: health, readiness, metrics, request ids, GET rules, GraphiQL, error hygiene."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from app.store import Store
from tests.harness import client_for, error_codes, gql


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store) as c:
        yield c


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_readiness_fails_when_the_database_is_unreachable() -> None:
    store = Store("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200&connectTimeoutMS=200", "nothing")
    try:
        async with client_for(store) as c:
            response = await c.get("/readyz")
        assert response.status_code == 503
    finally:
        await store.close()


async def test_every_response_has_a_request_id_of_the_servers_own(client: httpx.AsyncClient) -> None:
    ids = [
        (await client.get("/healthz", headers=headers)).headers["x-request-id"]
        for headers in ({}, {"x-request-id": "abc-123"}, {"x-request-id": "bad id\n"}, {"x-request-id": "abc-123"})
    ]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)  # a client's id is never taken over, so two requests never share one


async def test_metrics_count_requests_errors_and_database_commands(client: httpx.AsyncClient) -> None:
    await gql(client, '{ Claim(id: "missing") { id } }')
    await gql(client, '# a comment first\nmutation { ClaimDelete(id: "missing") { id } }')
    text = (await client.get("/metrics")).text
    assert "fingate_mongo_commands_total" in text
    assert 'fingate_graphql_errors_total{code="NOT_FOUND"}' in text
    assert 'fingate_graphql_seconds_bucket{le="0.001",operation="query"}' in text
    assert "fingate_requests_total" in text
    assert 'operation="mutation"' in text


async def test_queries_over_get_and_no_mutations_over_get(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": "{ ClaimList { id } }"})
    assert response.status_code == 200 and response.json() == {"data": {"ClaimList": []}}
    assert response.headers["content-type"].startswith("application/json")
    mutation = 'mutation { ClaimDelete(id: "x") { id } }'
    assert (await client.get("/graphql", params={"query": mutation})).status_code in (400, 405)


async def test_browser_get_serves_graphiql(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200 and "graphiql" in response.text.lower()


async def test_malformed_bodies_are_clear_client_errors(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "Traceback" not in response.text


async def test_unexpected_errors_are_internal_with_a_request_id(
    client: httpx.AsyncClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(store, "search", broken)
    response = await client.post("/graphql", json={"query": "{ ClaimList { id } }"}, headers={"x-request-id": "req-42"})
    result = response.json()
    assert error_codes(result) == ["INTERNAL"]
    assert result["errors"][0]["extensions"]["requestId"] == response.headers["x-request-id"] != "req-42"
    assert "secret detail" not in json.dumps(result) and "Traceback" not in json.dumps(result)
