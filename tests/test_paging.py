"""Connections: cursors that carry their search, the FHIR GraphQL Connection fields, reverse Connections, versioned references."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import FinGateError
from app.settings import Settings
from app.store import Store, search
from app.store.cursors import MAX_LENGTH, Signer
from app.writes import Writer
from tests.harness import client_for, error_codes

Both = tuple[httpx.AsyncClient, httpx.AsyncClient]
PAYER = 'insurer: "Organization/demo-payer"'
PAGE = "count offset pagesize first previous next last edges { mode score resource { ... on Claim { id insurer { reference } } } }"


@pytest.fixture(scope="module")
async def both(demo_store: Store) -> AsyncIterator[Both]:
    compiled = client_for(demo_store, settings=Settings(compiled=True))
    reference = client_for(demo_store, settings=Settings(compiled=False))
    async with compiled, reference:
        yield compiled, reference


async def run(both: Both, query: str) -> dict[str, Any]:
    """The answer of both execution paths, which must be the same bytes."""
    bodies = [(await c.post("/graphql", json={"query": query})).content for c in both]
    assert bodies[0] == bodies[1]
    return json.loads(bodies[0])  # type: ignore[no-any-return]


async def page(both: Both, args: str, field: str = "ClaimConnection") -> dict[str, Any]:
    result = await run(both, f"{{ {field}({args}) {{ {PAGE.replace('Claim', field[: -len('Connection')])} }} }}")
    assert "errors" not in result, result["errors"]
    return result["data"][field]  # type: ignore[no-any-return]


def ids(conn: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in conn["edges"]]


async def test_a_cursor_keeps_its_search(both: Both, demo_store: Store) -> None:
    """`next` followed with `_cursor` alone pages the insurer's claims, not every claim."""
    conn = await page(both, f"{PAYER}, _count: 6")
    assert conn["count"] == 20 < await demo_store.db["Claim"].count_documents({})
    seen = ids(conn)
    while conn["next"]:
        conn = await page(both, f'_cursor: "{conn["next"]}"')
        assert conn["count"] == 20 and conn["pagesize"] == 6
        assert {e["resource"]["insurer"]["reference"] for e in conn["edges"]} == {"Organization/demo-payer"}
        seen += ids(conn)
    assert len(seen) == len(set(seen)) == 20


@pytest.mark.parametrize(
    "other",
    ['insurer: "Organization/2"', f'{PAYER}, status: "active"', '_sort: "-created"', "_count: 5", 'created: "2026"'],
)
async def test_a_cursor_refuses_another_search(both: Both, other: str) -> None:
    cursor = (await page(both, f"{PAYER}, _count: 6"))["next"]
    result = await run(both, f'{{ ClaimConnection({other}, _cursor: "{cursor}") {{ count }} }}')
    assert error_codes(result) == ["BAD_USER_INPUT"]
    assert result["errors"][0]["extensions"]["operationOutcome"]["issue"][0]["expression"] == ["_cursor"]


async def test_a_cursor_may_repeat_its_search(both: Both) -> None:
    cursor = (await page(both, f"{PAYER}, _count: 6"))["next"]
    assert await page(both, f'{PAYER}, _count: 6, _cursor: "{cursor}"') == await page(both, f'_cursor: "{cursor}"')


async def test_a_cursor_pages_only_its_type(both: Both) -> None:
    cursor = (await page(both, f"{PAYER}, _count: 6"))["next"]
    result = await run(both, f'{{ ClaimResponseConnection(_cursor: "{cursor}") {{ count }} }}')
    assert error_codes(result) == ["BAD_USER_INPUT"]


async def test_tampered_cursors_are_refused(both: Both) -> None:
    cursor = (await page(both, f"{PAYER}, _count: 6"))["next"]
    payload, _, signature = cursor.rpartition(".")
    for bad in [f"{payload}.{signature[::-1]}", payload, "garbage!", "x" * (MAX_LENGTH + 1), f"{payload}x.{signature}"]:
        result = await run(both, f'{{ ClaimConnection(_cursor: "{bad}") {{ count }} }}')
        assert error_codes(result) == ["BAD_USER_INPUT"], bad
        assert "Traceback" not in str(result)


async def test_every_page_has_first_and_last_and_its_neighbours(both: Both) -> None:
    """`first` on page 1 was null, then the literal "first"; now every link is a cursor of the same search."""
    walk = [await page(both, f"{PAYER}, _count: 6")]
    while walk[-1]["next"]:
        walk.append(await page(both, f'_cursor: "{walk[-1]["next"]}"'))
    assert [(p["offset"], len(p["edges"]), p["previous"] is None) for p in walk] == [
        (0, 6, True),
        (6, 6, False),
        (12, 6, False),
        (18, 2, False),
    ]
    assert all(e["mode"] == "match" and e["score"] is None for p in walk for e in p["edges"])
    for p in walk:
        assert ids(await page(both, f'_cursor: "{p["first"]}"')) == ids(walk[0])
        last = await page(both, f'_cursor: "{p["last"]}"')
        assert (ids(last), last["offset"], last["next"]) == (ids(walk[-1]), 18, None)
    back = [walk[-1]]
    while back[-1]["previous"]:
        back.append(await page(both, f'_cursor: "{back[-1]["previous"]}"'))
    assert [ids(p) for p in back] == [ids(p) for p in reversed(walk)]
    assert [p["offset"] for p in back] == [18, 12, 6, 0]


async def test_an_empty_search_still_has_its_ends(both: Both) -> None:
    conn = await page(both, 'insurer: "Organization/nobody"')
    assert (conn["count"], conn["edges"], conn["previous"], conn["next"]) == (0, [], None, None)
    assert (await page(both, f'_cursor: "{conn["last"]}"'))["edges"] == []


async def test_cursors_belong_to_their_tenant_and_compartment(demo_store: Store) -> None:
    made = await demo_store.page("Claim", {"insurer": "Organization/demo-payer"}, 6, None, None)
    cursor = made["next"]
    assert (await demo_store.page("Claim", {}, None, cursor, None))["count"] == 20
    for view in [
        demo_store.for_tenant("acme"),
        demo_store.in_compartment("demo-patient-1", ["Claim"]),
    ]:
        with pytest.raises(FinGateError) as caught:
            await view.page("Claim", {}, None, cursor, None)
        assert caught.value.code == "BAD_USER_INPUT"


async def test_cursor_keys_rotate(store: Store, mongo_uri: str) -> None:
    """Without FINGATE_CURSOR_KEYS, a key made once and kept in the database; with them, the first signs and all verify."""
    cursor = (await store.page("Claim", {}, 1, None, None))["first"]
    other = Store(mongo_uri, store.db.name)  # another instance on the same database
    try:
        assert (await other.page("Claim", {}, None, cursor, None))["pagesize"] == 1
        other.use_cursor_keys(["new-key", "old-key"])
        old = Signer(["old-key"]).dumps(Signer(["x"]).loads(Signer(["x"]).dumps(_cursor_of(store))))
        assert (await other.page("Claim", {}, None, old, None))["pagesize"] == 1
        signed_new = (await other.page("Claim", {}, 1, None, None))["first"]
        assert Signer(["new-key"]).loads(signed_new).count == 1
        with pytest.raises(FinGateError):
            await other.page("Claim", {}, None, cursor, None)  # the database key is no longer configured
        other.use_cursor_keys(["new-key"])
        with pytest.raises(FinGateError):
            await other.page("Claim", {}, None, old, None)  # the old key has been retired
    finally:
        await other.close()


def _cursor_of(store: Store) -> Any:
    from app.store.cursors import Cursor

    return Cursor("Claim", {}, None, 1, store.tenant, None)


async def test_deep_pages_cost_the_same_commands(both: Both, demo_store: Store) -> None:
    conn = await page(both, "_count: 5")
    costs = []
    while conn["next"]:
        before = demo_store.commands.count
        conn = await page(both, f'_cursor: "{conn["next"]}"')
        costs.append(demo_store.commands.count - before)
    assert len(costs) > 5 and set(costs) == {4}  # each path: a count and a find


# -- reverse Connections and lists ------------------------------------------------------------------

REVERSE = "ClaimResponseConnection(_reference: request{args}) {{ count offset pagesize previous next edges {{ mode resource {{ id }} }} }}"


async def test_reverse_connections_are_one_command_per_level(both: Both, demo_store: Store) -> None:
    query = f"{{ ClaimList({PAYER}, _count: 20) {{ id {REVERSE.format(args=', _count: 1')} }} }}"
    # The store's first Connection reads (or makes) the cursor key once: done here, not left to whichever test
    # ran before this one, so only the query's own commands are counted, run alone or in any order.
    await page(both, "_count: 1")
    before = demo_store.commands.count
    claims = (await run(both, query))["data"]["ClaimList"]
    assert demo_store.commands.count - before == 4  # each path: the claims, then their responses' first pages
    answered = [c for c in claims if c["ClaimResponseConnection"]["count"]]
    assert answered and all(len(c["ClaimResponseConnection"]["edges"]) == 1 for c in answered)
    conn = answered[0]["ClaimResponseConnection"]
    assert (conn["offset"], conn["pagesize"], conn["previous"]) == (0, 1, None)


@pytest.fixture(scope="module")
async def paged_responses(demo_store: Store) -> str:
    """demo-claim-03 with two more ClaimResponses (three in all), made once for the module's tests that need them,
    whichever of them runs first (or alone)."""
    claim = "demo-claim-03"
    more = {
        "resourceType": "ClaimResponse", "status": "draft", "use": "claim", "outcome": "queued", "created": "2026-11-02",
        "type": {"coding": [{"code": "professional"}]}, "patient": {"reference": "Patient/demo-patient-1"},
        "insurer": {"reference": "Organization/demo-payer"}, "request": {"reference": f"Claim/{claim}"},
    }  # fmt: skip
    for n in range(2):
        await Writer(demo_store).create("ClaimResponse", {**more, "id": f"paged-response-{n}"}, keep_id=True)
    return claim


async def test_a_reverse_cursor_pages_its_parent_only(both: Both, paged_responses: str) -> None:
    claim = paged_responses
    first = (await run(both, f'{{ Claim(id: "{claim}") {{ {REVERSE.format(args=", _count: 2")} }} }}'))["data"]
    conn = first["Claim"]["ClaimResponseConnection"]
    assert conn["count"] == 3 and conn["next"]
    again = f'{{ Claim(id: "{claim}") {{ {REVERSE.format(args=", _cursor: " + json.dumps(conn["next"]))} }} }}'
    second = (await run(both, again))["data"]["Claim"]["ClaimResponseConnection"]
    assert (second["offset"], len(second["edges"]), second["next"]) == (2, 1, None)
    assert {e["resource"]["id"] for e in conn["edges"] + second["edges"]} >= {"paged-response-0", "paged-response-1"}
    root = await page(both, f'_cursor: "{conn["next"]}"', "ClaimResponseConnection")  # the root pages it alike
    assert ids(root) == [e["resource"]["id"] for e in second["edges"]]
    elsewhere = (
        f'{{ Claim(id: "demo-claim-04") {{ {REVERSE.format(args=", _cursor: " + json.dumps(conn["next"]))} }} }}'
    )
    assert error_codes(await run(both, elsewhere)) == ["BAD_USER_INPUT"]


async def test_reverse_lists_take_an_offset(both: Both, paged_responses: str) -> None:
    # Its own data (paged_responses), not what another test happened to write before it: it may run alone or first.
    query = '{{ Claim(id: "demo-claim-03") {{ ClaimResponseList(_reference: request, _sort: "_id"{args}) {{ id }} }} }}'
    whole = (await run(both, query.format(args="")))["data"]["Claim"]["ClaimResponseList"]
    assert len(whole) == 3
    skipped = (await run(both, query.format(args=", _offset: 1, _count: 1")))["data"]["Claim"]["ClaimResponseList"]
    assert skipped == whole[1:2]
    too_deep = await run(both, query.format(args=", _offset: 990, _count: 20"))
    assert error_codes(too_deep) == ["BAD_USER_INPUT"]


# -- versioned references -----------------------------------------------------------------------------

VERSIONED = (
    '{ AccountList(_id: "vref-account-1,vref-account-2", _sort: "_id") { id subject { reference resource { '
    "... on Patient { id meta { versionId } name { family } } } } } }"
)


async def test_a_versioned_reference_reads_that_version(both: Both, demo_store: Store) -> None:
    writer = Writer(demo_store)
    patient = {"resourceType": "Patient", "id": "vref-patient", "name": [{"family": "Before"}]}
    await writer.create("Patient", patient, keep_id=True)
    await writer.update("Patient", "vref-patient", {**patient, "name": [{"family": "After"}]}, "1")
    for n, reference in ((1, "Patient/vref-patient/_history/1"), (2, "Patient/vref-patient")):
        account = {"resourceType": "Account", "id": f"vref-account-{n}", "status": "active"}
        await writer.create("Account", {**account, "subject": [{"reference": reference}]}, keep_id=True)
    before = demo_store.commands.count
    accounts = (await run(both, VERSIONED))["data"]["AccountList"]
    assert demo_store.commands.count - before == 6  # each path: the accounts, then Patient and its history
    found = [
        (a["subject"][0]["resource"]["meta"]["versionId"], a["subject"][0]["resource"]["name"][0]["family"])
        for a in accounts
    ]
    assert found == [("1", "Before"), ("2", "After")]
    missing = '{ Account(id: "vref-account-1") { subject { resource { ... on Patient { id } } } } }'
    await demo_store.db["Patient_history"].delete_one({"_id": f"{demo_store.tenant}/vref-patient/_history/1"})
    assert (await run(both, missing))["data"]["Account"]["subject"][0]["resource"] is None
    assert error_codes(await run(both, '{ Patient(id: "vref-patient/_history/2") { id } }')) == ["NOT_FOUND"]


# -- the property: a walk by cursors is one unpaged query ------------------------------------------

PROPERTY_TENANT = "paging-property"
STATUSES = ["active", "cancelled", "draft", "entered-in-error"]
DAYS = [None, "2026-01-01", "2026-01-02", "2026-01-02T10:00:00Z", "2026-02"]
SEARCHES = [{}, {"status": "active"}, {"status": "active,draft"}, {"created": "ge2026-01-02"}]
SORTS = [None, "created", "-created", "status,-created", "-payment-status,created", "-_id", "-status,-_lastUpdated"]


def _notice(n: int, rnd: Any) -> dict[str, Any]:
    notice: dict[str, Any] = {
        "resourceType": "PaymentNotice",
        "id": f"pn-{n:04d}",
        "status": rnd.choice(STATUSES),
        "meta": {"versionId": "1", "lastUpdated": rnd.choice(["2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"])},
        "paymentStatus": {"coding": [{"code": rnd.choice(["paid", "cleared"])}]},
    }
    if (day := rnd.choice(DAYS)) is not None:
        notice["created"] = day
    return notice


async def _put(view: Store, resources: list[dict[str, Any]]) -> None:
    """As the store keeps them (hidden `_id`, tenant and search values), without the write path's cost."""
    await view.db["PaymentNotice"].insert_many(
        [
            {
                **r,
                "_id": f"{view.tenant}/{r['id']}",
                "_tenant": view.tenant,
                "_search": search.index_values("PaymentNotice", r),
            }
            for r in resources
        ]
    )


@pytest.fixture(scope="module")
async def notices(demo_store: Store) -> Store:
    view = demo_store.for_tenant(PROPERTY_TENANT)
    rnd = random.Random(7)
    await _put(view, [_notice(n, rnd) for n in range(300)])
    return view


async def _walk(view: Store, params: dict[str, str], size: int, sort: str | None, during: Any = None) -> list[str]:
    conn = await view.page("PaymentNotice", params, size, None, sort)
    walked = [e["resource"]["id"] for e in conn["edges"]]
    while conn["next"]:
        if during is not None:
            await during()
        conn = await view.page("PaymentNotice", {}, None, conn["next"], None)
        assert len(conn["edges"]) <= size
        walked += [e["resource"]["id"] for e in conn["edges"]]
    return walked


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    params=st.sampled_from(SEARCHES),
    sort=st.sampled_from(SORTS),
    size=st.integers(6, 60),
    inserts=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
async def test_walking_by_cursor_alone_is_one_unpaged_query(
    notices: Store, params: dict[str, str], sort: str | None, size: int, inserts: int, seed: int
) -> None:
    whole = [r["id"] for r in await notices.search("PaymentNotice", params, 1000, 0, sort)]
    assert await _walk(notices, params, size, sort) == whole
    conn = await notices.page("PaymentNotice", params, size, None, sort)
    conn = await notices.page("PaymentNotice", {}, None, conn["last"], None)
    back = [e["resource"]["id"] for e in conn["edges"]][::-1]
    while conn["previous"]:
        conn = await notices.page("PaymentNotice", {}, None, conn["previous"], None)
        back += [e["resource"]["id"] for e in conn["edges"]][::-1]
    assert back == whole[::-1]
    if not inserts:
        return
    rnd, made = random.Random(seed), []

    async def insert() -> None:
        new = [_notice(1000 + len(made) + i, rnd) | {"id": f"new-{seed}-{len(made) + i}"} for i in range(inserts)]
        made.extend(r["id"] for r in new)
        await _put(notices, new)

    try:
        walked = await _walk(notices, params, size, sort, during=insert)
        assert len(walked) == len(set(walked))  # nothing twice, whatever was inserted meanwhile
        assert [i for i in walked if i in set(whole)] == whole  # and every match, in order
    finally:
        await notices.db["PaymentNotice"].delete_many({"_tenant": notices.tenant, "id": {"$in": made}})


async def test_a_cursor_alone_costs_its_page_size(demo_store: Store) -> None:
    """The query limits charge a Connection given only `_cursor` the page size it carries, not the default 20."""
    deep = "ClaimConnection(_cursor: $c) { edges { resource { ... on Claim { patient { resource { ... on Patient { id } } } } } } }"
    for compiled in (True, False):
        async with client_for(demo_store, settings=Settings(compiled=compiled, max_cost=100)) as client:
            made = await client.post("/graphql", json={"query": "{ ClaimConnection(_count: 60) { first } }"})
            cursor = made.json()["data"]["ClaimConnection"]["first"]
            answer = await client.post(
                "/graphql", json={"query": f"query($c: String) {{ {deep} }}", "variables": {"c": cursor}}
            )
            assert error_codes(answer.json()) == ["QUERY_TOO_COMPLEX"]  # 60 claims + 60 patients
            literal = await client.post(
                "/graphql", json={"query": "{ " + deep.replace("$c", json.dumps(cursor)) + " }"}
            )
            assert error_codes(literal.json()) == ["QUERY_TOO_COMPLEX"]


async def test_a_search_too_long_for_a_cursor_is_refused(both: Both) -> None:
    noise = base64.b64encode(random.Random(1).randbytes(MAX_LENGTH)).decode()  # cursors are compressed: no repeats
    result = await run(both, f'{{ ClaimConnection(identifier: "{noise}") {{ count }} }}')
    assert error_codes(result) == ["BAD_USER_INPUT"]
    assert "too long to page by cursor" in result["errors"][0]["message"]
