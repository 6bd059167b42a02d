"""Authentication and SMART scopes (app/auth.py, enforced in app/context.py), with real signed tokens."""

from __future__ import annotations

import http.server
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from app.auth import CREATE, DELETE, READ, UPDATE, check_startup, parse_scopes
from app.settings import Settings
from app.store import Store
from app.writes import Writer
from tests.harness import error_codes, ok
from tests.test_mutations import PATIENT, claim
from tests.tokens import SECRET, authed_client, ec_key, jwks, post, rsa_key, token, unsigned

# -- who gets a 401 ---------------------------------------------------------------------------------

# Each made when its test runs, not when the module is collected: a token of the default 5-minute lifetime made at
# collection had expired by the time a long run reached it, and was refused for that instead of its own fault.
UNAUTHENTICATED: dict[str, Callable[[], str | None]] = {
    "no header": lambda: None,
    "not a bearer": lambda: "Basic YWxpY2U6c2VjcmV0",
    "garbage": lambda: "Bearer not.a.jwt",
    "expired": lambda: "Bearer " + token(lifetime=-120),
    "not yet valid": lambda: "Bearer " + token(nbf=int(time.time()) + 3600, lifetime=7200),  # not a fixed date
    "signed with another secret": lambda: "Bearer " + token(key="another-secret-" + "x" * 40),
    "alg none": lambda: "Bearer " + unsigned(),
    "RS256 without a JWKS": lambda: "Bearer " + token(key=rsa_key("stranger"), alg="RS256"),
    "no tenant claim": lambda: "Bearer " + token(tenant=None),
    "a tenant with a slash": lambda: "Bearer " + token(tenant="acme/evil"),
    "no exp": lambda: (
        "Bearer " + jwt.encode({"sub": "alice", "tenant": "acme", "scope": "user/*.rs"}, SECRET, algorithm="HS256")
    ),
}


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with authed_client(store) as c:
        yield c


def _assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize("case", UNAUTHENTICATED)
async def test_no_valid_token_is_401(client: httpx.AsyncClient, case: str) -> None:
    header = UNAUTHENTICATED[case]()
    headers = {"content-type": "application/json", **({"authorization": header} if header else {})}
    _assert_401(await client.post("/graphql", content=b'{"query": "{ ClaimList { id } }"}', headers=headers))


async def test_a_valid_token_reads(client: httpx.AsyncClient) -> None:
    response = await post(client, "{ ClaimList { id } }", token())
    assert response.status_code == 200 and response.json() == {"data": {"ClaimList": []}}


async def test_get_queries_need_a_token_but_the_explorer_page_is_public(client: httpx.AsyncClient) -> None:
    _assert_401(await client.get("/graphql", params={"query": "{ ClaimList { id } }"}))
    page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


async def test_issuer_and_audience_when_configured(store: Store) -> None:
    async with authed_client(store, jwt_issuer="https://idp.example", jwt_audience="fingate") as c:
        good = token(iss="https://idp.example", aud="fingate")
        assert (await post(c, "{ ClaimList { id } }", good)).status_code == 200
        _assert_401(await post(c, "{ ClaimList { id } }", token(iss="https://evil.example", aud="fingate")))
        _assert_401(await post(c, "{ ClaimList { id } }", token(iss="https://idp.example", aud="other")))
        _assert_401(await post(c, "{ ClaimList { id } }", token()))


async def test_rs256_and_es256_from_a_jwks_file(store: Store, tmp_path: Path) -> None:
    path = jwks(tmp_path / "jwks.json", {"rsa-1": rsa_key(), "ec-1": ec_key()})
    async with authed_client(store, jwks_file=path) as c:
        assert (
            await post(c, "{ ClaimList { id } }", token(key=rsa_key(), alg="RS256", kid="rsa-1"))
        ).status_code == 200
        assert (await post(c, "{ ClaimList { id } }", token(key=ec_key(), alg="ES256", kid="ec-1"))).status_code == 200
        # Another key under a known kid, an unknown kid, and the HS256 secret (not configured here).
        _assert_401(await post(c, "{ ClaimList { id } }", token(key=rsa_key("other"), alg="RS256", kid="rsa-1")))
        _assert_401(await post(c, "{ ClaimList { id } }", token(key=rsa_key(), alg="RS256", kid="nope")))
        _assert_401(await post(c, "{ ClaimList { id } }", token()))


@pytest.fixture
def jwks_server(tmp_path: Path) -> Iterator[str]:
    """A JWKS served on loopback, as an identity provider would."""
    jwks(tmp_path / "jwks.json", {"rsa-1": rsa_key()})

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


async def test_jwks_url_on_loopback(store: Store, jwks_server: str) -> None:
    async with authed_client(store, jwks_url=jwks_server) as c:
        assert (
            await post(c, "{ ClaimList { id } }", token(key=rsa_key(), alg="RS256", kid="rsa-1"))
        ).status_code == 200
        _assert_401(await post(c, "{ ClaimList { id } }", token(key=rsa_key("other"), alg="RS256", kid="rsa-2")))


async def test_jwks_first_fetch_on_a_machine_just_booted(
    store: Store, jwks_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`time.monotonic()` counts from boot: on a machine up for seconds, the first fetch must still happen."""
    monkeypatch.setattr("app.auth.time.monotonic", lambda: 3.0)
    async with authed_client(store, jwks_url=jwks_server) as c:
        assert (
            await post(c, "{ ClaimList { id } }", token(key=rsa_key(), alg="RS256", kid="rsa-1"))
        ).status_code == 200


# -- scopes ---------------------------------------------------------------------------------------------

SCOPES: list[tuple[str, set[tuple[str, str]], bool]] = [
    ("system/Claim.rs", {("Claim", READ)}, False),
    ("user/Claim.r", {("Claim", READ)}, False),
    ("patient/Claim.s", set(), False),  # no patient in the token: a patient/ scope grants nothing
    ("user/*.cruds", {("*", a) for a in (READ, CREATE, UPDATE, DELETE)}, False),
    ("user/Claim.cu", {("Claim", CREATE), ("Claim", UPDATE)}, False),
    ("user/Claim.d", {("Claim", DELETE)}, False),
    ("user/Claim.read", {("Claim", READ)}, False),
    ("user/Claim.write", {("Claim", CREATE), ("Claim", UPDATE), ("Claim", DELETE)}, False),
    ("user/Claim.*", {("Claim", a) for a in (READ, CREATE, UPDATE, DELETE)}, False),
    ("openid fhirUser launch offline_access", set(), False),
    ("user/Claim.sr", set(), False),  # v2 letters must come in `cruds` order
    ("user/Claim.rr", set(), False),
    ("user/Claim.rs?status=active", set(), False),  # granular scopes: not supported, so nothing granted
    ("user/Unknown.rs", set(), False),
    ("user/Claim", set(), False),
    ("system/AuditEvent.r", set(), True),
    ("system/AuditEvent.read", set(), True),
    ("user/AuditEvent.r", set(), False),
    ("system/*.rs", {("*", READ)}, True),
    ("user/Claim.rs user/Patient.read", {("Claim", READ), ("Patient", READ)}, False),
]


@pytest.mark.parametrize(("scope", "grants", "audit"), SCOPES, ids=[s[0] for s in SCOPES])
def test_scope_parsing(scope: str, grants: set[tuple[str, str]], audit: bool) -> None:
    assert parse_scopes(scope) == (frozenset(grants), audit)
    assert parse_scopes(scope.split()) == (frozenset(grants), audit)


@pytest.fixture
async def data(store: Store) -> dict[str, str]:
    writer = Writer(store.for_tenant("acme"))
    patient = await writer.create("Patient", dict(PATIENT))
    created = await writer.create("Claim", claim(patient["id"]))
    return {"patient": patient["id"], "claim": created["id"]}


async def _gql(
    client: httpx.AsyncClient, query: str, scope: str, variables: dict[str, Any] | None = None, **claims: Any
) -> dict[str, Any]:
    response = await post(client, query, token(scope=scope, **claims), variables)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_a_missing_scope_is_forbidden_on_that_field_only(client: httpx.AsyncClient, data: dict[str, str]) -> None:
    query = f'{{ Patient(id: "{data["patient"]}") {{ id }} ClaimList {{ id }} ClaimHistory(id: "{data["claim"]}") {{ id }} }}'
    result = await _gql(client, query, "user/Patient.rs")
    assert result["data"] == {"Patient": {"id": data["patient"]}, "ClaimList": None, "ClaimHistory": None}
    assert sorted((e["path"][0], e["extensions"]["code"]) for e in result["errors"]) == [
        ("ClaimHistory", "FORBIDDEN"),
        ("ClaimList", "FORBIDDEN"),
    ]


async def test_a_reference_outside_the_scopes_is_null_and_forbidden(
    client: httpx.AsyncClient, data: dict[str, str]
) -> None:
    query = (
        f'{{ Claim(id: "{data["claim"]}") {{ id patient {{ reference resource {{ ... on Patient {{ id }} }} }} }} }}'
    )
    result = await _gql(client, query, "user/Claim.rs")
    assert result["data"]["Claim"]["patient"] == {"reference": f"Patient/{data['patient']}", "resource": None}
    assert [(e["path"], e["extensions"]["code"]) for e in result["errors"]] == [
        (["Claim", "patient", "resource"], "FORBIDDEN")
    ]
    allowed = await _gql(client, query, "user/Claim.rs user/Patient.rs")
    assert "errors" not in allowed and allowed["data"]["Claim"]["patient"]["resource"] == {"id": data["patient"]}


async def test_a_reverse_list_outside_the_scopes_is_null_and_forbidden(
    client: httpx.AsyncClient, data: dict[str, str]
) -> None:
    query = f'{{ Patient(id: "{data["patient"]}") {{ id ClaimList(_reference: patient) {{ id }} }} }}'
    result = await _gql(client, query, "patient/Patient.r", patient=data["patient"])
    assert result["data"] == {"Patient": {"id": data["patient"], "ClaimList": None}}
    assert [(e["path"], e["extensions"]["code"]) for e in result["errors"]] == [(["Patient", "ClaimList"], "FORBIDDEN")]
    allowed = await _gql(client, query, "patient/Patient.r patient/Claim.s", patient=data["patient"])
    assert allowed["data"]["Patient"]["ClaimList"] == [{"id": data["claim"]}]


async def test_writes_need_their_own_letters(client: httpx.AsyncClient, store: Store, data: dict[str, str]) -> None:
    create = "mutation($res: PatientInput!) { PatientCreate(res: $res) { id } }"
    variables = {"res": {"name": [{"family": "Ng"}]}}
    denied = await _gql(client, create, "user/Patient.rs", variables)
    assert error_codes(denied) == ["FORBIDDEN"]
    assert await store.db["Patient"].count_documents({}) == 1
    v1 = await _gql(client, create, "user/Patient.write", variables)
    assert ok(v1)["PatientCreate"]["id"]
    delete = f'mutation {{ ClaimDelete(id: "{data["claim"]}") {{ id }} }}'
    assert error_codes(await _gql(client, delete, "user/Claim.cru")) == ["FORBIDDEN"]
    assert ok(await _gql(client, delete, "user/Claim.d"))["ClaimDelete"]["id"] == data["claim"]
    # `write` without `read`: the write happens, reading other types through it does not.
    reads = await _gql(client, "{ PatientList { id } }", "user/Patient.write")
    assert error_codes(reads) == ["FORBIDDEN"]


# -- the secure default -----------------------------------------------------------------------------------


def test_no_auth_refuses_to_serve_beyond_loopback(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SystemExit, match="refusing to serve 0.0.0.0"):
        check_startup(Settings(host="0.0.0.0"))
    with pytest.raises(SystemExit, match="FINGATE_AUTH=on"):
        check_startup(Settings(auth="on"))
    check_startup(Settings(host="127.0.0.1"))
    check_startup(Settings(host="::1"))
    check_startup(Settings(host="0.0.0.0", jwt_secret=SECRET))
    with caplog.at_level(logging.WARNING, logger="fingate.auth"):
        check_startup(Settings(host="0.0.0.0", auth="off"))
    assert "FINGATE_AUTH=off" in caplog.text
