"""GraphQL subscriptions over WebSocket (graphql-transport-ws) on a real uvicorn: events, resume, auth, limits."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from app.http import SocketContext, loads
from app.settings import Settings
from app.store import Store
from tests.live import WAIT, serving, socket
from tests.test_mutations import PATIENT, claim
from tests.tokens import SECRET, token

# Valid for the whole run however long it takes (tokens are made once, when the module is collected).
DAY = 24 * 3600
ACME = token(tenant="acme", lifetime=DAY)
OTHER = token(tenant="other", lifetime=DAY)
CHANGES = """subscription($after: String) {
  ClaimChanges(after: $after) {
    position interaction previousStatus status id versionId
    resource { id status patient { reference resource { ... on Patient { id name { family } } } } }
  }
}"""


@pytest.fixture
async def live(store: Store) -> AsyncIterator[str]:
    async with serving(store, Settings(jwt_secret=SECRET, max_subscriptions=3)) as address:
        yield address


async def gql(address: str, query: str, variables: dict[str, Any] | None = None, tok: str = ACME) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        response = await client.post(
            f"http://{address}/graphql",
            content=json.dumps({"query": query, "variables": variables or {}}, default=str),
            headers={"content-type": "application/json", "authorization": f"Bearer {tok}"},
        )
    body = loads(response.content)
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


async def position(address: str, tok: str = ACME) -> str:
    """Where the tenant's writes are now: subscribing `after:` it misses none that follow (no race with the
    subscription's own start)."""
    return (await gql(address, "{ ChangesPosition }", tok=tok))["ChangesPosition"]  # type: ignore[no-any-return]


async def create(address: str, rtype: str, resource: dict[str, Any], tok: str = ACME) -> str:
    query = f"mutation($res: {rtype}Input!) {{ {rtype}Create(res: $res) {{ id }} }}"
    return (await gql(address, query, {"res": resource}, tok))[f"{rtype}Create"]["id"]  # type: ignore[no-any-return]


async def update(address: str, rtype: str, id: str, resource: dict[str, Any], tok: str = ACME) -> None:
    query = f"mutation($id: ID!, $res: {rtype}Input!) {{ {rtype}Update(id: $id, res: $res) {{ id }} }}"
    await gql(address, query, {"id": id, "res": resource}, tok)


async def test_subscribe_write_receive_then_resume_with_exactly_the_missed_events(live: str) -> None:
    patient = await create(live, "Patient", PATIENT)
    async with socket(live, {"Authorization": f"Bearer {ACME}"}) as ws:
        await ws.subscribe("1", CHANGES, {"after": await position(live)})
        first = await create(live, "Claim", claim(patient))
        created = (await ws.next("1"))["data"]["ClaimChanges"]
        assert created["interaction"] == "create" and created["id"] == first
        assert (created["previousStatus"], created["status"], created["versionId"]) == (None, "draft", "1")
        # The resource is selected like any query: its reference resolves to the Patient.
        assert created["resource"]["patient"]["resource"] == {"id": patient, "name": [{"family": "Rivera"}]}
        await update(live, "Claim", first, claim(patient, status="active"))
        activated = (await ws.next("1"))["data"]["ClaimChanges"]
        assert (activated["previousStatus"], activated["status"], activated["resource"]["status"]) == (
            "draft",
            "active",
            "active",
        )
        held = activated["position"]
    # While disconnected: two Claim writes of this tenant, writes of another type and of another tenant.
    second = await create(live, "Claim", claim(patient))
    await create(live, "Patient", PATIENT)
    other_patient = await create(live, "Patient", PATIENT, OTHER)
    await create(live, "Claim", claim(other_patient), OTHER)
    await update(live, "Claim", second, claim(patient, status="active"))
    async with socket(live, {"token": ACME}) as ws:
        await ws.subscribe("r", CHANGES, {"after": held})
        missed = [(await ws.next("r"))["data"]["ClaimChanges"] for _ in range(2)]
        assert [(e["id"], e["interaction"], e["status"]) for e in missed] == [
            (second, "create", "draft"),
            (second, "update", "active"),
        ]
        assert int(missed[0]["position"]) > int(held) and int(missed[1]["position"]) > int(missed[0]["position"])
        # Then live: the next event is the next write, nothing missed or repeated in between.
        third = await create(live, "Claim", claim(patient))
        assert (await ws.next("r"))["data"]["ClaimChanges"]["id"] == third


async def test_another_tenant_and_other_types_never_arrive(live: str) -> None:
    patient = await create(live, "Patient", PATIENT)
    other_patient = await create(live, "Patient", PATIENT, OTHER)
    async with socket(live, {"Authorization": f"Bearer {ACME}"}) as ws:
        await ws.subscribe("1", f'subscription {{ ClaimChanges(after: "{await position(live)}") {{ id }} }}')
        await create(live, "Claim", claim(other_patient), OTHER)
        await create(live, "Patient", PATIENT)
        mine = await create(live, "Claim", claim(patient))  # the sentinel: the first event to arrive must be it
        assert (await ws.next("1"))["data"]["ClaimChanges"] == {"id": mine}


async def test_named_feeds_and_search_arguments(live: str) -> None:
    patient = await create(live, "Patient", PATIENT)
    other = await create(live, "Patient", PATIENT)
    draft = await create(live, "Claim", claim(patient))
    at = await position(live)
    async with socket(live, {"token": ACME}) as ws:
        await ws.subscribe(
            "active", f'subscription {{ ClaimChanged(status: "active", after: "{at}") {{ id status }} }}'
        )
        await ws.subscribe("one", f'subscription {{ ClaimChanged(id: "{draft}", after: "{at}") {{ id interaction }} }}')
        await ws.subscribe(
            "search", f'subscription {{ ClaimChanges(patient: "Patient/{other}", after: "{at}") {{ id }} }}'
        )
        mine = await create(live, "Claim", claim(other))
        assert (await ws.next("search"))["data"]["ClaimChanges"] == {"id": mine}
        await update(live, "Claim", draft, claim(patient, status="active"))
        got = {}
        for _ in range(2):
            message = await ws.receive()
            got[message["id"]] = message["payload"]["data"]["ClaimChanged"]
        assert got == {"active": {"id": draft, "status": "active"}, "one": {"id": draft, "interaction": "update"}}


async def test_payments_created_by_issuer(live: str) -> None:
    query = 'subscription($after: String) { PaymentReconciliationCreated(payment_issuer: "Organization/payer-1", after: $after) { id interaction } }'
    payment = {
        "resourceType": "PaymentReconciliation",
        "status": "draft",
        "type": {"coding": [{"code": "payment"}]},
        "created": "2026-11-02",
        "date": "2026-11-02",
        "amount": {"value": "10.00", "currency": "USD"},
    }
    async with socket(live, {"token": ACME}) as ws:
        await ws.subscribe("1", query, {"after": await position(live)})
        await create(live, "PaymentReconciliation", {**payment, "paymentIssuer": {"reference": "Organization/x"}})
        mine = await create(
            live, "PaymentReconciliation", {**payment, "paymentIssuer": {"reference": "Organization/payer-1"}}
        )
        assert (await ws.next("1"))["data"]["PaymentReconciliationCreated"] == {"id": mine, "interaction": "create"}


@pytest.mark.parametrize(
    "payload",
    [{}, {"Authorization": "Bearer not.a.jwt"}, {"token": token(key="another-secret-" + "x" * 40, lifetime=DAY)}],
    ids=["no token", "garbage", "wrong key"],
)
async def test_no_valid_token_no_connection(live: str, payload: dict[str, Any]) -> None:
    async with socket(live, payload, ack=False) as ws:
        close = await ws.closed()
        assert close is not None and close.code == 4403


async def test_subscribe_before_init_is_refused(live: str) -> None:
    async with socket(live, None) as ws:
        await ws.subscribe("1", "subscription { ClaimChanges { id } }")
        close = await ws.closed()
        assert close is not None and close.code == 4401


async def test_an_expiring_token_closes_the_socket(live: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The token is valid for a minute, whatever the machine's speed; the server's clock (what its watchdog
    # counts down from) is moved to a second before the end, so the socket closes a second after it opens.
    expiring = token(lifetime=60)
    ends = time.time() + 60
    monkeypatch.setattr(SocketContext, "clock", staticmethod(lambda: ends - 2))
    async with socket(live, {"token": expiring}) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):  # a slow client may find it closed already
            await ws.subscribe("1", "subscription { ClaimChanges { id } }")
        close = await ws.closed()
        assert close is not None and close.code == 4401 and "expired" in close.reason


async def test_scopes_compartments_limits_and_the_subscription_bound(live: str) -> None:
    mine = await create(live, "Patient", PATIENT)
    theirs = await create(live, "Patient", PATIENT)
    async with socket(live, {"token": token(scope="user/Patient.rs")}) as ws:
        await ws.subscribe("1", "subscription { ClaimChanges { id } }")
        refused = await ws.receive()
        assert refused["type"] in ("next", "error"), refused
        errors = refused["payload"]["errors"] if refused["type"] == "next" else refused["payload"]
        assert errors[0]["extensions"]["code"] == "FORBIDDEN"
    patient_token = token(scope="patient/Claim.rs", patient=mine)
    async with socket(live, {"token": patient_token}) as ws:
        await ws.subscribe(
            "1", f'subscription {{ ClaimChanges(after: "{await position(live)}") {{ id resource {{ id }} }} }}'
        )
        await create(live, "Claim", claim(theirs))
        own = await create(live, "Claim", claim(mine))
        assert (await ws.next("1"))["data"]["ClaimChanges"] == {"id": own, "resource": {"id": own}}
    chain = "partOf { resource { ... on Organization { " * 8 + "id" + " } } }" * 8
    deep = (
        "subscription { ClaimChanges { resource { insurer { resource { ... on Organization { " + chain + " } } } } } }"
    )
    async with socket(live, {"token": ACME}) as ws:
        await ws.subscribe("deep", deep)
        refused = await ws.receive()
        assert refused["type"] == "error" and refused["payload"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        for n in range(3):
            await ws.subscribe(str(n), "subscription { ClaimChanges { id } }")
        await ws.subscribe("4th", "subscription { ClaimChanges { id } }")
        over = await ws.receive()
        assert over["type"] == "error" and over["id"] == "4th" and "limit" in over["payload"][0]["message"]


async def test_bad_input_and_other_operations_are_refused_with_a_code(live: str) -> None:
    async with socket(live, {"token": ACME}) as ws:
        for n, query in enumerate(
            [
                'subscription { ClaimChanges(after: "x") { id } }',
                "subscription { ClaimChanges { nope } }",
                'subscription { ClaimChanges(_filter: "status eq") { id } }',
                "{ ClaimList { id } }",  # queries and mutations take HTTP
            ]
        ):
            await ws.subscribe(str(n), query)
            refused = await ws.receive()
            errors = refused["payload"]["errors"] if refused["type"] == "next" else refused["payload"]
            assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT", (query, refused)
            if refused["type"] == "next":  # an error while subscribing ends the operation
                assert await ws.receive() == {"id": str(n), "type": "complete"}


README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
_LIVE_AT = README.index("## Live updates")
LIVE = README[_LIVE_AT : README.index("\n## ", _LIVE_AT + 1)]  # the section, to the next one
QUERIES = Path(__file__).resolve().parents[1] / "app" / "queries"


def _blocks(text: str) -> list[str]:
    return re.findall(r"```graphql\n(.*?)```", text, re.S)


def test_the_readme_live_updates_examples_are_valid_operations() -> None:
    from graphql import parse, validate

    from app.graphql.compat import graphql_schema
    from tests.harness import schema

    blocks = _blocks(LIVE)
    assert len(blocks) == 4
    for block in blocks:
        assert validate(graphql_schema(schema()), parse(block)) == [], block


async def test_the_readme_subscription_on_the_demo_data(demo_store: Store) -> None:
    """The README's GraphiQL walk-through: subscribe, run DraftClaim then ActivateClaim, see both writes."""
    async with serving(demo_store, Settings()) as address, socket(address, {}) as ws:  # no auth on loopback
        async with httpx.AsyncClient(timeout=WAIT) as client:
            now = (await client.post(f"http://{address}/graphql", json={"query": "{ ChangesPosition }"})).json()
        # As in GraphiQL, plus where to start: the test's writes may reach the server before its subscription.
        block = _blocks(LIVE)[0].replace(
            '(patient: "Patient/demo-patient-1")',
            f'(patient: "Patient/demo-patient-1", after: "{now["data"]["ChangesPosition"]}")',
        )
        await ws.subscribe("readme", block)

        async def run(name: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
            async with httpx.AsyncClient(timeout=WAIT) as client:
                body = {"query": (QUERIES / name).read_text(), "variables": variables or {}}
                response = await client.post(f"http://{address}/graphql", json=body)
            return loads(response.content)["data"]  # type: ignore[no-any-return]

        draft = (await run("05-draft-claim.graphql"))["ClaimCreate"]["id"]
        await run("06-activate-claim.graphql", {"id": draft})
        events = [(await ws.next("readme"))["data"]["ClaimChanges"] for _ in range(2)]
    assert [(e["interaction"], e["previousStatus"], e["status"]) for e in events] == [
        ("create", None, "draft"),
        ("update", "draft", "active"),
    ]
    assert events[1]["resource"]["id"] == draft
    assert events[1]["resource"]["insurer"]["resource"] == {"name": "Acme Health Insurance"}
    assert events[1]["resource"]["total"] == {"value": "125.00", "currency": "USD"}


def test_the_explorer_runs_subscriptions_over_the_socket() -> None:
    from app.explorer import explorer_page

    page = explorer_page()
    assert "subscriptionUrl: socketUrl" in page and 'location.protocol === "https:" ? "wss://" : "ws://"' in page


async def test_a_page_on_another_origin_cannot_open_a_socket(live: str) -> None:
    import websockets

    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(
            f"ws://{live}/graphql", subprotocols=["graphql-transport-ws"], origin="https://evil.example"
        ):
            pass


async def test_a_subscription_over_http_is_refused_with_a_pointer_to_the_socket(live: str) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        headers = {"authorization": f"Bearer {ACME}"}
        posted = await client.post(
            f"http://{live}/graphql", json={"query": "subscription { ClaimChanges { id } }"}, headers=headers
        )
        got = await client.get(
            f"http://{live}/graphql", params={"query": "subscription { ClaimChanges { id } }"}, headers=headers
        )
    for response in (posted, got):
        assert response.status_code == 400 and response.headers["content-type"] == "application/json"
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT" and "WebSocket" in error["message"]


async def test_a_delete_arrives_with_the_version_removed(live: str) -> None:
    patient = await create(live, "Patient", PATIENT)
    draft = await create(live, "Claim", claim(patient))
    at = await position(live)
    async with socket(live, {"token": ACME}) as ws:
        await ws.subscribe(
            "1",
            f'subscription {{ ClaimChanges(after: "{at}") {{ interaction previousStatus status resource {{ id status }} }} }}',
        )
        await gql(live, f'mutation {{ ClaimDelete(id: "{draft}") {{ id }} }}')
        event = (await ws.next("1"))["data"]["ClaimChanges"]
    assert event == {
        "interaction": "delete",
        "previousStatus": "draft",
        "status": None,
        "resource": {"id": draft, "status": "draft"},
    }


async def test_the_change_position_needs_a_read_scope(live: str) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        response = await client.post(
            f"http://{live}/graphql",
            json={"query": "{ ChangesPosition }"},
            headers={"authorization": f"Bearer {token(scope='user/Claim.c')}"},
        )
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["FORBIDDEN"]
