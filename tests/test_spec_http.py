"""FHIR GraphQL over HTTP: `[base]/$graphql`, `[base]/{Type}/{id}/$graphql`, `/metadata`, and GraphQL-shaped errors
whatever the request looks like (tests/test_default_deny.py holds the same endpoints to default deny)."""

from __future__ import annotations

import json
import re
import shlex
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.capabilitystatement import CapabilityStatement
from fhir.resources.operationoutcome import OperationOutcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.fhir.model import SERVED_RESOURCES, spec
from app.graphql.apq import sha256
from app.store import Store
from tests.harness import client_for, error_codes
from tests.tokens import authed_client, bearer, token

CLAIM = "demo-claim-03"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module", params=[True, False], ids=["compiled", "graphql-core"])
async def client(request: pytest.FixtureRequest, demo_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    from app.settings import Settings

    async with client_for(demo_store, settings=Settings(compiled=request.param)) as c:
        yield c


async def _claim(client: httpx.AsyncClient) -> dict[str, Any]:
    """The demo claim as `/graphql` answers it: what the instance level must answer too."""
    response = await client.post(
        "/graphql", json={"query": f'{{ Claim(id: "{CLAIM}") {{ id status total {{ value currency }} }} }}'}
    )
    claim = response.json()["data"]["Claim"]
    assert claim["id"] == CLAIM, response.text
    return claim  # type: ignore[no-any-return]


# -- the endpoints ---------------------------------------------------------------------------------------------


async def test_instance_level_post_answers_that_claim(client: httpx.AsyncClient) -> None:
    """`curl -X POST [base]/Claim/<id>/$graphql -d '{"query":"{ id status }"}'` (issue 17's proof)."""
    body = b'{"query":"{ id status total { value currency } }"}'
    expected = {"data": await _claim(client)}
    for content_type in ("application/json", "application/x-www-form-urlencoded"):  # the second is curl -d's
        response = await client.post(f"/Claim/{CLAIM}/$graphql", content=body, headers={"content-type": content_type})
        assert response.status_code == 200 and response.headers["content-type"] == "application/json", response.text
        assert response.json() == expected


async def test_a_form_encoded_body_runs_queries_only(client: httpx.AsyncClient) -> None:
    """A cross-site HTML form can POST this content type without a preflight: no mutation through it."""
    body = json.dumps({"query": f'mutation {{ ClaimDelete(id: "{CLAIM}") {{ id }} }}'})
    form = {"content-type": "application/x-www-form-urlencoded"}
    for path in ("/graphql", "/$graphql"):
        response = await client.post(path, content=body, headers=form)
        assert response.status_code == 415 and error_codes(response.json()) == ["BAD_USER_INPUT"], response.text
    assert (await _claim(client))["id"] == CLAIM


async def test_instance_level_get_and_application_graphql(client: httpx.AsyncClient) -> None:
    expected = {"data": await _claim(client)}
    query = "{ id status total { value currency } }"
    got = await client.get(f"/Claim/{CLAIM}/$graphql", params={"query": query})
    assert got.json() == expected and got.headers["etag"], got.text  # the same conditional GET as /graphql
    again = await client.get(
        f"/Claim/{CLAIM}/$graphql", params={"query": query}, headers={"if-none-match": got.headers["etag"]}
    )
    assert again.status_code == 304
    posted = await client.post(
        f"/Claim/{CLAIM}/$graphql", content=query.encode(), headers={"content-type": "application/graphql"}
    )
    assert posted.json() == expected, posted.text


async def test_instance_level_keeps_named_operations_variables_fragments_and_reverse_lists(
    client: httpx.AsyncClient,
) -> None:
    query = """
    fragment Money on Money { value currency }
    query Other { id }
    query Mine($n: Int = 5) {
      __typename id total { ...Money }
      responses: ClaimResponseList(_reference: request, _count: $n) { id outcome }
    }"""
    body = {"query": query, "operationName": "Mine", "variables": {"n": 2}}
    result = (await client.post(f"/Claim/{CLAIM}/$graphql", json=body)).json()
    assert "errors" not in result, result
    data = result["data"]
    assert data["__typename"] == "Claim" and data["id"] == CLAIM
    assert data["total"] == (await _claim(client))["total"]
    direct = await client.post(
        "/graphql",
        json={
            "query": f'{{ Claim(id: "{CLAIM}") {{ ClaimResponseList(_reference: request, _count: 2) {{ id outcome }} }} }}'
        },
    )
    assert data["responses"] == direct.json()["data"]["Claim"]["ClaimResponseList"]


async def test_instance_level_truncation_and_error_paths_start_at_the_resource(client: httpx.AsyncClient) -> None:
    org = await client.post(
        "/Organization/demo-payer/$graphql", json={"query": "{ id ClaimList(_reference: insurer, _count: 1) { id } }"}
    )
    body = org.json()
    assert body["data"]["id"] == "demo-payer" and len(body["data"]["ClaimList"]) == 1, body
    assert body["extensions"]["truncated"] == [{"path": ["ClaimList"], "returned": 1, "more": True}]


async def test_instance_level_unknown_id_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post("/Claim/no-such-claim/$graphql", json={"query": "{ id status }"})
    body = response.json()
    assert response.status_code == 200 and body["data"] is None and error_codes(body) == ["NOT_FOUND"], body
    assert "path" not in body["errors"][0]  # the root itself is what is missing
    assert body["errors"][0]["extensions"]["operationOutcome"]["issue"][0]["code"] == "not-found"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_instance_level_unknown_type_is_a_json_404(client: httpx.AsyncClient, method: str) -> None:
    params = {"query": "{ id }"}
    response = await (
        client.get("/Nonsense/x/$graphql", params=params)
        if method == "GET"
        else client.post("/Nonsense/x/$graphql", json=params)
    )
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert error_codes(response.json()) == ["NOT_FOUND"] and "Nonsense" in response.text


async def test_instance_level_errors_point_at_the_clients_text(client: httpx.AsyncClient) -> None:
    """Validation runs on the rewritten query; locations and the OperationOutcome are the client's line and column."""
    query = "query Q {\n  id\n  nope\n}"
    result = (await client.post(f"/Claim/{CLAIM}/$graphql", json={"query": query})).json()
    (error,) = result["errors"]
    assert error["locations"] == [{"line": 3, "column": 3}] and "'nope' on type 'Claim'" in error["message"], error
    issue = error["extensions"]["operationOutcome"]["issue"][0]
    assert issue["location"] == ["line 3, column 3"] and issue["diagnostics"] == error["message"]
    one_line = (await client.post(f"/Claim/{CLAIM}/$graphql", json={"query": "{ id nope }"})).json()
    assert one_line["errors"][0]["locations"] == [{"line": 1, "column": 6}], one_line


async def test_instance_level_runs_queries_only(client: httpx.AsyncClient) -> None:
    mutation = f'mutation {{ ClaimDelete(id: "{CLAIM}") {{ id }} }}'
    result = (await client.post(f"/Claim/{CLAIM}/$graphql", json={"query": mutation})).json()
    assert result["data"] is None and error_codes(result) == ["BAD_USER_INPUT"], result
    assert result["errors"][0]["extensions"]["operationOutcome"]["issue"][0]["location"] == ["line 1, column 1"]
    assert (await _claim(client))["id"] == CLAIM  # nothing was deleted


async def test_instance_level_persisted_query(client: httpx.AsyncClient) -> None:
    """APQ at the instance level: the hash is of the client's text; the same text then runs by hash alone."""
    query = "{ id status }"
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha256(query)}}
    first = await client.post(f"/Claim/{CLAIM}/$graphql", json={"query": query, "extensions": extensions})
    assert first.json()["data"]["id"] == CLAIM, first.text
    by_hash = await client.get(f"/Claim/{CLAIM}/$graphql", params={"extensions": json.dumps(extensions)})
    assert by_hash.json() == first.json(), by_hash.text


async def test_system_level_is_graphql(client: httpx.AsyncClient) -> None:
    query = f'{{ Claim(id: "{CLAIM}") {{ id status total {{ value currency }} }} }}'
    expected = {"data": {"Claim": await _claim(client)}}
    assert (await client.post("/$graphql", json={"query": query})).json() == expected
    assert (await client.get("/$graphql", params={"query": query})).json() == expected
    page = await client.get("/$graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


# -- errors that say what and where -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/graphql", "/$graphql"])
async def test_a_mutation_over_get_is_405_with_allow(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, params={"query": 'mutation { ClaimDelete(id: "x") { id } }'})
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/json" and error_codes(response.json()) == ["BAD_USER_INPUT"]


@pytest.mark.parametrize(
    ("query", "where", "text"),
    [
        ("{ Claim(id: 1 { id } }", "line 1, column 15", "Syntax Error"),
        ("{\n  ClaimList { id nope }\n}", "line 2, column 18", "Cannot query field 'nope'"),
        ("query($x: Int) { ClaimList { id } }", "line 1, column 7", "'$x' is never used"),
    ],
)
async def test_parse_and_validation_errors_carry_an_operation_outcome_at_line_and_column(
    client: httpx.AsyncClient, query: str, where: str, text: str
) -> None:
    result = (await client.post("/graphql", json={"query": query})).json()
    (error,) = result["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and text in error["message"], error
    outcome = error["extensions"]["operationOutcome"]
    OperationOutcome.model_validate(outcome)  # R5's
    assert outcome["issue"] == [
        {"severity": "error", "code": "invalid", "diagnostics": error["message"], "location": [where]}
    ]


# -- /metadata ------------------------------------------------------------------------------------------------


async def test_metadata_is_an_r5_capability_statement_of_what_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/metadata")
    assert response.status_code == 200 and response.headers["content-type"] == "application/fhir+json"
    body = response.json()
    statement = CapabilityStatement.model_validate(body)
    assert statement.fhirVersion == "5.0.0" and statement.kind == "instance"
    (rest,) = body["rest"]
    assert "security" not in rest  # auth is off here
    assert [r["type"] for r in rest["resource"]] == sorted(SERVED_RESOURCES)
    model = spec()
    for resource in rest["resource"]:
        served = {p.code: p for p in model.served_search_params(resource["type"])}
        listed = {p["name"]: p for p in resource["searchParam"]}
        assert listed.keys() == served.keys(), resource["type"]
        for code, param in served.items():
            assert listed[code]["type"] == param.type
            assert listed[code].get("definition", "") == param.url
            assert param.code.replace("-", "_") in listed[code]["documentation"]
        assert {i["code"] for i in resource["interaction"]} == {
            "read",
            "vread",
            "search-type",
            "history-instance",
            "create",
            "update",
            "delete",
        }
        assert [o["name"] for o in resource["operation"]] == ["graphql"]
    assert [o["name"] for o in rest["operation"]] == ["graphql"]
    assert (await client.post("/metadata")).status_code == 405


async def test_every_listed_search_parameter_is_an_argument_of_the_types_list(client: httpx.AsyncClient) -> None:
    """The statement and the schema agree: each listed parameter is a `TList` argument (introspected)."""
    body = (await client.get("/metadata")).json()
    for resource in body["rest"][0]["resource"]:
        query = '{ __type(name: "Query") { fields { name args { name } } } }'
        fields = (await client.post("/graphql", json={"query": query})).json()["data"]["__type"]["fields"]
        args = {a["name"] for f in fields if f["name"] == f"{resource['type']}List" for a in f["args"]}
        names = {p["name"].replace("-", "_") for p in resource["searchParam"]}
        assert names and names <= args, (resource["type"], names - args)


async def test_metadata_with_auth_on_is_public_and_has_the_smart_security_section(demo_store: Store) -> None:
    async with authed_client(
        demo_store, smart_authorize_url="https://auth.example/authorize", smart_token_url="https://auth.example/token"
    ) as c:
        response = await c.get("/metadata")  # no token: FHIR's metadata is public
    assert response.status_code == 200
    body = response.json()
    CapabilityStatement.model_validate(body)
    security = body["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert "user/Claim.rs" in security["description"]
    (uris,) = security["extension"]
    assert {e["url"]: e["valueUri"] for e in uris["extension"]} == {
        "authorize": "https://auth.example/authorize",
        "token": "https://auth.example/token",
    }


# -- every malformed request gets a GraphQL-shaped JSON answer ----------------------------------------------------

MALFORMED = settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))
PATHS = ["/graphql", "/$graphql", f"/Claim/{CLAIM}/$graphql", "/Claim/no-such/$graphql", "/Nope/x/$graphql"]
BODIES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b"{",
            b"[]",
            b"null",
            b"5",
            b'"q"',
            b'{"query": 5}',
            b'{"query": "{ id "}',
            b'{"query": "{ __typename }"}',
            b'{"query": "{ id status }"}',
            b'{"query": "{ __typename }", "variables": []}',
            b'{"query": "{ __typename }", "extensions": "x"}',
            b'[{"query": "{ __typename }"}]',
            b'{"query": "mutation { ClaimDelete(id: \\"nope\\") { id } }"}',
            b"{ __typename }",
            b"{ id status }",
            b"query {",
            b"\xff\xfe",
            b'{"query": "\\ud800"}',
        ]
    ),
)
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "",
        "application/json",
        "application/json; charset=utf-8",
        "application/graphql",
        "application/graphql; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/graphql-response+json",
        "application/fhir+json",
        ";;;",
    ]
)
QUERIES = st.sampled_from(
    [
        None,
        "",
        "{ id status }",
        "{ __typename }",
        "{",
        'mutation { ClaimDelete(id: "nope") { id } }',
        "subscription { x }",
    ]
)


@st.composite
def malformed(draw: Any) -> dict[str, Any]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    params = {}
    if (query := draw(QUERIES)) is not None:
        params["query"] = query
    if draw(st.booleans()):
        params["variables"] = draw(st.sampled_from(["{}", "[1]", "x", '{"a": 1}', "null"]))
    if draw(st.booleans()):
        params["operationName"] = draw(st.sampled_from(["", "A", "{"]))
    headers = {"accept": draw(st.sampled_from(["application/json", "*/*", "application/graphql-response+json"]))}
    if (content_type := draw(CONTENT_TYPES)) is not None:
        headers["content-type"] = content_type
    path = draw(st.sampled_from(PATHS))
    return {
        "method": method,
        "url": f"{path}?{urllib.parse.urlencode(params)}" if params else path,
        "headers": headers,
        "content": draw(BODIES) if method != "GET" else b"",
    }


def _explorer(request: dict[str, Any], response: httpx.Response) -> bool:
    """Whether `response` is the explorer page, the answer to a browser's GET of the endpoint (no `query`, HTML
    acceptable), token or not: it runs nothing (README "Security"). The instance level has no explorer."""
    url = urllib.parse.urlsplit(request["url"])
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    if url.path not in ("/graphql", "/$graphql") or request["method"] != "GET" or "query" in query:
        return False
    if request["headers"]["accept"] != "*/*":
        return False
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html"), response.text
    assert "<title>FinGate explorer</title>" in response.text
    return True


def _graphql_shaped(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json", (response.status_code, response.text)
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) <= {"data", "errors", "extensions"}, body
    if response.status_code != 200:
        assert body["errors"], body
    for error in body.get("errors") or ():
        assert error["message"] and error["extensions"]["code"], error
    if response.status_code == 405:
        assert response.headers["allow"], response.headers


@pytest.fixture(scope="module")
async def open_client(demo_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(demo_store) as c:
        yield c


@pytest.fixture(scope="module")
async def secured(demo_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with authed_client(demo_store) as c:
        yield c


@MALFORMED
@given(request=malformed())
async def test_every_answer_is_graphql_json_with_auth_off(
    open_client: httpx.AsyncClient, request: dict[str, Any]
) -> None:
    response = await open_client.request(**request)
    if not _explorer(request, response):
        _graphql_shaped(response)


@MALFORMED
@given(request=malformed(), with_token=st.booleans())
async def test_every_answer_is_graphql_json_with_auth_on(
    secured: httpx.AsyncClient, request: dict[str, Any], with_token: bool
) -> None:
    if with_token:
        request["headers"].update(bearer(token(scope="user/*.rs", tenant="default")))
    response = await secured.request(**request)
    if _explorer(request, response):
        return
    _graphql_shaped(response)
    if not with_token:
        assert response.status_code == 401, response.text


async def test_a_refused_cors_preflight_is_json(demo_store: Store) -> None:
    from app.settings import Settings

    preflight = {"origin": "https://evil.example", "access-control-request-method": "POST"}
    async with client_for(demo_store, settings=Settings(cors_origins=["https://billing.example"])) as c:
        for path in ("/graphql", "/$graphql", f"/Claim/{CLAIM}/$graphql"):
            response = await c.options(path, headers=preflight)
            assert response.status_code == 400 and response.headers["content-type"] == "application/json"
            assert error_codes(response.json()) == ["FORBIDDEN"] and "origin" in response.text


async def test_the_instance_level_is_compiled_and_counted_under_one_metrics_label(demo_store: Store) -> None:
    from app.settings import Settings

    async with client_for(demo_store, settings=Settings(compiled=True)) as c:
        engine = c.fingate_app.state.compiled_engine  # type: ignore[attr-defined]
        before = engine.stats["compiled"]
        for claim in ("demo-claim-01", "demo-claim-02"):
            result = (await c.post(f"/Claim/{claim}/$graphql", json={"query": "{ id status }"})).json()
            assert result["data"]["id"] == claim, result
        assert engine.stats["compiled"] == before + 2  # the compiled path answered, not the fallback
        assert len(engine.plans) == 1  # one text for every id: one plan
        metrics = (await c.get("/metrics")).text
    assert 'path="/{type}/{id}/$graphql"' in metrics and 'path="/Claim' not in metrics


# -- the README's curl examples, on the demo data -------------------------------------------------------------

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SECTION = README.split("## FHIR GraphQL endpoints and `/metadata`", 1)[1].split("\n## ", 1)[0]


def _curl_examples() -> list[tuple[list[str], dict[str, Any]]]:
    """Each `curl` command of the section followed by a `# {...}` line: (its arguments, the answer it shows)."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", SECTION, re.S):
        lines = block.replace("\\\n", " ").splitlines()
        for i, command in enumerate(lines[:-1]):
            if command.startswith("curl ") and lines[i + 1].startswith("# {"):
                shown = lines[i + 1][2:]
                for more in lines[i + 2 :]:  # an answer wrapped onto `#  ` lines
                    if not more.startswith("#  "):
                        break
                    shown += more[3:]
                out.append((shlex.split(command)[1:], json.loads(shown)))
    return out


async def _curl(client: httpx.AsyncClient, args: list[str]) -> httpx.Response:
    """The few curl options the README uses, sent through the test client."""
    method, url, headers, data, get = None, "", {}, None, False
    params: list[tuple[str, str]] = []
    it = iter(args)
    for arg in it:
        if arg == "-X":
            method = next(it)
        elif arg == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip().lower()] = value.strip()
        elif arg in ("-d", "--data-binary"):
            data = next(it).encode()
            headers.setdefault("content-type", "application/x-www-form-urlencoded")  # curl's default for -d
        elif arg == "--data-urlencode":
            params.append(tuple(next(it).split("=", 1)))  # type: ignore[arg-type]
        elif arg == "-G":
            get = True
        elif arg.startswith("http"):
            url = urllib.parse.urlsplit(arg).path
    if get:
        return await client.get(url, params=params, headers=headers)
    return await client.request(method or "POST", url, content=data, headers=headers)


async def test_the_readme_curl_examples_answer_as_shown(client: httpx.AsyncClient) -> None:
    examples = _curl_examples()
    assert len(examples) >= 4, examples
    for args, shown in examples:
        response = await _curl(client, args)
        got = response.json()
        for error in got.get("errors", ()):
            error["extensions"].pop("requestId", None)
        assert got == shown, (args, response.text)
