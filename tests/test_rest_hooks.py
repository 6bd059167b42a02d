"""FHIR R5 rest-hook Subscriptions (app/hooks, app/outbound): signed notifications to a loopback receiver,
retries with backoff, dead letters, two dispatchers, the SSRF guard and `$status` through GraphQL."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trustme
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import outbound
from app.hooks.dispatcher import Dispatcher, Retry
from app.hooks.notification import body, subscription_secret
from app.hooks.topics import TOPICS, ensure_topics
from app.settings import Settings
from app.store import Store
from app.writes import Writer
from tests.harness import client_for, gql, ok
from tests.live import WAIT, serving, serving_app
from tests.test_mutations import PATIENT, claim

SECRET = "whsec_" + base64.b64encode(b"fingate-test-webhook-secret-0123").decode()
LOOPBACK = outbound.Policy(allow_loopback=True)
ROOT = str(Path(__file__).resolve().parents[1])  # this checkout's `app`, for `fingate dispatch` in a subprocess
ACTIVATED = TOPICS["http://fingate.dev/fhir/SubscriptionTopic/claim-activated"]


def verified(data: bytes, headers: dict[str, str], tenant: str = "default") -> Any:
    """The notification's payload, its signature checked with its Subscription's own secret (raises when bad)."""
    status = json.loads(data)["entry"][0]["resource"]
    own = subscription_secret(SECRET, tenant, status["subscription"]["reference"].removeprefix("Subscription/"))
    return Webhook(own).verify(data, headers)


class Receiver:
    """A webhook endpoint that verifies every signature with the library's verifier; fails its first `fail` calls."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.calls = 0
        self.verified: list[tuple[str, dict[str, Any]]] = []  # (webhook-id, the Bundle) of accepted calls
        self.changed = asyncio.Event()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        data = await request.body()
        payload = verified(data, dict(request.headers))
        self.calls += 1
        self.changed.set()
        if self.calls <= self.fail:
            return Response(status_code=500)
        self.verified.append((request.headers["webhook-id"], json.loads(data, parse_float=Decimal)))
        assert payload["type"] == "subscription-notification"
        return Response(status_code=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    async with serving_app(r.app) as address:
        yield r, f"http://{address}/hook"


def subscription(endpoint: str, topic: str = ACTIVATED.url, content: str = "full-resource") -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "active",
        "topic": topic,
        "channelType": {
            "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type",
            "code": "rest-hook",
        },
        "endpoint": endpoint,
        "content": content,
    }


class Sleeper:
    """The dispatcher's sleep, recorded instead of waited (no test waits on the clock)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def dispatcher(store: Store, sleeper: Sleeper | None = None, **retry: Any) -> Dispatcher:
    return Dispatcher(
        store, SECRET, LOOPBACK, Retry(**retry), lease_seconds=600, sleep=sleeper or Sleeper(), draw=lambda: 0.5
    )


async def until(condition: Any, *dispatchers: Dispatcher) -> None:
    """Run dispatch rounds until `condition()` holds (bounded generously, never asserted on time)."""
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.gather(*(d.run_once() for d in dispatchers))


async def _activate_claims(writer: Writer, n: int) -> list[str]:
    patient = await writer.create("Patient", dict(PATIENT))
    ids = []
    for _ in range(n):
        draft = await writer.create("Claim", claim(patient["id"]))  # a create of a draft: not this topic's
        await writer.update("Claim", draft["id"], claim(patient["id"], status="active"))
        ids.append(draft["id"])
    return ids


async def test_notifications_are_signed_bundles_in_order_with_the_resource(
    store: Store, receiver: tuple[Receiver, str]
) -> None:
    r, endpoint = receiver
    writer = Writer(store)
    sub = await writer.create("Subscription", subscription(endpoint))
    ids = await _activate_claims(writer, 2)
    d = dispatcher(store)
    await until(lambda: len(r.verified) == 2, d)
    bundles = [b for _, b in r.verified]
    assert [b["type"] for b in bundles] == ["subscription-notification"] * 2
    statuses = [b["entry"][0]["resource"] for b in bundles]
    assert [s["eventsSinceSubscriptionStart"] for s in statuses] == ["1", "2"]
    assert all(s["subscription"] == {"reference": f"Subscription/{sub['id']}"} for s in statuses)
    focus = [s["notificationEvent"][0]["focus"]["reference"] for s in statuses]
    assert focus == [f"Claim/{ids[0]}/_history/2", f"Claim/{ids[1]}/_history/2"]
    claim_entry = bundles[0]["entry"][1]["resource"]
    assert claim_entry["status"] == "active" and claim_entry["total"]["value"] == Decimal("100.10")
    assert await d.run_once() == 0  # nothing new: nothing sent again
    assert r.calls == 2


async def test_a_receiver_failing_three_times_gets_each_notification_once(store: Store) -> None:
    r = Receiver(fail=3)
    async with serving_app(r.app) as address:
        writer = Writer(store)
        sub = await writer.create("Subscription", subscription(f"http://{address}/hook", content="id-only"))
        await _activate_claims(writer, 2)
        sleeper = Sleeper()
        d = dispatcher(store, sleeper, attempts=5, base=1.0, most=60.0)
        await until(lambda: len(r.verified) == 2, d)
    assert r.calls == 5 and len({id for id, _ in r.verified}) == 2  # each once, after 3 failures of the first
    assert sleeper.delays == [0.75, 1.5, 3.0]  # exponential, with the jitter's draw in the upper half
    assert "resource" not in r.verified[0][1]["entry"][1]  # id-only
    async with client_for(store) as client:
        status = ok(
            await gql(
                client,
                f'{{ SubscriptionStatus(id: "{sub["id"]}") {{ state eventsSinceSubscriptionStart lastError }} }}',
            )
        )
        assert status["SubscriptionStatus"] == {"state": "active", "eventsSinceSubscriptionStart": 2, "lastError": None}
        attempts = ok(
            await gql(
                client,
                f'{{ SubscriptionDeliveries(id: "{sub["id"]}") {{ attempt outcome status eventNumber webhookId }} }}',
            )
        )
    rows = list(reversed(attempts["SubscriptionDeliveries"]))  # oldest first
    assert [(a["eventNumber"], a["attempt"], a["outcome"], a["status"]) for a in rows] == [
        (1, 1, "failed", 500), (1, 2, "failed", 500), (1, 3, "failed", 500), (1, 4, "delivered", 204), (2, 1, "delivered", 204),
    ]  # fmt: skip
    assert len({a["webhookId"] for a in rows[:4]}) == 1  # a retry carries the same id
    async with client_for(store) as client:
        query = f'{{ first: SubscriptionDeliveries(id: "{sub["id"]}", _count: 2) {{ attempt }}'
        query += f' none: SubscriptionDeliveries(id: "{sub["id"]}", _count: 0) {{ attempt }} }}'
        cut = await gql(client, query)
    assert len(ok(cut)["first"]) == 2 and ok(cut)["none"] == []  # a list stopping early says so
    assert cut["extensions"]["truncated"] == [
        {"path": ["first"], "returned": 2, "more": True},
        {"path": ["none"], "returned": 0, "total": 5},
    ]


async def test_dead_letter_after_the_configured_failures_and_delivery_stops(store: Store) -> None:
    r = Receiver(fail=1000)
    async with serving_app(r.app) as address:
        writer = Writer(store)
        sub = await writer.create("Subscription", subscription(f"http://{address}/hook"))
        await _activate_claims(writer, 2)
        d = dispatcher(store, attempts=3)
        await d.run_once()
        assert await d.run_once() == 0
    assert r.calls == 3  # three attempts at the first notification; the second waits behind it (order)
    async with client_for(store) as client:
        status = ok(
            await gql(
                client,
                f'{{ SubscriptionStatus(id: "{sub["id"]}") {{ state lastError eventsSinceSubscriptionStart }} '
                f'Subscription(id: "{sub["id"]}") {{ status meta {{ versionId }} }} }}',
            )
        )
    assert status["SubscriptionStatus"] == {
        "state": "dead-letter",
        "lastError": "HTTP 500",
        "eventsSinceSubscriptionStart": 0,
    }
    # R5: the server could not notify, so the Subscription's status is `error` (a version the dispatcher wrote).
    assert status["Subscription"] == {"status": "error", "meta": {"versionId": "2"}}
    assert await d.run_once() == 0  # an `error` Subscription is not served
    # Fixing the Subscription (a new version: its endpoint, `status` active) resumes delivery where it died.
    good = Receiver()
    async with serving_app(good.app) as address:
        fixed = {**subscription(f"http://{address}/hook")}
        await Writer(store).update("Subscription", sub["id"], fixed)
        await until(lambda: len(good.verified) == 2, d)
    numbers = [b["entry"][0]["resource"]["eventsSinceSubscriptionStart"] for _, b in good.verified]
    assert numbers == ["1", "2"]


async def test_a_requested_subscription_is_activated_by_a_handshake(
    store: Store, receiver: tuple[Receiver, str]
) -> None:
    """R5: a `requested` rest-hook gets a handshake; accepted, the dispatcher writes it `active` and delivers the
    events since it was created, numbered from 1."""
    r, endpoint = receiver
    writer = Writer(store)
    sub = await writer.create("Subscription", {**subscription(endpoint), "status": "requested"})
    await _activate_claims(writer, 1)
    await until(lambda: len(r.verified) == 2, dispatcher(store))
    kinds = [(b["entry"][0]["resource"]["type"], b["entry"][0]["resource"]["status"]) for _, b in r.verified]
    assert kinds == [("handshake", "requested"), ("event-notification", "active")]
    assert r.verified[0][0] == f"{sub['id']}-handshake-1" and len(r.verified[0][1]["entry"]) == 1
    assert r.verified[1][1]["entry"][0]["resource"]["eventsSinceSubscriptionStart"] == "1"
    async with client_for(store) as client:
        found = ok(
            await gql(
                client,
                f'{{ Subscription(id: "{sub["id"]}") {{ status meta {{ versionId }} }} '
                f'SubscriptionDeliveries(id: "{sub["id"]}") {{ type attempt outcome }} }}',
            )
        )
    assert found["Subscription"] == {"status": "active", "meta": {"versionId": "2"}}
    assert [(a["type"], a["outcome"]) for a in reversed(found["SubscriptionDeliveries"])] == [
        ("handshake", "delivered"),
        ("event-notification", "delivered"),
    ]


async def test_a_refused_handshake_leaves_the_subscription_in_error(store: Store) -> None:
    r = Receiver(fail=1000)
    async with serving_app(r.app) as address:
        writer = Writer(store)
        sub = await writer.create("Subscription", {**subscription(f"http://{address}/hook"), "status": "requested"})
        await _activate_claims(writer, 1)
        d = dispatcher(store, attempts=2)
        await d.run_once()
        assert await d.run_once() == 0
    assert r.calls == 2  # the handshake's two attempts; no event was sent
    current = await store.get("Subscription", sub["id"])
    assert current is not None and current["status"] == "error"
    state = await d.deliveries.state(store.tenant, sub["id"])
    assert state is not None and state["state"] == "dead-letter" and state["lastError"] == "handshake: HTTP 500"


class Clock:
    """The dispatcher's clock, moved by the test."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at


async def test_heartbeats_after_the_period_with_nothing_sent(store: Store, receiver: tuple[Receiver, str]) -> None:
    r, endpoint = receiver
    writer = Writer(store)
    sub = await writer.create("Subscription", {**subscription(endpoint), "heartbeatPeriod": 60})
    clock = Clock()
    d = Dispatcher(store, SECRET, LOOPBACK, Retry(), lease_seconds=600, sleep=Sleeper(), draw=lambda: 0.5, now=clock)
    await d.run_once()
    assert r.verified == []  # nothing sent yet, but the period has not passed since it started
    clock.at += timedelta(seconds=61)
    await d.run_once()
    ((msg_id, beat),) = r.verified
    status = beat["entry"][0]["resource"]
    assert (status["type"], status["eventsSinceSubscriptionStart"]) == ("heartbeat", "0")
    assert msg_id.startswith(f"{sub['id']}-heartbeat-")
    await d.run_once()
    assert len(r.verified) == 1  # sent a moment ago: the next one is due a period later
    await _activate_claims(writer, 1)
    clock.at += timedelta(seconds=61)
    await until(lambda: len(r.verified) == 2, d)  # a round that delivers an event sends no heartbeat
    assert r.verified[1][1]["entry"][0]["resource"]["type"] == "event-notification"
    clock.at += timedelta(seconds=30)
    await d.run_once()
    assert len(r.verified) == 2  # the event counts as something sent
    clock.at += timedelta(seconds=31)
    await d.run_once()
    assert [b["entry"][0]["resource"]["type"] for _, b in r.verified][2:] == ["heartbeat"]
    assert r.verified[2][1]["entry"][0]["resource"]["eventsSinceSubscriptionStart"] == "1"


async def test_each_subscription_signs_with_its_own_secret(store: Store) -> None:
    """No receiver can sign for another: each Subscription's secret is derived from the server's, per tenant and
    Subscription; the server's own secret verifies nothing. `SubscriptionSecret` hands a Subscription's out to
    whoever may update it, in its tenant only."""
    from tests.tokens import authed_client, post, token

    raw: list[tuple[bytes, dict[str, str]]] = []

    async def keep(request: Request) -> Response:  # records each call as sent, verifying nothing
        raw.append((await request.body(), dict(request.headers)))
        return Response(status_code=204)

    async with serving_app(Starlette(routes=[Route("/hook", keep, methods=["POST"])])) as address:
        endpoint = f"http://{address}/hook"
        acme = await Writer(store.for_tenant("acme")).create("Subscription", subscription(endpoint))
        other = await Writer(store.for_tenant("umbrella")).create("Subscription", subscription(endpoint))
        await _activate_claims(Writer(store.for_tenant("acme")), 1)
        await _activate_claims(Writer(store.for_tenant("umbrella")), 1)
        await until(lambda: len(raw) == 2, dispatcher(store))
    secrets = {t: subscription_secret(SECRET, t, s["id"]) for t, s in (("acme", acme), ("umbrella", other))}
    assert len(set(secrets.values())) == 2
    for data, headers in raw:
        tenant = "acme" if acme["id"] in headers["webhook-id"] else "umbrella"
        Webhook(secrets[tenant]).verify(data, headers)
        for wrong in (SECRET, secrets["umbrella" if tenant == "acme" else "acme"]):
            with pytest.raises(WebhookVerificationError):
                Webhook(wrong).verify(data, headers)
    query = f'{{ SubscriptionSecret(id: "{acme["id"]}") }}'
    async with authed_client(store, webhook_secret=SECRET) as client:
        assert (await post(client, query, token(tenant="acme"))).json()["data"]["SubscriptionSecret"] == secrets["acme"]
        refused = (await post(client, query, token(tenant="acme", scope="user/Subscription.rs"))).json()
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        elsewhere = (await post(client, query, token(tenant="umbrella"))).json()
        assert elsewhere["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    async with authed_client(store) as client:  # no FINGATE_WEBHOOK_SECRET: nothing is sent, nothing to give
        assert (await post(client, query, token(tenant="acme"))).json()["data"]["SubscriptionSecret"] is None


async def test_two_dispatchers_on_one_database_deliver_each_event_once(
    store: Store, receiver: tuple[Receiver, str]
) -> None:
    r, endpoint = receiver
    writer = Writer(store)
    for _ in range(3):
        await writer.create("Subscription", subscription(endpoint))
    await _activate_claims(writer, 4)
    one, two = dispatcher(store), dispatcher(store)
    await until(lambda: len(r.verified) == 12, one, two)
    for _ in range(3):
        await asyncio.gather(one.run_once(), two.run_once())
    ids = [id for id, _ in r.verified]
    assert len(ids) == 12 and len(set(ids)) == 12 and r.calls == 12


async def test_only_the_topic_and_the_tenant_of_the_subscription(store: Store, receiver: tuple[Receiver, str]) -> None:
    r, endpoint = receiver
    await Writer(store).create("Subscription", subscription(endpoint))
    await _activate_claims(Writer(store.for_tenant("other")), 1)  # another tenant's activations
    writer = Writer(store)
    patient = await writer.create("Patient", dict(PATIENT))
    cancelled = await writer.create("Claim", claim(patient["id"], status="active"))  # created active: activated
    await writer.update("Claim", cancelled["id"], claim(patient["id"], status="cancelled"))  # not this topic
    d = dispatcher(store)
    await until(lambda: len(r.verified) == 1, d)
    assert await d.run_once() == 0
    assert [b["entry"][1]["fullUrl"] for _, b in r.verified] == [f"Claim/{cancelled['id']}/_history/1"]


async def test_the_builtin_topics_are_served_as_subscription_topics(store: Store) -> None:
    await ensure_topics(Writer(store))
    await ensure_topics(Writer(store))  # again: unchanged, nothing written
    async with client_for(store) as client:
        found = ok(await gql(client, "{ SubscriptionTopicList(_count: 50) { url status } }"))["SubscriptionTopicList"]
    assert sorted(t["url"] for t in found) == sorted(TOPICS)
    assert len(await store.events_after(0, 100)) == len(TOPICS)


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("http://127.0.0.1:9/x", outbound.Policy()),  # loopback not allowed
        ("http://10.1.2.3/x", LOOPBACK),  # a private network
        ("https://169.254.169.254/latest", LOOPBACK),  # link-local (cloud metadata)
        ("https://[::ffff:10.0.0.1]/x", LOOPBACK),  # a private IPv4 written as IPv6
        ("ftp://example.org/x", LOOPBACK),
        ("http://localhost:9/x", outbound.Policy()),
    ],
)
async def test_the_network_guard_refuses(url: str, policy: outbound.Policy) -> None:
    with pytest.raises(outbound.Refused):
        await outbound.post(url, b"{}", {}, policy)


class _TLSHook:
    """An https endpoint on 127.0.0.1 with a certificate for `NAME` from a test CA: records each request's Host
    header and the TLS server name (SNI) it was asked for, answers 204."""

    NAME = "hooks.fingate.test"

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.seen: list[tuple[str | None, str]] = []  # (SNI, Host)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(self.NAME).configure_cert(self.context)
        self.sni: str | None = None
        self.context.sni_callback = lambda sock, name, ctx: setattr(self, "sni", name)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = [line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line]
        headers = {name.lower(): value for name, value in lines}
        await reader.readexactly(int(headers.get("content-length", "0")))
        self.seen.append((self.sni, headers.get("host", "")))
        writer.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


async def test_https_goes_to_the_address_checked_whatever_dns_answers_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name resolves to an allowed address when checked, then to a refused one. The POST goes
    to the address checked (one lookup), with the name in the Host header and as TLS's SNI, and the certificate
    is checked against the name."""
    hook = _TLSHook()
    server = await asyncio.start_server(hook.handle, "127.0.0.1", 0, ssl=hook.context)
    port = server.sockets[0].getsockname()[1]
    answers = iter(["127.0.0.1", "10.255.255.1", "10.255.255.1"])  # the second answer would be refused
    lookups: list[str] = []

    async def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    client_tls = ssl.create_default_context()
    hook.ca.configure_trust(client_tls)
    policy = outbound.Policy(allow_loopback=True, verify=client_tls, timeout=5)
    async with server:
        answer = await outbound.post(f"https://{hook.NAME}:{port}/hook", b"{}", {}, policy)
    assert answer.status == 204
    assert lookups == [hook.NAME]  # resolved once, by the guard
    assert hook.seen == [(hook.NAME, f"{hook.NAME}:{port}")]
    with pytest.raises(outbound.Refused, match="10.255.255.1"):  # the next POST checks the new answer
        await outbound.post(f"https://{hook.NAME}:{port}/hook", b"{}", {}, policy)


async def test_the_guard_allows_private_targets_only_when_told() -> None:
    assert (await outbound.resolve("https://10.1.2.3/x", outbound.Policy(allow_private=True)))[1] == "10.1.2.3"
    with pytest.raises(outbound.Refused, match="only to loopback"):
        await outbound.resolve("http://10.1.2.3/x", outbound.Policy(allow_private=True))


async def test_a_refused_endpoint_is_recorded_and_dead_lettered(store: Store) -> None:
    writer = Writer(store)
    sub = await writer.create("Subscription", subscription("https://10.9.9.9/hook"))
    await _activate_claims(writer, 1)
    await dispatcher(store).run_once()
    async with client_for(store) as client:
        result = ok(await gql(client, f'{{ SubscriptionDeliveries(id: "{sub["id"]}") {{ outcome error }} }}'))
    (attempt,) = result["SubscriptionDeliveries"]
    assert attempt["outcome"] == "refused" and "10.9.9.9" in attempt["error"]


async def test_the_response_size_is_capped() -> None:
    big = Starlette(routes=[Route("/big", lambda request: Response(b"x" * 1_000_000), methods=["POST"])])
    async with serving_app(big) as address:
        answer = await outbound.post(
            f"http://{address}/big", b"{}", {}, outbound.Policy(allow_loopback=True, max_response_bytes=1000)
        )
    assert answer.status == 200 and len(answer.body) == 1000


def test_decimals_keep_their_digits_in_notifications() -> None:
    assert (
        body({"a": Decimal("100.10"), "b": [Decimal("1E+2"), "x", None, True]})
        == '{"a":100.10,"b":[100,"x",null,true]}'
    )


async def test_the_server_delivers_in_its_own_process(store: Store, receiver: tuple[Receiver, str]) -> None:
    r, endpoint = receiver
    settings = Settings(webhook_secret=SECRET, hooks_allow_loopback=True)
    async with serving(store, settings):
        writer = Writer(store)
        await writer.create("Subscription", subscription(endpoint))
        await _activate_claims(writer, 1)
        async with asyncio.timeout(WAIT):
            while not r.verified:
                r.changed.clear()
                await r.changed.wait()
    assert len(r.verified) == 1


async def test_a_dispatcher_dying_mid_delivery_loses_nothing(
    store: Store, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the POST, before recording it: the next dispatcher (once the lease lapses) sends it again
    with the same webhook-id (at least once; receivers deduplicate), then carries on."""
    r, endpoint = receiver
    writer = Writer(store)
    await writer.create("Subscription", subscription(endpoint))
    await _activate_claims(writer, 2)
    from app.store.deliveries import Deliveries

    advance = Deliveries.advance

    async def die(self: Deliveries, *args: Any) -> bool:
        if args[-1]:  # recording a delivery
            raise RuntimeError("killed")
        return await advance(self, *args)

    monkeypatch.setattr(Deliveries, "advance", die)
    doomed = Dispatcher(store, SECRET, LOOPBACK, Retry(), lease_seconds=0, sleep=Sleeper())  # its lease lapses at once
    with pytest.raises(RuntimeError, match="killed"):
        await doomed.run_once()
    monkeypatch.setattr(Deliveries, "advance", advance)
    await until(lambda: len(r.verified) == 3, dispatcher(store))
    ids = [id for id, _ in r.verified]
    assert ids[0] == ids[1] and len(set(ids)) == 2  # the first again, same id; then the second
    assert [b["entry"][0]["resource"]["eventsSinceSubscriptionStart"] for _, b in r.verified] == ["1", "1", "2"]


async def test_fingate_dispatch_delivers_on_its_own(
    store: Store, mongo_uri: str, receiver: tuple[Receiver, str]
) -> None:
    r, endpoint = receiver
    writer = Writer(store)
    await writer.create("Subscription", subscription(endpoint))
    await _activate_claims(writer, 1)
    env = {
        **os.environ,
        "MONGODB_URI": mongo_uri,
        "FINGATE_DB": store.db.name,
        "FINGATE_WEBHOOK_SECRET": SECRET,
        "FINGATE_HOOKS_ALLOW_LOOPBACK": "true",
        "PYTHONPATH": ROOT,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "dispatch", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(WAIT * 2):  # a fresh process builds nothing heavy, but the machine is shared
            while not r.verified:
                r.changed.clear()
                await r.changed.wait()
    finally:
        process.terminate()
        await process.wait()
    assert len(r.verified) == 1
    topics = await store.search("SubscriptionTopic", {}, count=50)
    assert len(topics) == len(TOPICS)  # `fingate dispatch` stores the built-in topics too


def dispatch_env(mongo_uri: str, store: Store, **settings: str) -> dict[str, str]:
    """The environment of a `fingate dispatch` on the test's database, with `settings` as FINGATE_* variables."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("FINGATE_")},
        "MONGODB_URI": mongo_uri,
        "FINGATE_DB": store.db.name,
        "FINGATE_HOOKS_ALLOW_LOOPBACK": "true",
        **{f"FINGATE_{k.upper()}": v for k, v in settings.items()},
        "PYTHONPATH": ROOT,
    }


async def start_dispatch(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "dispatch", env=env, stdout=asyncio.subprocess.DEVNULL
    )


async def end_orphaned_transactions(store: Store) -> None:
    """What MongoDB's transaction lifetime (60 s) does for a client killed mid-transaction, at once: the
    embedded secantusd-rs has no such limit (a gap of the embedded engine: README "Where deliveries run"), so a killed process's open transaction would
    hold its locks, and the test's database drop would wait on them, until the server restarts."""
    await store.client.admin.command("killAllSessions", [])


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


class HoldingReceiver(Receiver):
    """A Receiver that holds its first request unanswered until `release` is set (`holding` says it arrived);
    `seen` is every request's (webhook-id, Bundle) in arrival order, each signature verified."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.seen: list[tuple[str, dict[str, Any]]] = []

    async def hook(self, request: Request) -> Response:
        data = await request.body()
        verified(data, dict(request.headers))
        self.seen.append((request.headers["webhook-id"], json.loads(data, parse_float=Decimal)))
        if self.holding.is_set():
            return await super().hook(request)
        self.holding.set()
        await self.release.wait()
        return Response(status_code=204)  # to a dispatcher already killed: nobody reads it


async def status(store: Store, id: str) -> dict[str, Any]:
    """A Subscription's `$status` and its delivery attempts, read through GraphQL."""
    async with client_for(store) as client:
        result = ok(
            await gql(
                client,
                f'{{ SubscriptionStatus(id: "{id}") {{ state eventsSinceSubscriptionStart lastError }} '
                f'SubscriptionDeliveries(id: "{id}") {{ webhookId eventNumber attempt outcome status }} }}',
            )
        )
    return {
        **(result["SubscriptionStatus"] or {"eventsSinceSubscriptionStart": 0}),
        "deliveries": result["SubscriptionDeliveries"],
    }


async def test_fingate_dispatch_killed_during_a_delivery_and_restarted_loses_nothing(
    store: Store, mongo_uri: str
) -> None:
    """Issue 18's proof: `fingate dispatch` SIGKILLed while its POST is in flight; a second one, once the lease
    lapses, sends that notification again with the same webhook-id (at least once), then the rest, in order."""
    r = HoldingReceiver()
    async with serving_app(r.app) as address:
        writer = Writer(store)
        sub = await writer.create("Subscription", subscription(f"http://{address}/hook"))
        claims = await _activate_claims(writer, 3)
        # A short lease, so the second dispatcher takes over soon; a long POST timeout, so the held request is
        # never given up on by the first (its fate is the kill, not a timeout).
        env = dispatch_env(mongo_uri, store, webhook_secret=SECRET, dispatch_lease_seconds="1", hooks_timeout="600")
        first = await start_dispatch(env)
        try:
            async with asyncio.timeout(WAIT * 2):  # a fresh process; the machine is shared
                await r.holding.wait()
            first.kill()  # SIGKILL: no `finally`, no lease release, no attempt record
            assert await first.wait() == -signal.SIGKILL
            await end_orphaned_transactions(store)
        finally:
            await stop(first)
            r.release.set()  # the held connection's dispatcher is gone
        assert r.verified == []  # nothing was answered yet
        second = await start_dispatch(env)
        try:
            async with asyncio.timeout(WAIT * 2):
                while len(r.verified) < 3:
                    r.changed.clear()
                    await r.changed.wait()
                while True:  # the receiver has answered the last; its delivery is recorded just after
                    if (await status(store, sub["id"]))["eventsSinceSubscriptionStart"] == 3:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await stop(second)
    held_id = r.seen[0][0]
    ids = [id for id, _ in r.verified]
    assert ids[0] == held_id  # the notification in flight at the kill, again, with the same webhook-id
    assert [id for id, _ in r.seen] == [held_id, *ids] and len(set(ids)) == 3  # then each other one once
    assert r.seen[1][1] == r.seen[0][1]  # the very same notification
    assert [b["entry"][0]["resource"]["eventsSinceSubscriptionStart"] for _, b in r.verified] == ["1", "2", "3"]
    assert [b["entry"][1]["fullUrl"] for _, b in r.verified] == [f"Claim/{id}/_history/2" for id in claims]
    result = await status(store, sub["id"])
    assert {k: result[k] for k in ("state", "lastError")} == {"state": "active", "lastError": None}
    # The killed POST has no record (its process died before it could write one); the deliveries after it do.
    assert list(reversed(result["deliveries"])) == [
        {"webhookId": id, "eventNumber": n, "attempt": 1, "outcome": "delivered", "status": 204}
        for n, id in enumerate(ids, 1)
    ]


@pytest.mark.parametrize(
    "endpoint", ["http://billing.example/hook", "ftp://x/y", "", "hooks.example/x", "https://user:pw@hooks.example/x"]
)
async def test_a_rest_hook_that_cannot_be_delivered_to_is_not_stored(store: Store, endpoint: str) -> None:
    async with client_for(store) as client:
        result = await gql(
            client,
            "mutation($res: SubscriptionInput!) { SubscriptionCreate(res: $res) { id } }",
            {"res": subscription(endpoint)},
        )
    (error,) = result["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["operationOutcome"]["issue"][0]["expression"] == ["Subscription.endpoint"]
    assert await store.db["Subscription"].count_documents({}) == 0


async def test_filter_by_and_empty_content(store: Store, receiver: tuple[Receiver, str]) -> None:
    r, endpoint = receiver
    writer = Writer(store)
    patient = await writer.create("Patient", dict(PATIENT))
    other = await writer.create("Patient", dict(PATIENT))
    filtered = {
        **subscription(endpoint, content="empty"),
        "filterBy": [{"filterParameter": "patient", "value": f"Patient/{patient['id']}"}],
    }
    await writer.create("Subscription", filtered)
    await writer.create("Claim", claim(other["id"], status="active"))  # another patient's: filtered out
    await writer.create("Claim", claim(patient["id"], status="active"))
    d = dispatcher(store)
    await until(lambda: len(r.verified) == 1, d)
    assert await d.run_once() == 0
    (bundle,) = [b for _, b in r.verified]
    assert len(bundle["entry"]) == 1  # empty: the SubscriptionStatus alone, no focus
    assert "focus" not in bundle["entry"][0]["resource"]["notificationEvent"][0]
