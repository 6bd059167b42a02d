"""What browsers and mobile apps rely on, over HTTP: the offline explorer, persisted queries, ETags, gzip."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.cli import persist_ready_queries
from app.explorer import ready_queries
from app.graphql.apq import persist, sha256
from app.graphql.compat import graphql_schema
from app.settings import Settings
from app.store import Store
from tests.harness import client_for, error_codes, ok, schema

RECONCILIATION = ready_queries()[0].read_text()


@pytest.fixture(scope="module")
async def demo(demo_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(demo_store) as client:
        yield client


def extensions(query_hash: str, version: int = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": query_hash}}


async def post(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/graphql", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def get(
    client: httpx.AsyncClient, query_hash: str, variables: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    """A hash-only GET, as a mobile client sends it once the query is known (curl's Accept: */*)."""
    params = {"extensions": json.dumps(extensions(query_hash)), "variables": json.dumps(variables or {})}
    return await client.get("/graphql", params=params, headers={"accept": "*/*", **headers})


# -- the explorer --------------------------------------------------------------------------


async def test_the_explorer_page_loads_only_local_assets(demo: httpx.AsyncClient) -> None:
    page = (await demo.get("/graphql", headers={"accept": "text/html"})).text
    assets = re.findall(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"', page)
    assert [a for a in assets if a.startswith("/graphql/static/")] == [a for a in assets if a != "data:,"]
    assert not re.search(r"https?://", " ".join(assets)) and len(assets) == 5
    for asset in assets[1:]:
        response = await demo.get(asset)
        assert response.status_code == 200 and len(response.content) > 5000, asset


async def test_the_docs_carry_fhir_descriptions_and_allowed_codes(demo: httpx.AsyncClient) -> None:
    query = '{ __type(name: "PaymentReconciliation") { description fields { name description } } }'
    found = ok(await post(demo, query=query))["__type"]
    status = next(f for f in found["fields"] if f["name"] == "status")
    assert "Allowed codes: active | cancelled | draft | entered-in-error" in status["description"]


async def test_static_assets_are_gzipped_and_revalidated(demo: httpx.AsyncClient) -> None:
    response = await demo.get("/graphql/static/graphiql.min.js", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip" and b"createFetcher" in response.content
    again = await demo.get("/graphql/static/graphiql.min.js", headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304


# -- automatic persisted queries -------------------------------------------------------------


async def test_an_unknown_hash_is_not_found(demo: httpx.AsyncClient) -> None:
    for result in [await post(demo, extensions=extensions("0" * 64)), (await get(demo, "0" * 64)).json()]:
        assert result["errors"][0]["message"] == "PersistedQueryNotFound"
        assert error_codes(result) == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_a_registered_query_runs_by_hash_on_every_instance(demo: httpx.AsyncClient, demo_store: Store) -> None:
    query = "# registered\n" + RECONCILIATION
    first = ok(await post(demo, query=query, extensions=extensions(sha256(query))))
    assert await demo_store.get_query(sha256(query)) == query
    async with client_for(demo_store) as other_instance:
        response = await get(other_instance, sha256(query))
    assert response.status_code == 200 and ok(response.json()) == first
    assert first["PaymentReconciliation"]["allocation"][0]["target"]["resource"]["id"].startswith("demo-claim")


async def test_hash_only_get_takes_variables(demo: httpx.AsyncClient) -> None:
    query = "query ClaimById($id: ID!) { Claim(id: $id) { id status } }"
    ok(await post(demo, query=query, variables={"id": "demo-claim-03"}, extensions=extensions(sha256(query))))
    response = await get(demo, sha256(query), {"id": "demo-claim-03"})
    assert ok(response.json()) == {"Claim": {"id": "demo-claim-03", "status": "active"}}


# A text no other test registers: the module's ETag test stores `{ Claim(id: "demo-claim-03") { id } }`, which this
# test then found stored whenever it ran after that one.
REFUSED = '# refused\n{ Claim(id: "demo-claim-03") { id } }'


@pytest.mark.parametrize(
    ("query", "ext"),
    [
        (REFUSED, extensions("a" * 64)),  # the hash of another text
        (REFUSED, extensions(sha256(REFUSED), version=2)),
        (REFUSED, {"persistedQuery": {"version": 1, "sha256Hash": "not-hex"}}),
    ],
    ids=["hash-mismatch", "version-2", "malformed-hash"],
)
async def test_a_bad_persisted_query_extension_is_refused(
    demo: httpx.AsyncClient, demo_store: Store, query: str, ext: dict[str, Any]
) -> None:
    result = await post(demo, query=query, extensions=ext)
    assert error_codes(result) == ["BAD_USER_INPUT"] and result["data"] is None
    assert await demo_store.get_query(sha256(query)) is None


async def test_an_invalid_document_is_not_stored(demo: httpx.AsyncClient, demo_store: Store) -> None:
    query = "{ Claim(id: 3) { nope } }"
    assert error_codes(await post(demo, query=query, extensions=extensions(sha256(query))))[0] == "BAD_USER_INPUT"
    assert await demo_store.get_query(sha256(query)) is None


async def test_allowlist_mode_runs_only_stored_queries(store: Store, tmp_path: Any) -> None:
    stored, new = "{ ClaimList { id } }", "{ ClaimList { id status } }"
    (tmp_path / "claims.graphql").write_text(stored)
    assert await persist(store, graphql_schema(schema()), [tmp_path / "claims.graphql"]) == []
    await persist_ready_queries(store, graphql_schema(schema()))
    async with client_for(store, settings=Settings(apq_allowlist=True)) as client:
        assert ok(await post(client, query=stored)) == {"ClaimList": []}
        assert ok((await get(client, sha256(stored))).json()) == {"ClaimList": []}
        assert error_codes(await post(client, query=RECONCILIATION)) == ["NOT_FOUND"]  # allowed: it runs, finds nothing
        assert error_codes(await post(client, query=new)) == ["PERSISTED_QUERY_NOT_ALLOWED"]
        assert error_codes(await post(client, query=new, extensions=extensions(sha256(new)))) == [
            "PERSISTED_QUERY_NOT_ALLOWED"
        ]
        assert error_codes((await get(client, sha256(new))).json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert await store.get_query(sha256(new)) is None


# -- conditional GET, Cache-Control, gzip --------------------------------------------------


async def registered(client: httpx.AsyncClient, query: str) -> str:
    ok(await post(client, query=query, extensions=extensions(sha256(query))))
    return sha256(query)


async def test_get_responses_carry_an_etag_and_answer_304(demo: httpx.AsyncClient) -> None:
    query_hash = await registered(demo, "# etag\n" + RECONCILIATION)
    first = await get(demo, query_hash)
    etag = first.headers["etag"]
    assert first.status_code == 200 and re.fullmatch(r'W/"[A-Za-z0-9_-]{24}"', etag)
    assert first.headers["cache-control"] == "private, no-cache"
    assert (await get(demo, query_hash)).headers["etag"] == etag  # the same body, the same tag
    unchanged = await get(demo, query_hash, **{"if-none-match": f'"other", {etag}'})
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
    assert "content-type" not in unchanged.headers and unchanged.headers["cache-control"] == "private, no-cache"
    assert (await get(demo, query_hash, **{"if-none-match": '"other"'})).status_code == 200


async def test_the_etag_follows_the_data(demo: httpx.AsyncClient) -> None:
    tags = {
        (await get(demo, await registered(demo, f'{{ Claim(id: "{id}") {{ id }} }}'))).headers["etag"]
        for id in ("demo-claim-03", "demo-claim-04")
    }
    assert len(tags) == 2


async def test_posts_are_not_cached_and_cache_control_is_a_setting(demo_store: Store) -> None:
    async with client_for(demo_store, settings=Settings(cache_control="private, max-age=60")) as client:
        query_hash = await registered(client, "# max-age\n" + RECONCILIATION)
        assert (await get(client, query_hash)).headers["cache-control"] == "private, max-age=60"
        posted = await client.post("/graphql", json={"query": RECONCILIATION})
        assert "etag" not in posted.headers and "cache-control" not in posted.headers


async def test_responses_are_compact_and_gzipped_when_accepted(demo: httpx.AsyncClient) -> None:
    query_hash = await registered(demo, "# gzip\n" + RECONCILIATION)
    zipped = await get(demo, query_hash, **{"accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and int(zipped.headers["content-length"]) < len(zipped.content)
    plain = await get(demo, query_hash, **{"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == zipped.content
    assert plain.headers["etag"] == zipped.headers["etag"]
    assert (
        b"\n" not in plain.content and b'": ' not in plain.content and b", " not in plain.content.replace(b'", "', b"")
    )
    small = await demo.get(
        "/graphql", params={"query": '{ Claim(id: "demo-claim-03") { id } }'}, headers={"accept-encoding": "gzip"}
    )
    assert "content-encoding" not in small.headers  # below the minimum size gzip costs more than it saves
