"""The outbox (app/store/outbox.py, app/events): one event per committed write, in its transaction, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app import errors
from app.events import follow, parse_position, public
from app.store import Store
from app.writes import Writer
from tests.test_mutations import PATIENT, claim

WAIT = 30.0  # generous: the machine is shared


def _shape(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["interaction"], e["resourceType"], e["versionId"], e["previousStatus"], e["status"]) for e in events]


async def test_every_write_appends_one_event_in_order(store: Store) -> None:
    writer = Writer(store, request_id="r1")
    patient = await writer.create("Patient", dict(PATIENT))
    draft = await writer.create("Claim", claim(patient["id"]))
    active = await writer.update("Claim", draft["id"], claim(patient["id"], status="active"))
    await writer.update("Claim", draft["id"], claim(patient["id"], status="active"))  # unchanged: no version
    other = await writer.create("Claim", claim(patient["id"]))
    await writer.delete("Claim", other["id"])
    events = await store.events_after(0, 100)
    assert [e["position"] for e in events] == [1, 2, 3, 4, 5]
    assert _shape(events) == [
        ("create", "Patient", "1", None, None),
        ("create", "Claim", "1", None, "draft"),
        ("update", "Claim", "2", "draft", "active"),
        ("create", "Claim", "1", None, "draft"),
        ("delete", "Claim", "1", "draft", None),
    ]
    assert events[2]["id"] == active["id"] and events[2]["requestId"] == "r1"
    assert await store.last_position() == 5
    assert _shape(await store.events_after(2, 100, frozenset({"Patient"}))) == []
    assert [e["position"] for e in await store.events_after(2, 100, frozenset({"Claim"}))] == [3, 4, 5]


async def test_loads_emit_events_and_an_unchanged_load_none(store: Store) -> None:
    writer = Writer(store)
    resource = {**PATIENT, "id": "p-load"}
    assert (await writer.put("Patient", dict(resource)))[0] == "created"
    assert (await writer.put("Patient", dict(resource)))[0] == "unchanged"
    assert (await writer.put("Patient", {**resource, "gender": "female"}))[0] == "updated"
    assert _shape(await store.events_after(0, 100)) == [
        ("create", "Patient", "1", None, None),
        ("update", "Patient", "2", None, None),
    ]


async def test_a_bulk_load_chunk_appends_an_event_per_resource_in_load_order(store: Store) -> None:
    from app.load import Item, load

    patients = [{**PATIENT, "id": f"bulk-{n}"} for n in range(5)]
    refused = {"resourceType": "Patient", "id": "bulk-bad", "gender": "nonsense"}  # a required binding: refused
    items = [Item(f"item {n}", [dict(p)]) for n, p in enumerate([*patients[:2], refused, *patients[2:]])]
    report = await load(Writer(store), [], items=items)
    assert report.created == 5 and len(report.rejected) == 1
    events = await store.events_after(0, 100)
    assert [(e["interaction"], e["id"]) for e in events] == [("create", p["id"]) for p in patients]
    assert await store.db["audit"].count_documents({}) == len(events)


async def test_tenants_have_their_own_positions(store: Store) -> None:
    acme, other = store.for_tenant("acme"), store.for_tenant("other")
    await Writer(acme).create("Patient", dict(PATIENT))
    await Writer(other).create("Patient", dict(PATIENT))
    await Writer(acme).create("Patient", dict(PATIENT))
    assert [e["position"] for e in await acme.events_after(0, 100)] == [1, 2]
    assert [e["position"] for e in await other.events_after(0, 100)] == [1]
    assert await store.events_after(0, 100) == []  # the default tenant wrote nothing


async def test_a_refused_write_leaves_no_event(store: Store) -> None:
    writer = Writer(store)
    # A ClaimResponse needs its request Claim to exist: the rule is checked inside the write's transaction.
    response = {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": {"coding": [{"code": "professional"}]},
        "use": "claim",
        "patient": {"reference": "Patient/nobody"},
        "created": "2026-11-01",
        "insurer": {"display": "Acme"},
        "outcome": "complete",
        "request": {"reference": "Claim/missing"},
    }
    with pytest.raises(errors.FinGateError):
        await writer.create("ClaimResponse", response)
    assert await store.events_after(0, 100) == []
    assert await store.last_position() == 0


async def test_a_failure_after_the_event_is_appended_rolls_both_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event is appended inside the write's transaction: a failure after it leaves neither write nor event."""
    writer = Writer(store)
    patient = await writer.create("Patient", dict(PATIENT))
    appended = Store.append_event

    async def append_then_fail(self: Store, record: dict[str, Any], session: Any) -> None:
        await appended(self, record, session)
        # Seen inside the transaction: the patient's event (not read yet, so still pending) and this one.
        assert await self.db["outbox_pending"].count_documents({}, session=session) == 2
        raise errors.FinGateError(errors.CONFLICT, "forced failure after the event")

    monkeypatch.setattr(Store, "append_event", append_then_fail)
    with pytest.raises(errors.FinGateError, match="forced"):
        await writer.create("Claim", claim(patient["id"]))
    with pytest.raises(errors.FinGateError, match="forced"):
        await writer.update("Patient", patient["id"], {**PATIENT, "gender": "male"})
    monkeypatch.undo()
    assert await store.db["Claim"].count_documents({}) == 0
    assert (await store.get("Patient", patient["id"]))["meta"]["versionId"] == "1"  # type: ignore[index]
    assert [e["position"] for e in await store.events_after(0, 100)] == [1]
    assert await store.last_position() == 1
    await writer.create("Claim", claim(patient["id"]))  # positions stay gapless after the rollbacks
    assert [e["position"] for e in await store.events_after(0, 100)] == [1, 2]


async def test_a_write_without_its_event_is_not_stored(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(self: Store, record: dict[str, Any], session: Any) -> None:
        raise errors.FinGateError(errors.CONFLICT, "no outbox")

    monkeypatch.setattr(Store, "append_event", refuse)
    with pytest.raises(errors.FinGateError, match="no outbox"):
        await Writer(store).create("Patient", dict(PATIENT))
    monkeypatch.undo()
    assert await store.db["Patient"].count_documents({}) == 0
    assert await store.db["audit"].count_documents({}) == 0


async def test_a_follower_sees_every_event_once_in_order_and_wakes_on_commits(store: Store) -> None:
    writer = Writer(store)
    await writer.create("Patient", dict(PATIENT))  # before the follower starts: not followed
    seen: list[int] = []
    got_three = asyncio.Event()

    async def consume() -> None:
        # A long poll: only the in-process commit hint can deliver these within the wait below.
        async for event in follow(store, 1, poll=3600):
            seen.append(event["position"])
            if len(seen) == 3:
                got_three.set()

    task = asyncio.create_task(consume())
    try:
        for _ in range(3):
            await writer.create("Patient", dict(PATIENT))
        await asyncio.wait_for(got_three.wait(), WAIT)
    finally:
        task.cancel()
    assert seen == [2, 3, 4]
    resumed = [e["position"] async for e in _take(follow(store, 2), 2)]
    assert resumed == [3, 4]


async def test_many_followers_share_one_read_per_commit(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty followers of one tenant: each commit costs one outbox read (and one sequencing) for all of them, not
    one each; every follower still gets every event once, in order, its own types only."""
    writer = Writer(store)
    reads: list[int] = []
    real = Store.events_after

    async def counted(self: Store, position: int, limit: int, types: frozenset[str] | None = None) -> Any:
        reads.append(position)
        return await real(self, position, limit, types)

    monkeypatch.setattr(Store, "events_after", counted)
    start = await store.last_position()
    seen: dict[int, list[int]] = {n: [] for n in range(20)}
    done = asyncio.Event()

    async def consume(n: int) -> None:
        async for event in follow(store, start, frozenset({"Patient"}) if n % 2 else None, poll=3600):
            seen[n].append(event["position"])
            if all(len(s) == (3 if k % 2 else 4) for k, s in seen.items()):
                done.set()

    tasks = [asyncio.create_task(consume(n)) for n in range(20)]
    try:
        patient = await writer.create("Patient", dict(PATIENT))
        await writer.create("Claim", claim(patient["id"]))
        for _ in range(2):
            await writer.create("Patient", dict(PATIENT))
        await asyncio.wait_for(done.wait(), WAIT)
    finally:
        for task in tasks:
            task.cancel()
    everything = [start + 1, start + 2, start + 3, start + 4]
    assert all(s == (everything if n % 2 == 0 else [p for p in everything if p != start + 2]) for n, s in seen.items())
    assert len(reads) <= 5, reads  # one as the feed starts, then at most one per commit (close ones share one)


async def test_a_follower_from_before_the_feeds_recent_events_reads_them_itself(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import events

    monkeypatch.setattr(events._Feed, "RECENT", 2)  # the feed keeps two: the rest come from the outbox
    writer = Writer(store)
    start = await store.last_position()
    patient = await writer.create("Patient", dict(PATIENT))
    for _ in range(3):
        await writer.create("Claim", claim(patient["id"]))
    # The feed starts caught up, at a position given (from now, -1, would race the writes below: a late start would
    # begin after them and wait for more, as the CI run that timed out here did).
    live = follow(store, start + 4, poll=3600)
    first = asyncio.ensure_future(anext(live))
    for _ in range(3):
        await writer.create("Patient", dict(PATIENT))
    await asyncio.wait_for(first, WAIT)
    resumed = [e["position"] async for e in _take(follow(store, start, frozenset({"Patient"}), batch=2), 4)]
    assert resumed == [start + 1, start + 5, start + 6, start + 7]  # past the Claims, then the feed's recent ones
    await live.aclose()


async def _take(events: Any, n: int) -> Any:
    async for event in events:
        yield event
        n -= 1
        if n == 0:
            return


def test_positions_are_digits() -> None:
    assert parse_position(None) == -1 and parse_position("12") == 12
    for bad in ("-1", "x", "1.5", "9" * 19):
        with pytest.raises(errors.FinGateError):
            parse_position(bad)
    assert public({"position": 3, "when": __import__("datetime").datetime(2026, 1, 1)})["position"] == "3"


async def test_writers_of_one_tenant_at_once_do_not_conflict_over_the_outbox(store: Store) -> None:
    """Writers only insert pending events; positions are given when read, so concurrent writes all commit
    (a counter incremented by each write made 138 of 160 such creates fail with CONFLICT)."""
    fresh = store.for_tenant("brand-new")
    resources = [
        ("Patient", dict(PATIENT)),
        ("Organization", {"resourceType": "Organization", "name": "Acme"}),
        ("Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Lee"}]}),
        ("Location", {"resourceType": "Location", "name": "Clinic"}),
    ]
    for _ in range(3):
        stored = await asyncio.gather(*(Writer(fresh).create(t, dict(r)) for t, r in resources))
        assert len(stored) == 4
    events = await fresh.events_after(0, 100)
    assert [e["position"] for e in events] == list(range(1, 13))
    assert sorted(e["resourceType"] for e in events) == sorted([t for t, _ in resources] * 3)
    assert await fresh.db["outbox_pending"].count_documents({}) == 0  # all sequenced by the read


async def test_concurrent_readers_sequence_each_event_once(store: Store) -> None:
    writer = Writer(store)
    for _ in range(10):
        await writer.create("Patient", dict(PATIENT))
    views = await asyncio.gather(*(store.events_after(0, 100) for _ in range(6)))
    for found in views:  # a reader that lost the race to sequence reads what the winner wrote (or a prefix)
        assert [e["position"] for e in found] == list(range(1, len(found) + 1))
    everything = await store.events_after(0, 100)
    assert [e["position"] for e in everything] == list(range(1, 11))
    assert len({(e["id"], e["versionId"]) for e in everything}) == 10
