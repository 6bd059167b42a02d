"""The clearinghouse hand-off (app/clearinghouse): a Claim that becomes active goes to a fake clearinghouse
on loopback, and its answer comes back as a ClaimResponse (queued, then complete or error), once."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import outbound
from app.clearinghouse import SUBMISSION_SYSTEM, Clearinghouse, submission_id
from app.hooks.dispatcher import Retry
from app.store import Store
from app.writes import Writer
from tests.live import WAIT, serving_app
from tests.test_mutations import PATIENT, claim
from tests.test_rest_hooks import dispatch_env, end_orphaned_transactions, start_dispatch, stop


class FakeClearinghouse:
    """Accepts submissions (or rejects, or fails `fail` times first), recording each by its Idempotency-Key."""

    def __init__(self, reject: bool = False, fail: int = 0) -> None:
        self.reject = reject
        self.fail = fail
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.app = Starlette(routes=[Route("/claims", self.claims, methods=["POST"])])

    async def claims(self, request: Request) -> Response:
        body = json.loads(await request.body(), parse_float=Decimal)
        self.received.append((request.headers["idempotency-key"], body))
        if len(self.received) <= self.fail:
            return Response(status_code=503)
        if self.reject:
            return JSONResponse({"status": "rejected", "message": "member not found"})
        return JSONResponse({"status": "accepted", "id": f"CH-{len(self.received)}", "message": "accepted for review"})


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeClearinghouse, str]]:
    f = FakeClearinghouse()
    async with serving_app(f.app) as address:
        yield f, f"http://{address}/claims"


async def _no_sleep(seconds: float) -> None:
    return None


def clearinghouse(store: Store, url: str) -> Clearinghouse:
    return Clearinghouse(
        store, url, outbound.Policy(allow_loopback=True), Retry(attempts=3), 600, sleep=_no_sleep, draw=lambda: 0.5
    )


async def responses(store: Store, claim_id: str) -> list[dict[str, Any]]:
    return await store.search("ClaimResponse", {"request": [f"Claim/{claim_id}"]}, count=10)


async def until_answered(store: Store, sender: Clearinghouse, claim_id: str) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        while True:
            await sender.run_once()
            found = await responses(store, claim_id)
            if found and found[0]["outcome"] != "queued":
                return found[0]


async def _active_claim(writer: Writer) -> dict[str, Any]:
    patient = await writer.create("Patient", dict(PATIENT))
    draft = await writer.create("Claim", claim(patient["id"]))
    # The clearinghouse starts from the tenant's outbox as it first finds it: start it before activating.
    return draft


async def test_an_activated_claim_is_submitted_and_answered_once(
    store: Store, fake: tuple[FakeClearinghouse, str]
) -> None:
    f, url = fake
    writer = Writer(store)
    draft = await _active_claim(writer)
    sender = clearinghouse(store, url)
    await sender.run_once()  # takes its place in the outbox
    assert f.received == []  # a draft is not submitted
    await writer.update("Claim", draft["id"], claim(draft["patient"]["reference"].split("/")[1], status="active"))
    answered = await until_answered(store, sender, draft["id"])
    assert answered["outcome"] == "complete" and answered["status"] == "active"
    assert answered["disposition"] == "accepted for review"
    assert {"system": SUBMISSION_SYSTEM, "value": f"default.{draft['id']}.2"} in answered["identifier"]
    ((key, body),) = f.received
    assert key == f"default.{draft['id']}.2" and body["format"] == "fingate-claim-submission/1"
    assert body["claim"]["total"] == {"value": "100.10", "currency": "USD"}  # exact, as a string
    assert body["claim"]["items"][0]["productOrService"] == "99213"
    # Its history: queued first, then complete.
    history = await store.history("ClaimResponse", answered["id"])
    assert [h["outcome"] for h in history] == ["complete", "queued"]
    for _ in range(2):
        await sender.run_once()
    assert len(f.received) == 1 and len(await responses(store, draft["id"])) == 1


async def test_a_rejection_is_an_error_response(store: Store) -> None:
    f = FakeClearinghouse(reject=True, fail=2)  # two 503s first: retried
    async with serving_app(f.app) as address:
        writer = Writer(store)
        sender = clearinghouse(store, f"http://{address}/claims")
        await sender.run_once()
        patient = await writer.create("Patient", dict(PATIENT))
        active = await writer.create("Claim", claim(patient["id"], status="active"))
        answered = await until_answered(store, sender, active["id"])
    assert answered["outcome"] == "error" and answered["error"] == [{"code": {"text": "member not found"}}]
    assert len(f.received) == 3 and len({key for key, _ in f.received}) == 1  # one submission id, retried


async def test_a_queued_submission_left_by_a_crash_is_resumed_not_duplicated(
    store: Store, fake: tuple[FakeClearinghouse, str]
) -> None:
    f, url = fake
    writer = Writer(store)
    sender = clearinghouse(store, url)
    await sender.run_once()
    patient = await writer.create("Patient", dict(PATIENT))
    active = await writer.create("Claim", claim(patient["id"], status="active"))
    # A previous instance queued the response, then died before posting.
    from app.clearinghouse import _response

    await writer.create("ClaimResponse", _response(active, submission_id("default", active)))
    answered = await until_answered(store, sender, active["id"])
    assert answered["outcome"] == "complete"
    assert len(await responses(store, active["id"])) == 1 and len(f.received) == 1


async def test_two_instances_submit_each_claim_once(store: Store, fake: tuple[FakeClearinghouse, str]) -> None:
    f, url = fake
    writer = Writer(store)
    one, two = clearinghouse(store, url), clearinghouse(store, url)
    await asyncio.gather(one.run_once(), two.run_once())
    patient = await writer.create("Patient", dict(PATIENT))
    ids = [(await writer.create("Claim", claim(patient["id"], status="active")))["id"] for _ in range(4)]
    async with asyncio.timeout(WAIT):
        while len(f.received) < 4:
            await asyncio.gather(one.run_once(), two.run_once())
    for _ in range(2):
        await asyncio.gather(one.run_once(), two.run_once())
    assert sorted(key for key, _ in f.received) == sorted(f"default.{i}.1" for i in ids)


async def test_the_server_hands_claims_off_in_its_own_process(
    store: Store, fake: tuple[FakeClearinghouse, str]
) -> None:
    from app.settings import Settings
    from tests.live import serving

    f, url = fake
    writer = Writer(store)
    patient = await writer.create("Patient", dict(PATIENT))  # the tenant exists before the server starts
    async with serving(store, Settings(clearinghouse_url=url, hooks_allow_loopback=True)):
        async with asyncio.timeout(WAIT):
            while True:  # the first round takes the tenant's place in the outbox; then the claim is activated
                state = await store.db["hook_state"].find_one({"_id": "default/$clearinghouse"})
                if state is not None:
                    break
                await asyncio.sleep(0.05)
        active = await writer.create("Claim", claim(patient["id"], status="active"))
        async with asyncio.timeout(WAIT):  # polled: the server's dispatcher answers in its own time
            while True:
                if [r for r in await responses(store, active["id"]) if r["outcome"] != "queued"]:
                    break
                await asyncio.sleep(0.05)
    assert [key for key, _ in f.received] == [f"default.{active['id']}.1"]


class HoldingClearinghouse(FakeClearinghouse):
    """A FakeClearinghouse that holds its first submission unanswered until `release` is set (`holding` says
    it arrived); the later ones it answers as usual."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def claims(self, request: Request) -> Response:
        if self.holding.is_set():
            return await super().claims(request)
        self.received.append(
            (request.headers["idempotency-key"], json.loads(await request.body(), parse_float=Decimal))
        )
        self.holding.set()
        await self.release.wait()
        return Response(status_code=503)  # to a dispatcher already killed: nobody reads it


async def test_fingate_dispatch_killed_during_a_submission_and_restarted_submits_it_again_once(
    store: Store, mongo_uri: str
) -> None:
    """`fingate dispatch` SIGKILLed while its POST to the clearinghouse is in flight; a second one, once the
    lease lapses, submits the Claim again with the same Idempotency-Key, and one ClaimResponse results."""
    f = HoldingClearinghouse()
    async with serving_app(f.app) as address:
        url = f"http://{address}/claims"
        writer = Writer(store)
        draft = await _active_claim(writer)
        await clearinghouse(store, url).run_once()  # the tenant's place in the outbox, taken before activating
        active = await writer.update(
            "Claim", draft["id"], claim(draft["patient"]["reference"].split("/")[1], status="active")
        )
        sid = submission_id("default", active)
        env = dispatch_env(mongo_uri, store, clearinghouse_url=url, dispatch_lease_seconds="1", hooks_timeout="600")
        first = await start_dispatch(env)
        try:
            async with asyncio.timeout(WAIT * 2):  # a fresh process; the machine is shared
                await f.holding.wait()
            first.kill()  # SIGKILL: no `finally`, no lease release
            assert await first.wait() == -signal.SIGKILL
            await end_orphaned_transactions(store)
        finally:
            await stop(first)
            f.release.set()
        (queued,) = await responses(store, active["id"])
        assert queued["outcome"] == "queued"  # what the killed dispatcher left
        second = await start_dispatch(env)
        try:
            async with asyncio.timeout(WAIT * 2):  # polled: the database is the only witness of the answer
                while True:
                    if await responses(store, active["id"]) != [queued]:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await stop(second)
    assert [key for key, _ in f.received] == [sid, sid]  # submitted again, with the same Idempotency-Key
    assert f.received[0][1] == f.received[1][1]
    (answered,) = await responses(store, active["id"])  # exactly one ClaimResponse: the queued one, finished
    assert answered["id"] == queued["id"] and answered["outcome"] == "complete"
    assert {"system": f"{url}#id", "value": "CH-2"} in answered["identifier"]
    history = await store.history("ClaimResponse", answered["id"])
    assert [h["outcome"] for h in history] == ["complete", "queued"]
