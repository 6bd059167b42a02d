"""Default deny with auth on: whatever a request looks like, without a valid token it gets a 401, the explorer page,
or the CapabilityStatement (`/metadata`: public, as FHIR's is, and it holds no data)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.capability import capability_statement
from app.explorer import explorer_page
from app.graphql.apq import sha256
from app.http import dumps
from app.settings import Settings
from app.store import Store
from tests.harness import error_codes
from tests.test_mutations import PATIENT
from tests.tokens import authed_client, bearer, post, token

PROBE = "{ AuditLog(_count: 2) { sub type id } PatientList(_count: 2) { id } }"
PAGE = explorer_page().encode()
# What /metadata says with auth on; no tenant's data is in it (it is built before any request).
METADATA = dumps(capability_statement(Settings(), secured=True))
INSTANCE = "/Patient/probe/$graphql"  # the instance level, for a Patient that may or may not exist
# The PDF documents (GET only), for resources that may or may not exist.
DOCUMENTS = ["/Claim/probe/$cms1500", "/Claim/probe/$superbill", "/Encounter/probe/$superbill"]
DOCUMENTS += ["/Invoice/probe/$statement", "/Patient/probe/$statement"]
CREATED: dict[str, str] = {}  # the fixture's Patient id, for the control

REQUESTS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
async def store(mongo_uri: str) -> AsyncIterator[Store]:
    """A tenant with data and the probes stored as persisted queries, so a leak would show."""
    from tests.conftest import fresh_store

    async with fresh_store(mongo_uri) as s:
        acme = s.for_tenant("acme")
        async with authed_client(acme) as c:
            created = await post(
                c, "mutation($r: PatientInput!) { PatientCreate(res: $r) { id } }", token(), {"r": PATIENT}
            )
            assert not created.json().get("errors"), created.text
        CREATED["patient"] = created.json()["data"]["PatientCreate"]["id"]
        await s.put_query(sha256(PROBE), PROBE)
        await s.put_query(sha256(INSTANCE_PROBE), INSTANCE_PROBE)
        yield s


@pytest.fixture(scope="module")
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with authed_client(store) as c:
        yield c


def _refused_or_page(response: httpx.Response) -> None:
    """The only answers an unauthenticated caller may get from a server with auth on."""
    if response.status_code == 200 and response.url.path == "/metadata":
        assert response.headers["content-type"] == "application/fhir+json" and response.content == METADATA
        return
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("text/html") and response.content == PAGE, response.text
        return
    assert response.status_code == 401, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert set(body) == {"errors"} and error_codes(body) == ["UNAUTHENTICATED"], body


# -- the hostile run's requests, by name ------------------------------------------------------------------


async def test_a_percent_encoded_query_name_with_a_browser_accept_is_401(client: httpx.AsyncClient) -> None:
    """`%71uery` is `query` once decoded: it used to pass for the explorer page and run as the all-scopes anonymous."""
    raw = "%71uery=" + urllib.parse.quote(PROBE)
    _refused_or_page(response := await client.get(f"/graphql?{raw}", headers={"accept": "text/html"}))
    assert response.status_code == 401


async def test_a_persisted_query_get_with_a_browser_accept_is_401(client: httpx.AsyncClient) -> None:
    extensions = json.dumps({"persistedQuery": {"version": 1, "sha256Hash": sha256(PROBE)}})
    response = await client.get("/graphql", params={"extensions": extensions}, headers={"accept": "text/html"})
    _refused_or_page(response)
    assert response.status_code == 401


async def test_the_explorer_page_needs_no_token_and_runs_nothing(client: httpx.AsyncClient, store: Store) -> None:
    before = store.commands.count
    response = await client.get("/graphql", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert response.status_code == 200 and response.content == PAGE
    assert store.commands.count == before


async def test_with_a_token_the_same_requests_run(client: httpx.AsyncClient) -> None:
    """The control: the requests above are refused for want of a token, not because they cannot run."""
    tok = bearer(token(scope="user/*.rs system/AuditEvent.r"))
    raw = "%71uery=" + urllib.parse.quote(PROBE)
    for path in ("/graphql", "/$graphql"):
        response = await client.get(f"{path}?{raw}", headers={"accept": "application/json", **tok})
        assert response.status_code == 200 and response.json()["data"]["PatientList"], response.text
    raw = "%71uery=" + urllib.parse.quote(INSTANCE_PROBE)
    path = f"/Patient/{CREATED['patient']}/$graphql"
    response = await client.get(f"{path}?{raw}", headers={"accept": "application/json", **tok})
    assert response.status_code == 200 and response.json()["data"]["id"] == CREATED["patient"], response.text


async def test_graphql_endpoints_refuse_without_a_token(client: httpx.AsyncClient) -> None:
    for path in ("/$graphql", INSTANCE, f"/Patient/{CREATED['patient']}/$graphql", "/Nonsense/x/$graphql"):
        for headers in ({"accept": "text/html"}, {"accept": "application/json"}):
            response = await client.get(f"{path}?query={urllib.parse.quote(INSTANCE_PROBE)}", headers=headers)
            assert response.status_code == 401, (path, response.text)
            _refused_or_page(response)
        _refused_or_page(response := await client.post(path, json={"query": INSTANCE_PROBE}))
        assert response.status_code == 401


async def test_documents_refuse_without_a_token_and_read_nothing(client: httpx.AsyncClient, store: Store) -> None:
    before = store.commands.count
    mine = f"/Patient/{CREATED['patient']}/$statement"
    for path in (*DOCUMENTS, mine):
        for headers in ({}, {"accept": "application/pdf"}, {"accept": "text/html"}, {"authorization": "Bearer x.y.z"}):
            _refused_or_page(response := await client.get(path, headers=headers))
            assert response.status_code == 401, (path, response.text)
    assert store.commands.count == before
    # The control: with a token the same request gets the PDF.
    response = await client.get(mine, headers=bearer(token(scope="user/*.rs")))
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"


async def test_metadata_needs_no_token_and_reads_nothing(client: httpx.AsyncClient, store: Store) -> None:
    before = store.commands.count
    response = await client.get("/metadata", headers={"authorization": "Bearer nonsense"})
    assert response.status_code == 200 and response.content == METADATA
    assert store.commands.count == before


async def test_metrics_need_their_own_token(store: Store) -> None:
    async with authed_client(store) as closed:
        _refused_or_page(await closed.get("/metrics"))
        _refused_or_page(await closed.get("/metrics", headers=bearer(token())))  # a user's JWT is not the scraper's
    async with authed_client(store, metrics_token="scraper-" + "s" * 32) as c:
        assert (await c.get("/metrics", headers=bearer("scraper-" + "s" * 32))).status_code == 200
        _refused_or_page(await c.get("/metrics", headers=bearer("scraper-" + "x" * 32)))


async def test_introspection_needs_a_read_scope(client: httpx.AsyncClient) -> None:
    query = "{ __schema { queryType { name } } }"
    for scope in ("openid fhirUser", "user/Claim.c"):
        refused = (await post(client, query, token(scope=scope))).json()
        assert refused["data"] is None and set(error_codes(refused)) == {"FORBIDDEN"}, refused
    assert (await post(client, query, token(scope="user/Claim.rs"))).json()["data"]["__schema"]


# -- every shape of request ---------------------------------------------------------------------------------


def _encoded(text: str, draw: Any) -> str:
    """`text` with each character percent-encoded or not, as the drawn mask says (`%71uery` is `query`)."""
    mask = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    safe = "" if any(mask) else "-_.~"
    return "".join(
        "".join(f"%{b:02X}" for b in ch.encode()) if hide else urllib.parse.quote(ch, safe=safe)
        for ch, hide in zip(text, mask, strict=True)
    )


INSTANCE_PROBE = "{ id name { family } }"
PARAMS = {
    "query": st.sampled_from(
        [PROBE, INSTANCE_PROBE, "{ __typename }", 'mutation { PatientDelete(id: "x") { id } }', ""]
    ),
    "extensions": st.sampled_from(
        [
            json.dumps({"persistedQuery": {"version": 1, "sha256Hash": sha256(PROBE)}}),
            json.dumps({"persistedQuery": {"version": 1, "sha256Hash": sha256(INSTANCE_PROBE)}}),
            "{}",
            "not json",
        ]
    ),
    "variables": st.sampled_from(["{}", '{"n": 1}', "[1]", "1" * 5000]),
    "operationName": st.sampled_from(["A", ""]),
}
ACCEPTS = st.sampled_from(
    [
        None,
        "text/html",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "*/*",
        "application/json",
        "application/graphql-response+json",
        "TEXT/HTML",
        "text/plain",
    ]
)
# Made at collection: valid for a day, so a long run still sends a token refused for its key alone.
WRONG_KEY = "Bearer " + token(key="w" * 40, lifetime=24 * 3600)
AUTHORIZATIONS = st.sampled_from([None, "", "Bearer", "Bearer ", "bearer x.y.z", "Basic YWxpY2U6c2VjcmV0", WRONG_KEY])


@st.composite
def requests(draw: Any) -> dict[str, Any]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]))
    names = draw(st.lists(st.sampled_from(sorted(PARAMS)), unique=True, max_size=4))
    query_string = "&".join(f"{_encoded(n, draw)}={_encoded(draw(PARAMS[n]), draw)}" for n in names)
    headers = {}
    if (accept := draw(ACCEPTS)) is not None:
        headers["accept"] = accept
    if (authorization := draw(AUTHORIZATIONS)) is not None:
        headers["authorization"] = authorization
    content = b""
    if method != "GET" and draw(st.booleans()):
        single = {n: draw(PARAMS[n]) for n in names} | {"query": draw(PARAMS["query"])}
        if "extensions" in single:
            single["extensions"] = json.loads(single["extensions"]) if single["extensions"].startswith("{") else None
        body: Any = [single, single] if draw(st.booleans()) else single  # batched bodies too
        content = json.dumps(body).encode()
        headers["content-type"] = draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/json; charset=utf-8",
                    "application/jsonp",
                    "text/plain",
                    "application/graphql",
                    "application/x-www-form-urlencoded",
                ]
            )
        )
    path = draw(
        st.sampled_from(
            ["/graphql", "/metrics", "/$graphql", INSTANCE, "/Nonsense/x/$graphql", "/metadata", *DOCUMENTS]
        )
    )
    return {
        "method": method,
        "url": f"{path}?{query_string}" if query_string else path,
        "headers": headers,
        "content": content,
    }


@REQUESTS
@given(request=requests())
async def test_no_token_no_data_whatever_the_request(client: httpx.AsyncClient, request: dict[str, Any]) -> None:
    response = await client.request(**request)
    get_only = ("/metrics", "/metadata", *DOCUMENTS)
    if request["url"].split("?")[0] in get_only and request["method"] not in ("GET", "HEAD"):
        assert response.status_code == 405 and error_codes(response.json()) == ["BAD_USER_INPUT"]
        return
    if request["method"] == "HEAD":
        assert response.status_code in (200, 401) and not response.content
        return
    _refused_or_page(response)
