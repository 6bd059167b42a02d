"""The rest-hook dispatcher: each active rest-hook Subscription's matching events, POSTed in order, signed,
retried with exponential backoff and jitter, dead-lettered after too many failures; every attempt recorded.
A `requested` Subscription is activated by a handshake; one with a `heartbeatPeriod` gets heartbeats when idle."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from app import errors, outbound
from app.events import in_rounds
from app.fhir.values import Resource
from app.hooks import notification
from app.hooks.topics import TOPICS
from app.store import HISTORY_PATH, Store
from app.store.deliveries import ACTIVE, DEAD_LETTER, Deliveries
from app.writes import Writer

log = logging.getLogger("fingate.hooks")

BATCH = 100  # events read at a time per Subscription


class _LeaseLost(Exception):
    """Another dispatcher took this Subscription over: it goes on from where this one stopped."""


class Failed(Exception):
    """One attempt that failed and may be tried again (after the backoff); its message says why."""


@dataclass(frozen=True)
class Retry:
    """Attempts per notification, and the backoff between them: `base * 2**(n-1)`, at most `most`, each
    drawn in its upper half at random (jitter), so failing receivers are not hit in lockstep."""

    attempts: int = 5
    base: float = 1.0
    most: float = 60.0

    def delay(self, failed: int, draw: float) -> float:
        full = min(self.most, self.base * 2 ** (failed - 1))
        return full / 2 + full / 2 * draw

    def attempting(self, sleep: Callable[[float], Awaitable[Any]], draw: Callable[[], float]) -> AsyncRetrying:
        """tenacity's loop over these attempts: an attempt raising `Failed` is tried again after its backoff (the
        last one's `Failed` is raised); anything else ends it at once."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=lambda state: self.delay(state.attempt_number, draw()),
            retry=retry_if_exception_type(Failed),
            sleep=sleep,
            reraise=True,
        )


class Dispatcher:
    """One per instance. Subscriptions are leased through the database (app/store/deliveries.py): two
    dispatchers never deliver for one Subscription at once; a lost lease stops its delivery."""

    def __init__(
        self,
        store: Store,
        secret: str,
        policy: outbound.Policy,
        retry: Retry = Retry(),
        lease_seconds: float = 60.0,
        owner: str | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        draw: Callable[[], float] = random.random,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.deliveries = Deliveries(store)
        self.secret = secret
        self.policy = policy
        self.retry = retry
        self.lease_seconds = lease_seconds
        self.owner = owner or uuid.uuid4().hex
        self.sleep = sleep
        self.draw = draw
        self.now = now

    async def run(self, poll: float = 1.0) -> None:
        """Deliver until cancelled: after each round, wait for a commit in this process or `poll` seconds."""
        await in_rounds(self.store, self.run_once, "rest-hook dispatch", poll)

    async def run_once(self) -> int:
        """One round over every active (or requested) rest-hook Subscription; how many notifications were delivered."""
        delivered = 0
        for tenant, subscription in await self.deliveries.rest_hooks():
            id = subscription["id"]
            state = await self.deliveries.lease(tenant, id, self.owner, self.lease_seconds, now=self.now())
            if state is not None and state["state"] == DEAD_LETTER and _changed_since(subscription, state):
                state = await self.deliveries.revive(tenant, id, self.owner)
            if state is None or state["state"] != ACTIVE:
                continue
            try:
                delivered += await self._serve(tenant, subscription, state)
            except _LeaseLost:
                pass
            finally:
                await self.deliveries.release(tenant, id, self.owner)
        return delivered

    async def _serve(self, tenant: str, subscription: Resource, state: dict[str, Any]) -> int:
        store = self.store.for_tenant(tenant)
        if subscription.get("status") == "requested":
            activated = await self._handshake(store, tenant, subscription, state)
            if activated is None:
                return 0
            subscription = activated
        delivered = await self._drain(store, tenant, subscription, state)
        if not delivered:
            await self._heartbeat(store, tenant, subscription, state)
        return delivered

    async def _drain(self, store: Store, tenant: str, subscription: Resource, state: dict[str, Any]) -> int:
        topic = TOPICS.get(subscription.get("topic") or "")
        id = subscription["id"]
        if topic is None:
            await self._dead(store, tenant, subscription, f"unknown topic {subscription.get('topic')!r}")
            return 0
        position, number, delivered = state["position"], state["eventsSinceSubscriptionStart"], 0
        for event in await store.events_after(position, BATCH, frozenset({topic.resource_type})):
            if not topic.matches(event) or not await self._filtered_in(store, subscription, event):
                if not await self.deliveries.advance(tenant, id, self.owner, event["position"], False):
                    raise _LeaseLost
                continue
            if not await self._deliver(store, tenant, subscription, topic.url, event, number + 1):
                return delivered
            number += 1
            delivered += 1
        return delivered

    async def _filtered_in(self, store: Store, subscription: Resource, event: Resource) -> bool:
        """The Subscription's `filterBy` (search parameter = value, ANDed) holds for the resource now."""
        filters = [f for f in subscription.get("filterBy") or () if f.get("filterParameter") and f.get("value")]
        if not filters:
            return True
        if event["interaction"] == "delete":
            return False
        params: dict[str, Any] = {f["filterParameter"]: [f["value"]] for f in filters}
        params["_id"] = [event["id"]]
        return await store.count(event["resourceType"], params) > 0

    async def _deliver(
        self, store: Store, tenant: str, subscription: Resource, topic: str, event: Resource, number: int
    ) -> bool:
        """One event's notification, delivered (True), or dead-lettered after its last attempt (False)."""
        id = subscription["id"]
        resource = None
        if subscription.get("content") == "full-resource":
            key = f"{event['id']}{HISTORY_PATH}{event['versionId']}"
            found = await store.get_by_type({event["resourceType"]: [key]})
            resource = found.get((event["resourceType"], key))
        bundle = notification.bundle(subscription, topic, event, number, resource)
        msg_id = notification.message_id(id, event["position"])
        error = await self._send(tenant, subscription, msg_id, bundle, event["position"], number)
        if error is None:
            if not await self.deliveries.advance(tenant, id, self.owner, event["position"], True):
                raise _LeaseLost
            return True
        log.warning("Subscription/%s (tenant %s): event %s dead-lettered: %s", id, tenant, event["position"], error)
        await self._dead(store, tenant, subscription, error)
        return False

    async def _handshake(
        self, store: Store, tenant: str, subscription: Resource, state: dict[str, Any]
    ) -> Resource | None:
        """A `requested` Subscription: a handshake, then a new version with `status: active` (the Subscription to
        deliver for); None when the endpoint never accepted it (then `error`, dead-lettered) or it changed meanwhile."""
        msg_id = f"{subscription['id']}-handshake-{_version(subscription)}"
        if not await self._control(store, tenant, subscription, state, notification.HANDSHAKE, msg_id, self.now()):
            return None
        return await _set_status(store, tenant, subscription, "active")  # None: written meanwhile, served next round

    async def _heartbeat(self, store: Store, tenant: str, subscription: Resource, state: dict[str, Any]) -> None:
        """A heartbeat when nothing was sent for the Subscription's `heartbeatPeriod` seconds (R5), dead-lettering
        it when the endpoint no longer answers."""
        period = subscription.get("heartbeatPeriod")
        if not isinstance(period, int) or period <= 0:
            return
        now = self.now()
        last = state.get("lastSent") or state.get("started")
        if last is not None and now - last < timedelta(seconds=period):
            return
        msg_id = f"{subscription['id']}-heartbeat-{int(now.timestamp())}"
        await self._control(store, tenant, subscription, state, notification.HEARTBEAT, msg_id, now)

    async def _control(
        self,
        store: Store,
        tenant: str,
        subscription: Resource,
        state: dict[str, Any],
        kind: str,
        msg_id: str,
        when: datetime,
    ) -> bool:
        """A handshake or a heartbeat (`kind`) sent: True once the endpoint accepted it; False when it did not, and
        the Subscription is dead-lettered with why."""
        number = state["eventsSinceSubscriptionStart"]
        bundle = notification.control(subscription, kind, number, when, msg_id)
        error = await self._send(tenant, subscription, msg_id, bundle, state["position"], number, kind)
        if error is not None:
            await self._dead(store, tenant, subscription, f"{kind}: {error}")
        return error is None

    async def _send(
        self,
        tenant: str,
        subscription: Resource,
        msg_id: str,
        bundle: dict[str, Any],
        position: int,
        number: int,
        kind: str = notification.EVENT,
    ) -> str | None:
        """POST `bundle` until the endpoint accepts it (2xx: None) or the attempts run out (the last error, also
        at once for a target the network guard refuses); each attempt is recorded. _LeaseLost when another
        dispatcher took the Subscription over meanwhile."""
        id = subscription["id"]
        data = notification.body(bundle)
        record: dict[str, Any] = {
            "subscription": id,
            "type": kind,
            "position": position,
            "eventNumber": number,
            "webhookId": msg_id,
            "endpoint": subscription.get("endpoint"),
        }
        try:
            async for attempt in self.retry.attempting(self.sleep, self.draw):
                with attempt:
                    tried = {**record, "attempt": attempt.retry_state.attempt_number}
                    await self._attempt(tenant, subscription, msg_id, data, tried)
                    return None
        except Failed as exc:
            return str(exc)
        except outbound.Refused as exc:  # the target itself is not allowed: retrying cannot help
            return f"refused: {exc}"
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _attempt(
        self, tenant: str, subscription: Resource, msg_id: str, data: str, record: dict[str, Any]
    ) -> None:
        """One POST, recorded: None when accepted; `Failed` (tried again) or `Refused` (not) when not."""
        id = subscription["id"]
        if await self.deliveries.lease(tenant, id, self.owner, self.lease_seconds) is None:
            raise _LeaseLost
        secret = notification.subscription_secret(self.secret, tenant, id)
        headers = notification.signed_headers(secret, msg_id, datetime.now(UTC), data)
        try:
            answer = await outbound.post(subscription.get("endpoint") or "", data.encode(), headers, self.policy)
        except outbound.Refused as exc:
            await self.deliveries.record(tenant, {**record, "outcome": "refused", "error": f"refused: {exc}"})
            raise
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
            await self.deliveries.record(tenant, {**record, "outcome": "failed", "error": error})
        else:
            ok = 200 <= answer.status < 300
            error = "" if ok else f"HTTP {answer.status}"
            outcome = {"outcome": "delivered" if ok else "failed", "status": answer.status, "error": error or None}
            await self.deliveries.record(tenant, {**record, **outcome})
            if ok:
                await self.deliveries.sent(tenant, id, self.owner, self.now())
                return
        await self.deliveries.fail(tenant, id, self.owner, error, None)
        raise Failed(error)

    async def _dead(self, store: Store, tenant: str, subscription: Resource, error: str) -> None:
        """Delivery stops: the Subscription's `status` becomes `error` (R5: the server could not notify), and it
        stays dead-lettered until the client writes it again (a fixed endpoint, `status` back to `active`)."""
        written = await _set_status(store, tenant, subscription, "error")  # None: written meanwhile, which revives it
        version = _version(written or subscription)
        await self.deliveries.fail(tenant, subscription["id"], self.owner, error, version)


async def _set_status(store: Store, tenant: str, subscription: Resource, status: str) -> Resource | None:
    """The Subscription's next version, with `status`, written by the dispatcher if it is still the version read;
    None (logged) when the client wrote it meanwhile."""
    id = subscription["id"]
    changed = {k: v for k, v in subscription.items() if k != "meta"} | {"status": status}
    try:
        return await Writer(store, actor="rest-hook dispatcher").update(
            "Subscription", id, changed, _version(subscription)
        )
    except errors.FinGateError as exc:
        log.warning("Subscription/%s (tenant %s): status not set to %s: %s", id, tenant, status, exc.message)
        return None


def _version(subscription: Resource) -> str:
    return str((subscription.get("meta") or {}).get("versionId"))


def _changed_since(subscription: Resource, state: dict[str, Any]) -> bool:
    """A dead-lettered Subscription updated since (a fixed endpoint, say): delivery resumes where it died."""
    return state.get("deadVersion") not in (None, _version(subscription))


def policy_from(settings: Any) -> outbound.Policy:
    return outbound.Policy(
        allow_loopback=settings.hooks_allow_loopback,
        allow_private=settings.hooks_allow_private,
        timeout=settings.hooks_timeout,
        max_response_bytes=settings.hooks_max_response_bytes,
    )


def from_settings(store: Store, settings: Any) -> Dispatcher | None:
    """The instance's rest-hook dispatcher; None without FINGATE_WEBHOOK_SECRET (nothing unsigned is sent)."""
    if settings.webhook_secret is None:
        return None
    retry = Retry(settings.hooks_max_attempts, settings.hooks_backoff_seconds, settings.hooks_backoff_max_seconds)
    return Dispatcher(
        store,
        settings.webhook_secret.get_secret_value(),
        policy_from(settings),
        retry,
        settings.dispatch_lease_seconds,
    )
