"""Hostile input against the real database: generated queries and mutations (hypothesis-graphql), and named attacks.

The token cases of the issue live beside the rules they test: an expired token, a token signed with
another key and `alg: none` in tests/test_auth.py (`test_no_valid_token_is_401`), a token for tenant
A reading tenant B's id in tests/test_tenants.py.

The strategies are built when their test first runs (`st.deferred`), not at import: building them
costs seconds, which collection alone would pay. Generation is restricted to a few root fields (below): the whole schema has ~2,250 fields, and
a handful of roots already reach every datatype, reference and reverse list through nesting.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import graphql
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import mutations, nodes, queries

from app.graphql.compat import graphql_schema
from app.store import Store
from tests.harness import client_for, error_codes, schema
from tests.test_mutations import claim

QUERY_ROOTS = [
    "Claim",
    "ClaimList",
    "ClaimConnection",
    "PaymentReconciliation",
    "PaymentReconciliationList",
    "PatientList",
    "ClaimHistory",
    "AuditLog",
]
MUTATION_ROOTS = [
    "ClaimCreate",
    "ClaimUpdate",
    "ClaimDelete",
    "PatientCreate",
    "PatientUpdate",
    "PaymentReconciliationCreate",
]
WRITTEN = ["Claim", "Patient", "PaymentReconciliation"]
CODES = {
    "BAD_USER_INPUT",
    "NOT_FOUND",
    "CONFLICT",
    "STATUS_RULE",
    "FORBIDDEN",
    "QUERY_TOO_COMPLEX",
    "PRECONDITION_FAILED",
}  # never INTERNAL
HOSTILE = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))

_DIGITS = st.from_regex(r"-?[0-9]{1,1000}(\.[0-9]{1,40})?", fullmatch=True)
SCALARS = {
    "Decimal": st.one_of(
        _DIGITS.map(nodes.String), st.decimals(allow_nan=False, allow_infinity=False).map(nodes.String)
    ),
    "JSON": st.sampled_from([nodes.Object([]), nodes.String("{}"), nodes.List([])]),
}


@pytest.fixture(scope="module")
async def client(demo_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(demo_store) as c:
        yield c


async def _send(
    client: httpx.AsyncClient, body: bytes | str, content_type: str = "application/json"
) -> dict[str, Any] | None:
    """POST; the answer must be a clean client error or a GraphQL result whose errors all carry a FinGate code."""
    response = await client.post("/graphql", content=body, headers={"content-type": content_type})
    assert response.status_code in (200, 400, 413), response.text[:2000]
    assert "Traceback" not in response.text and 'File "' not in response.text
    if response.status_code != 200:
        return None
    result: dict[str, Any] = response.json()
    for error in result.get("errors", []):
        assert error["extensions"]["code"] in CODES, error
    return result


async def _counts(store: Store) -> dict[str, int]:
    names = [*WRITTEN, *(f"{t}_history" for t in WRITTEN), "audit"]
    return {name: await store.db[name].count_documents({}) for name in names}


def _outcomes(query: str, data: dict[str, Any] | None) -> dict[str, int]:
    """Writes that answered a resource, by kind: a failed write answers null and must store nothing."""
    out = {"Create": 0, "Update": 0, "Delete": 0}
    if not data:
        return out
    document = graphql.parse(query)
    for definition in document.definitions:
        if isinstance(definition, graphql.OperationDefinitionNode):
            for sel in definition.selection_set.selections:
                if isinstance(sel, graphql.FieldNode) and data.get((sel.alias or sel.name).value) is not None:
                    out[next(k for k in out if sel.name.value.endswith(k))] += 1
    return out


@HOSTILE
@given(query=st.deferred(lambda: queries(graphql_schema(schema()), fields=QUERY_ROOTS, custom_scalars=SCALARS)))
async def test_generated_queries(client: httpx.AsyncClient, query: str) -> None:
    await _send(client, json.dumps({"query": query}))


@HOSTILE
@given(query=st.deferred(lambda: mutations(graphql_schema(schema()), fields=MUTATION_ROOTS, custom_scalars=SCALARS)))
async def test_generated_mutations_write_all_or_nothing(
    client: httpx.AsyncClient, demo_store: Store, query: str
) -> None:
    before = await _counts(demo_store)
    result = await _send(client, json.dumps({"query": query}))
    after = await _counts(demo_store)
    done = _outcomes(query, result and result.get("data"))
    delta = {k: after[k] - before[k] for k in after}
    assert sum(delta[t] for t in WRITTEN) == done["Create"] - done["Delete"], (delta, done, result)
    assert sum(delta[f"{t}_history"] for t in WRITTEN) == done["Create"] + done["Update"], (delta, done)
    assert delta["audit"] == sum(done.values()), (delta, done)


@HOSTILE
@given(body=st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(lambda q: json.dumps({"query": q}))))
async def test_arbitrary_bodies(client: httpx.AsyncClient, body: bytes | str) -> None:
    await _send(client, body)


# -- named cases ---------------------------------------------------------------------------------------


async def _gql(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await _send(client, json.dumps({"query": query, "variables": variables or {}}))
    assert result is not None
    return result


@pytest.mark.parametrize(
    "value", ['{"$ne": null}', "{$ne: null}", ".*", "^.*$", "(a+)+$", "active|draft", "\\", "$where"]
)
async def test_search_values_are_literals(client: httpx.AsyncClient, value: str) -> None:
    assert (await _gql(client, "{ ClaimList(_count: 1) { id } }"))["data"]["ClaimList"]  # there are claims to leak
    for param in ("status", "identifier", "patient", "_id", "created"):
        result = await _gql(client, f"query($v: [String!]) {{ ClaimList({param}: $v) {{ id }} }}", {"v": value})
        assert result["data"] in ({"ClaimList": []}, {"ClaimList": None}), (param, result)
    names = await _gql(client, "query($v: [String!]) { OrganizationList(name: $v) { id } }", {"v": value})
    assert names["data"] == {"OrganizationList": []}


async def test_an_operator_object_as_a_search_value_is_refused(client: httpx.AsyncClient) -> None:
    result = await _gql(client, "query($v: [String!]) { ClaimList(status: $v) { id } }", {"v": {"$ne": None}})
    assert error_codes(result) == ["BAD_USER_INPUT"] and result["data"] is None


@pytest.mark.parametrize("key", ["$where", "$set", "a.b", "meta.versionId", "$"])
async def test_dollar_and_dotted_keys_in_resource_json_are_refused(
    client: httpx.AsyncClient, demo_store: Store, key: str
) -> None:
    before = await _counts(demo_store)
    res = _input(claim("demo-patient-1"), contained=[{"resourceType": "Patient", "id": "p", key: "x"}])
    result = await _gql(client, "mutation($res: ClaimInput!) { ClaimCreate(res: $res) { id } }", {"res": res})
    assert error_codes(result) == ["BAD_USER_INPUT"], result
    nested = _input(claim("demo-patient-1"), contained=[{"resourceType": "Patient", "id": "p", "name": [{key: "x"}]}])
    assert error_codes(
        await _gql(client, "mutation($res: ClaimInput!) { ClaimCreate(res: $res) { id } }", {"res": nested})
    ) == ["BAD_USER_INPUT"]
    # A `$` key at the top level is not even a field of the input type.
    top = {**_input(claim("demo-patient-1")), key: "x"}
    assert error_codes(
        await _gql(client, "mutation($res: ClaimInput!) { ClaimCreate(res: $res) { id } }", {"res": top})
    ) == ["BAD_USER_INPUT"]
    assert await _counts(demo_store) == before


async def test_a_1_mb_string(client: httpx.AsyncClient, demo_store: Store) -> None:
    before = await _counts(demo_store)
    big = "x" * (1 << 20)
    response = await client.post(
        "/graphql",
        content=json.dumps({"query": "query($v: [String!]) { ClaimList(status: $v) { id } }", "variables": {"v": big}}),
    )
    assert response.status_code == 413 and response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    # Just under the body limit: answered, not stored, no error beyond the client's.
    almost = "x" * 1_000_000
    assert (
        error_codes(await _gql(client, "query($v: [String!]) { OrganizationList(name: $v) { id } }", {"v": almost}))
        == []
    )
    res = _input(claim("demo-patient-1"), item=[{"sequence": 1, "productOrService": {"text": almost}}])
    result = await _gql(client, "mutation($res: ClaimInput!) { ClaimCreate(res: $res) { id } }", {"res": res})
    if result["data"]["ClaimCreate"] is None:
        assert await _counts(demo_store) == before
    else:  # under the validation's 1 MiB string limit: one claim, its history and its audit record
        after = await _counts(demo_store)
        assert (after["Claim"] - before["Claim"], after["audit"] - before["audit"]) == (1, 1)


async def test_a_decimal_with_1000_digits(client: httpx.AsyncClient, demo_store: Store) -> None:
    before = await _counts(demo_store)
    mutation = "mutation($res: ClaimInput!) { ClaimCreate(res: $res) { id } }"
    for digits in ("9" * 1000, "0." + "1" * 1000, "1" * 500 + "." + "1" * 500):
        as_string = _input(claim("demo-patient-1"), total={"value": digits, "currency": "USD"})
        assert error_codes(await _gql(client, mutation, {"res": as_string})) == ["BAD_USER_INPUT"]
        body = json.dumps({"query": mutation, "variables": {"res": as_string}}).replace(
            f'"{digits}"', digits
        )  # a bare JSON number
        result = await _send(client, body)
        assert result is not None and error_codes(result) == ["BAD_USER_INPUT"]
        literal = (
            f'{{ ClaimList(_count: 1) {{ total {{ value }} }} PaymentReconciliationList(amount: "{digits}") {{ id }} }}'
        )
        assert set(error_codes(await _gql(client, literal))) <= {"BAD_USER_INPUT"}
    assert await _counts(demo_store) == before


async def test_input_nested_200_levels(client: httpx.AsyncClient, demo_store: Store) -> None:
    before = await _counts(demo_store)
    extension: dict[str, Any] = {"url": "http://x", "valueString": "deep"}
    for _ in range(200):
        extension = {"url": "http://x", "extension": [extension]}
    res = _input(claim("demo-patient-1"), extension=[extension])
    assert (
        error_codes(await _gql(client, "mutation($res: ClaimInput!) { ClaimCreate(res: $res) { id } }", {"res": res}))
        != []
    )
    contained: Any = "x"
    for _ in range(200):
        contained = {"a": [contained]}
    res = _input(claim("demo-patient-1"), contained=[{"resourceType": "Patient", "id": "p", "deep": contained}])
    assert (
        error_codes(await _gql(client, "mutation($res: ClaimInput!) { ClaimCreate(res: $res) { id } }", {"res": res}))
        != []
    )
    deep = "{ ClaimList { " + "identifier { assigner { " * 100 + "display" + " } }" * 100 + " } }"
    assert error_codes(await _gql(client, deep)) == ["BAD_USER_INPUT"]  # graphql-core's parser stops first
    deep = "{ ClaimList { " + "identifier { assigner { " * 25 + "display" + " } }" * 25 + " } }"
    assert error_codes(await _gql(client, deep)) == ["QUERY_TOO_COMPLEX"]
    arrays = json.dumps({"query": "{ ClaimList { id } }", "variables": {"v": json.loads("[" * 200 + "]" * 200)}})
    await _send(client, arrays)
    assert await _counts(demo_store) == before


async def test_invalid_utf8(client: httpx.AsyncClient) -> None:
    for body in (
        b'{"query": "{ ClaimList(status: \\"\xff\xfe\\") { id } }"}',
        b"\xc3\x28",
        b'{"query": "\xed\xa0\x80"}',
    ):
        response = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert "Traceback" not in response.text
    # A lone surrogate escaped in otherwise valid JSON is not Unicode text either.
    body = json.dumps({"query": "query($v: [String!]) { ClaimList(status: $v) { id } }", "variables": {"v": "\ud800"}})
    assert (
        await client.post("/graphql", content=body, headers={"content-type": "application/json"})
    ).status_code == 400


def _input(resource: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A resource as JSON mutation input: decimals as strings, no resourceType."""
    data = {k: v for k, v in {**resource, **changes}.items() if k != "resourceType"}
    return json.loads(json.dumps(data, default=str))  # type: ignore[no-any-return]


# -- the hostile run against `fingate serve`, by name -------------------------------------------------------

_HUGE = "1" * 4301  # one digit past Python's int-string limit


@pytest.mark.parametrize(
    "where",
    [
        '{"query": "{ ClaimList { id } }", "n": %s}',
        '{"query": "query($n: Int) { ClaimList(_count: $n) { id } }", "variables": {"n": %s}}',
        '{"query": "{ ClaimList { id } }", "extensions": {"n": %s}}',
    ],
    ids=["body", "variables", "extensions"],
)
async def test_an_integer_of_4301_digits_is_a_json_400(client: httpx.AsyncClient, where: str) -> None:
    response = await client.post("/graphql", content=where % _HUGE, headers={"content-type": "application/json"})
    assert (response.status_code, response.headers["content-type"]) == (400, "application/json"), response.text
    assert error_codes(response.json()) == ["BAD_USER_INPUT"] and "4,300 digits" in response.text
    response = await client.get("/graphql", params={"query": "{ __typename }", "variables": '{"n": ' + _HUGE + "}"})
    assert response.status_code == 400 and error_codes(response.json()) == ["BAD_USER_INPUT"]


async def test_a_cursor_nested_past_the_recursion_limit_is_bad_input(client: httpx.AsyncClient) -> None:
    import base64

    for payload in (b"[" * 5000, b"[" * 900 + b"]" * 900, b"{" * 3000):
        cursor = base64.urlsafe_b64encode(payload).decode()
        result = await _gql(client, f'{{ ClaimConnection(_cursor: "{cursor}") {{ count }} }}')
        assert error_codes(result) == ["BAD_USER_INPUT"], result


async def test_count_zero_is_no_rows_not_no_limit(client: httpx.AsyncClient) -> None:
    result = await _gql(
        client,
        "{ ClaimList(_count: 0) { id } AuditLog(_count: 0) { id } ClaimConnection(_count: 0) { count edges { resource { id } } }"
        " OrganizationList(_count: 5) { ClaimList(_reference: insurer, _count: 0) { id } } }",
    )
    data = result["data"]
    assert "errors" not in result, result
    assert data["ClaimList"] == [] and data["AuditLog"] == [] and data["ClaimConnection"]["edges"] == []
    assert data["ClaimConnection"]["count"] > 0  # the total is still there: FHIR's `_count=0` is "how many"
    assert all(org["ClaimList"] == [] for org in data["OrganizationList"])


@pytest.mark.parametrize("content_type", ["application/jsonp", "text/plain", "application/json-patch+json", ""])
async def test_the_content_type_is_parsed_not_searched(client: httpx.AsyncClient, content_type: str) -> None:
    body = b'{"query": "{ __typename }"}'
    response = await client.post("/graphql", content=body, headers={"content-type": content_type})
    assert response.status_code == 415 and error_codes(response.json()) == ["BAD_USER_INPUT"], response.text
    ok = await client.post("/graphql", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(("method", "path"), [("PUT", "/graphql"), ("DELETE", "/graphql"), ("GET", "/nowhere")])
async def test_every_refusal_is_json_with_a_code_and_request_id(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code in (404, 405) and response.headers["content-type"] == "application/json"
    (error,) = response.json()["errors"]
    assert error["extensions"]["requestId"] == response.headers["x-request-id"] and error["extensions"]["code"]
