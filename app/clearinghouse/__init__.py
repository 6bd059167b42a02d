"""The clearinghouse hand-off: active Claims out as JSON claim submissions, the answers in as ClaimResponses."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx

from app import errors, outbound
from app.events import in_rounds
from app.fhir.decimals import plain_text
from app.fhir.values import Resource, now_instant
from app.hooks.dispatcher import Failed, Retry
from app.hooks.topics import TOPICS
from app.store import Store
from app.store.deliveries import ACTIVE, Deliveries
from app.writes import Writer

log = logging.getLogger("fingate.clearinghouse")

SUBMISSION_SYSTEM = "http://fingate.dev/fhir/clearinghouse-submission"  # ClaimResponse.identifier: the submission id
STATE_KEY = "$clearinghouse"  # its place in each tenant's outbox, kept with the rest-hooks' (app/store/deliveries.py)
ACTIVATED = TOPICS["http://fingate.dev/fhir/SubscriptionTopic/claim-activated"]
FORMAT = "fingate-claim-submission/1"
BATCH = 100
DEFAULT_RETRY = Retry()


def _money(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict) or value.get("value") is None:
        return None
    amount = value["value"]
    return {
        "value": plain_text(amount) if isinstance(amount, Decimal) else str(amount),
        "currency": value.get("currency"),
    }


def _code(concept: Any) -> str | None:
    for coding in (concept or {}).get("coding") or ():
        if coding.get("code"):
            return f"{coding['system']}|{coding['code']}" if coding.get("system") else str(coding["code"])
    return None


def submission_id(tenant: str, claim: Resource) -> str:
    """One per Claim version: the same on every retry, so the clearinghouse (and FinGate) can deduplicate."""
    return f"{tenant}.{claim['id']}.{claim['meta']['versionId']}"


def submission(tenant: str, claim: Resource) -> dict[str, Any]:
    """The claim submission FinGate sends (format `fingate-claim-submission/1`, README "Clearinghouse"):
    money as strings with their exact digits, codes as `system|code`, references as FHIR writes them."""
    return {
        "format": FORMAT,
        "submissionId": submission_id(tenant, claim),
        "claim": {
            "id": claim["id"],
            "version": claim["meta"]["versionId"],
            "identifier": claim.get("identifier") or [],
            "use": claim.get("use"),
            "type": _code(claim.get("type")),
            "created": claim.get("created"),
            "patient": (claim.get("patient") or {}).get("reference"),
            "provider": (claim.get("provider") or {}).get("reference"),
            "insurer": (claim.get("insurer") or {}).get("reference"),
            "billablePeriod": claim.get("billablePeriod"),
            "total": _money(claim.get("total")),
            "items": [
                {
                    "sequence": item.get("sequence"),
                    "productOrService": _code(item.get("productOrService")),
                    "quantity": plain_text(q)
                    if isinstance(q := (item.get("quantity") or {}).get("value"), Decimal)
                    else q,
                    "unitPrice": _money(item.get("unitPrice")),
                    "net": _money(item.get("net")),
                }
                for item in claim.get("item") or ()
            ],
        },
    }


def _response(claim: Resource, submission_id: str) -> Resource:
    """The queued ClaimResponse (a draft): the submission is sent, the answer not yet in."""
    return {
        "resourceType": "ClaimResponse",
        "status": "draft",
        "identifier": [{"system": SUBMISSION_SYSTEM, "value": submission_id}],
        "type": claim.get("type") or {"coding": [{"code": "professional"}]},
        "use": claim.get("use") or "claim",
        "patient": claim["patient"],
        "created": now_instant(),
        **({"insurer": claim["insurer"]} if claim.get("insurer") else {}),
        "request": {"reference": f"Claim/{claim['id']}"},
        "outcome": "queued",
    }


class Clearinghouse:
    """Sends each Claim that becomes active, once per Claim version; leased per tenant like the rest-hooks."""

    def __init__(
        self,
        store: Store,
        url: str,
        policy: outbound.Policy,
        retry: Retry = DEFAULT_RETRY,
        lease_seconds: float = 60.0,
        owner: str | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        draw: Callable[[], float] | None = None,
    ) -> None:
        self.store = store
        self.deliveries = Deliveries(store)
        self.url = url
        self.policy = policy
        self.retry = retry
        self.lease_seconds = lease_seconds
        self.owner = owner or uuid.uuid4().hex
        self.sleep = sleep or asyncio.sleep
        self.draw = draw or random.random
        self.rounds = 0

    async def run(self, poll: float = 1.0) -> None:
        """Submit until cancelled: after each round, wait for a commit in this process or `poll` seconds."""
        await in_rounds(self.store, self.run_once, "clearinghouse", poll)

    async def run_once(self) -> int:
        """One round over every tenant; how many submissions got an answer.

        A tenant first met in the first round starts at its last event (what was active before the hand-off
        was configured is not sent); one that appears later starts at its beginning, so its first Claims go."""
        answered = 0
        start = 0 if self.rounds else None
        self.rounds += 1
        for tenant in await self.deliveries.tenants():
            state = await self.deliveries.lease(tenant, STATE_KEY, self.owner, self.lease_seconds, start)
            if state is None or state["state"] != ACTIVE:
                continue
            try:
                answered += await self._drain(tenant, state["position"])
            finally:
                await self.deliveries.release(tenant, STATE_KEY, self.owner)
        return answered

    async def _drain(self, tenant: str, position: int) -> int:
        store = self.store.for_tenant(tenant)
        answered = 0
        for event in await store.events_after(position, BATCH, frozenset({"Claim"})):
            if ACTIVATED.matches(event):
                if await self.deliveries.lease(tenant, STATE_KEY, self.owner, self.lease_seconds) is None:
                    return answered
                answered += await self._submit(store, tenant, event)
            if not await self.deliveries.advance(tenant, STATE_KEY, self.owner, event["position"], False):
                return answered
        return answered

    async def _submit(self, store: Store, tenant: str, event: Resource) -> int:
        key = f"{event['id']}/_history/{event['versionId']}"
        claim = (await store.get_by_type({"Claim": [key]})).get(("Claim", key))
        if claim is None:
            return 0
        sid = submission_id(tenant, claim)
        writer = Writer(store, actor="clearinghouse")
        found = await store.search("ClaimResponse", {"identifier": f"{SUBMISSION_SYSTEM}|{sid}"}, count=1)
        if found and found[0].get("outcome") != "queued":
            return 0  # answered already (a round that stopped before moving on): idempotent
        queued = found[0] if found else await writer.create("ClaimResponse", _response(claim, sid))
        answer, error = await self._post(sid, submission(tenant, claim))
        done = {k: v for k, v in queued.items() if k != "meta"}
        done["status"] = "active"
        if answer is not None and answer.get("status") == "accepted":
            done["outcome"] = "complete"
            done["disposition"] = str(answer.get("message") or "accepted by the clearinghouse")
            if answer.get("id"):
                done["identifier"] = [*done["identifier"], {"system": f"{self.url}#id", "value": str(answer["id"])}]
        else:
            done["outcome"] = "error"
            reason = error or str((answer or {}).get("message") or "rejected by the clearinghouse")
            done["disposition"] = reason
            done["error"] = [{"code": {"text": reason}}]
        try:
            await writer.update("ClaimResponse", queued["id"], done, queued["meta"]["versionId"])
        except errors.FinGateError as exc:  # e.g. the Claim was cancelled meanwhile: the answer stays queued
            log.warning("clearinghouse answer for %s not recorded: %s", sid, exc.message)
            return 0
        return 1

    async def _post(self, sid: str, payload: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The clearinghouse's JSON answer (retried with backoff on failures), or None and why not."""
        data = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"content-type": "application/json", "idempotency-key": sid}
        try:
            async for attempt in self.retry.attempting(self.sleep, self.draw):
                with attempt:
                    return await self._attempt(data, headers)
        except Failed as exc:  # the attempts ran out
            return None, str(exc)
        except outbound.Refused as exc:
            return None, f"refused: {exc}"
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _attempt(self, data: bytes, headers: dict[str, str]) -> tuple[dict[str, Any] | None, str]:
        """One POST: the answer, or why there is none; `Failed` when it may be tried again (no answer, a 5xx)."""
        try:
            answer = await outbound.post(self.url, data, headers, self.policy)
        except httpx.HTTPError as exc:
            raise Failed(f"{type(exc).__name__}: {exc}") from None
        if 200 <= answer.status < 300:
            try:
                parsed = json.loads(answer.body)
            except ValueError:
                return None, "the clearinghouse answered with something other than JSON"
            return (parsed, "") if isinstance(parsed, dict) else (None, "not a JSON object")
        if 400 <= answer.status < 500:  # the submission itself was refused: retrying cannot help
            return None, f"HTTP {answer.status}: {answer.body[:200].decode(errors='replace')}"
        raise Failed(f"HTTP {answer.status}")
