"""Query limits (app/limits.py): enforced before execution as QUERY_TOO_COMPLEX; body size, timeout, introspection, CORS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from app.graphql.limits import _CHECKS, _Walker
from app.settings import Settings
from app.store import Store
from tests.harness import client_for, error_codes, gql
from tests.live import WAIT


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store) as c:
        yield c


def nested(depth: int) -> str:
    """A query `depth` fields deep, through the Identifier.assigner -> Reference -> Identifier cycle (no fetches)."""
    chain = (["identifier", "assigner"] * depth)[: depth - 2]
    inner = {"identifier": "value", "assigner": "display"}[chain[-1]] if chain else "id"
    for name in reversed(chain):
        inner = f"{name} {{ {inner} }}"
    return f"{{ ClaimList {{ {inner} }} }}"


def _depth(query: str) -> int:
    depth = best = 0
    for ch in query:
        depth += ch == "{"
        depth -= ch == "}"
        best = max(best, depth)
    return best  # the operation's braces hold the first field; a leaf adds a level without braces


# (case, query, variables, expected error codes)
CASES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    ("depth 12 is fine", nested(12), {}, []),
    ("depth 14 is too deep", nested(14), {}, ["QUERY_TOO_COMPLEX"]),
    ("30 aliases are fine", "{ " + " ".join(f"a{i}: ClaimList(_count: 1) {{ id }}" for i in range(30)) + " }", {}, []),
    (
        "31 aliases are too many",
        "{ " + " ".join(f"a{i}: ClaimList(_count: 1) {{ id }}" for i in range(31)) + " }",
        {},
        ["QUERY_TOO_COMPLEX"],
    ),
    ("too many tokens", "{ ClaimList { " + "id " * 5_001 + "} }", {}, ["QUERY_TOO_COMPLEX"]),
    (
        "a list in a list under the cost limit",
        "{ ClaimList(_count: 100) { PaymentReconciliationList(_reference: allocation_target, _count: 100) { id } } }",
        {},
        [],
    ),
    (
        "a list in a list over the cost limit",
        "{ ClaimList(_count: 1000) { PaymentReconciliationList(_reference: allocation_target, _count: 100) { id } } }",
        {},
        ["QUERY_TOO_COMPLEX"],
    ),
    (
        "_count from variables",
        "query($n: Int) { ClaimList(_count: $n) { PaymentReconciliationList(_reference: allocation_target, _count: $n) { id } } }",
        {"n": 1000},
        ["QUERY_TOO_COMPLEX"],
    ),
    (
        "_count from a variable's default",
        "query($n: Int = 500) { ClaimList(_count: $n) { PaymentReconciliationList(_reference: allocation_target, _count: $n) { id } } }",
        {},
        ["QUERY_TOO_COMPLEX"],
    ),
    (
        "a reference level multiplies",
        "{ ClaimList(_count: 1000) { patient { resource { ... on Patient { ClaimList(_reference: patient, _count: 60) { id } } } } } }",
        {},
        ["QUERY_TOO_COMPLEX"],
    ),
    (
        "lists without _count cost 20 each",
        "{ ClaimList { patient { resource { ... on Patient { ClaimList(_reference: patient) { "
        "patient { resource { ... on Patient { ClaimList(_reference: patient) { id } } } } } } } } } }",
        {},
        [],
    ),
    (
        "through a fragment",
        "query { ClaimList(_count: 1000) { ...Deep } } fragment Deep on Claim { PaymentReconciliationList(_reference: allocation_target, _count: 100) { id } }",
        {},
        ["QUERY_TOO_COMPLEX"],
    ),
    ("_count over 1000", "{ ClaimList(_count: 1001) { id } }", {}, ["BAD_USER_INPUT"]),
    (
        "_count 0 costs one count and nothing nested, not what is nested once",
        "{ ClaimList(_count: 0) { PaymentReconciliationList(_reference: allocation_target, _count: 1000) { "
        "paymentIssuer { resource { ... on Organization { ClaimList(_reference: insurer, _count: 1000) { id } } } } } } }",
        {},
        [],
    ),
]


@pytest.mark.parametrize(("case", "query", "variables", "codes"), CASES, ids=[c[0] for c in CASES])
async def test_limits(
    client: httpx.AsyncClient, store: Store, case: str, query: str, variables: dict[str, Any], codes: list[str]
) -> None:
    before = store.commands.count
    result = await gql(client, query, variables)
    assert error_codes(result) == codes, result
    if codes == ["QUERY_TOO_COMPLEX"]:
        assert result["data"] is None
        assert store.commands.count == before  # refused before execution: not one database command
        assert "FINGATE_" in result["errors"][0]["message"]  # says which setting to change


async def test_a_query_that_passed_is_checked_again_with_other_counts(store: Store) -> None:
    """The verdicts are cached per query text, limits and `_count` variables: nothing else may reuse one."""
    query = (
        "query($n: Int, $m: Int) { ClaimList(_count: $n) "
        "{ PaymentReconciliationList(_reference: allocation_target, _count: $m) { id } } }"
    )
    async with client_for(store) as c:
        for _ in range(2):
            assert error_codes(await gql(c, query, {"n": 10, "m": 10})) == []
        assert error_codes(await gql(c, query, {"n": 1000, "m": 100})) == ["QUERY_TOO_COMPLEX"]
        assert error_codes(await gql(c, query, {"n": 10, "m": 10, "other": 1})) == []
    async with client_for(store, settings=Settings(max_cost=50)) as c:  # the same text under other limits
        assert error_codes(await gql(c, query, {"n": 10, "m": 10})) == ["QUERY_TOO_COMPLEX"]


def test_nested_builds_what_it_says() -> None:
    assert [_depth(nested(n)) for n in (12, 14)] == [12, 14]


async def test_fragment_reuse_is_measured_once(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Thirty fragments, each spreading the previous twice: 2^30 paths if walked naively. The walk is counted,
    not timed: each spread is one call (the second of each pair a memo hit), whatever the machine's speed."""
    fragments = ["fragment F0 on Identifier { value }"]
    fragments += [f"fragment F{i} on Identifier {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 31)]
    query = "{ ClaimList { identifier { ...F30 } } } " + " ".join(fragments)
    calls: list[int] = []
    measure = _Walker.measure

    def counted(self: _Walker, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return measure(self, *args, **kwargs)

    monkeypatch.setattr(_Walker, "measure", counted)
    monkeypatch.setattr(_CHECKS, "_by_text", {})  # measured here, not a verdict cached by an earlier run
    assert error_codes(await gql(client, query)) == []
    assert 0 < len(calls) <= 2 * 31 + 3  # the operation, ClaimList, identifier, then two per fragment


async def test_limits_are_settings(store: Store) -> None:
    async with client_for(store, settings=Settings(max_depth=3, max_aliases=1, max_cost=10, max_tokens=20)) as c:
        assert set(error_codes(await gql(c, nested(4)))) == {"QUERY_TOO_COMPLEX"}
        assert error_codes(await gql(c, "{ a: ClaimList(_count: 1) { id } b: ClaimList(_count: 1) { id } }")) == [
            "QUERY_TOO_COMPLEX"
        ]
        assert error_codes(await gql(c, "{ ClaimList(_count: 11) { id } }")) == ["QUERY_TOO_COMPLEX"]
        assert error_codes(await gql(c, "{ ClaimList(_count: 10) { id } }")) == []


async def test_a_body_over_1_mb_is_413(client: httpx.AsyncClient, store: Store) -> None:
    body = json.dumps({"query": "{ ClaimList { id } }", "variables": {"pad": "x" * (1 << 20)}})
    response = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b" " * 65_536

    async def streamed() -> AsyncIterator[bytes]:
        for chunk in chunks():
            yield chunk

    response = await client.post("/graphql", content=streamed(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "x-request-id" in response.headers


async def test_a_slow_request_times_out(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer comes at the timeout, from a read that never ends: only the timeout can have ended it, and the
    read is cancelled, not left running (no clock is read: a busy machine cannot make this pass or fail)."""
    never, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> list[Any]:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable: nothing sets `never`")

    monkeypatch.setattr(Store, "search", slow)
    async with client_for(store, settings=Settings(request_timeout=0.2)) as c:
        async with asyncio.timeout(WAIT):  # a bound on a hang (the bug this catches), not a measurement
            result = await gql(c, "{ ClaimList { id } }")
    assert cancelled.is_set()
    assert error_codes(result) == ["QUERY_TOO_COMPLEX"] and "FINGATE_REQUEST_TIMEOUT" in result["errors"][0]["message"]


async def test_introspection_can_be_turned_off(store: Store) -> None:
    query = "{ __schema { queryType { name } } }"
    async with client_for(store) as c:
        assert (await gql(c, query))["data"] == {"__schema": {"queryType": {"name": "Query"}}}
    async with client_for(store, settings=Settings(introspection=False)) as c:
        assert set(error_codes(await gql(c, query))) == {"FORBIDDEN"}
        assert set(error_codes(await gql(c, '{ __type(name: "Claim") { name } }'))) == {"FORBIDDEN"}
        assert (await gql(c, "{ __typename }"))["data"] == {"__typename": "Query"}


async def test_cors_is_closed_unless_configured(store: Store) -> None:
    preflight = {"origin": "https://billing.example", "access-control-request-method": "POST"}
    async with client_for(store) as c:
        response = await c.options("/graphql", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    async with client_for(store, settings=Settings(cors_origins=["https://billing.example"])) as c:
        response = await c.options("/graphql", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://billing.example"
        response = await c.options("/graphql", headers={**preflight, "origin": "https://evil.example"})
        assert response.headers.get("access-control-allow-origin") != "https://evil.example"
