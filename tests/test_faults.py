"""Faults of the embedded database under load: kill -9 and a stall, with nothing confirmed ever lost.

Each test runs its own supervised EmbeddedMongo (never the session's shared one) and the app
in-process; FinGate itself is never restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app import errors
from app.embedded import EmbeddedMongo
from app.http import loads
from app.settings import Settings
from app.store import Store
from tests.harness import client_for, json_with_decimals, serve, wait_ready
from tests.test_embedded import secantus_pids

pytestmark = pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")), reason="kills the embedded database")

REQUEST_TIMEOUT = 3.0  # short, so outages are reported quickly; no assertion is made on seconds
PATIENT_FIELDS = "id meta { versionId }"
GENEROUS = 60.0  # a bound on waiting for a condition, never a measurement


@dataclass
class Faulty:
    db: EmbeddedMongo
    store: Store
    client: httpx.AsyncClient


@pytest.fixture
async def faulty(tmp_path: Path) -> AsyncIterator[Faulty]:
    db = EmbeddedMongo(tmp_path / "db")
    db.start()
    store = Store(db.uri, f"faults_{uuid.uuid4().hex[:8]}")
    try:
        await store.ensure_indexes()
        async with client_for(store, settings=Settings(request_timeout=REQUEST_TIMEOUT), embedded=db) as client:
            yield Faulty(db, store, client)
    finally:
        db.stop()  # first: a stalled database would keep the client's close waiting
        await store.close()


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + GENEROUS
    while not await condition():
        assert time.monotonic() < deadline, f"not {what} within {GENEROUS:.0f} s"
        await asyncio.sleep(0.05)


async def bounded(call: Awaitable[httpx.Response]) -> httpx.Response:
    """An HTTP call that must answer promptly; the bound is generous, the point is that it answers."""
    return await asyncio.wait_for(call, 30)


async def ready(client: httpx.AsyncClient) -> int:
    return (await bounded(client.get("/readyz"))).status_code


async def is_ready(f: Faulty) -> bool:
    return await ready(f.client) == 200


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    headers: httpx.Headers

    @property
    def code(self) -> str | None:
        found = self.body.get("errors")
        return str(found[0]["extensions"]["code"]) if found else None

    @property
    def extensions(self) -> dict[str, Any]:
        return dict(self.body["errors"][0]["extensions"])


async def post(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> Outcome:
    body = json_with_decimals({"query": query, "variables": variables})
    response = await bounded(client.post("/graphql", content=body, headers={"content-type": "application/json"}))
    return Outcome(response.status_code, loads(response.content), response.headers)


def patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


async def create(client: httpx.AsyncClient, family: str) -> Outcome:
    query = f"mutation($res: PatientInput!) {{ PatientCreate(res: $res) {{ {PATIENT_FIELDS} }} }}"
    return await post(client, query, {"res": patient(family)})


async def update(client: httpx.AsyncClient, id: str, family: str, if_match: str) -> Outcome:
    query = (
        "mutation($id: ID!, $res: PatientInput!, $ifMatch: String) "
        f"{{ PatientUpdate(id: $id, res: $res, ifMatch: $ifMatch) {{ {PATIENT_FIELDS} }} }}"
    )
    return await post(client, query, {"id": id, "res": patient(family), "ifMatch": if_match})


def assert_unavailable(outcome: Outcome) -> None:
    assert outcome.code == errors.UNAVAILABLE, outcome.body
    assert outcome.extensions["retryable"] is True
    assert outcome.headers["retry-after"] == str(outcome.extensions["retryAfter"])
    assert outcome.status == 503, "an answer that is all outage, no data, is a 503"


@dataclass
class Ledger:
    """What clients were told, to be checked against what the database holds after recovery."""

    confirmed: list[tuple[str, str, str]] = field(default_factory=list)  # (id, version, family)
    failed_creates: list[str] = field(default_factory=list)  # families
    failed_updates: list[tuple[str, str]] = field(default_factory=list)  # (id, family)
    unknown: list[tuple[dict[str, Any], str, str | None]] = field(default_factory=list)  # (ext, family, previous)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    # Answers that say nothing was written. SecantusDB also reports a WriteConflict between two
    # concurrent creates (distinct ids, same collection), which FinGate reports as CONFLICT.
    FAILED = (errors.UNAVAILABLE, errors.CONFLICT)

    def record(self, outcome: Outcome, family: str, id: str | None, previous: str | None) -> str | None:
        """The resource's confirmed version after this write, or None when it is now uncertain."""
        if outcome.code is None:
            stored = next(iter(outcome.body["data"].values()))
            self.confirmed.append((stored["id"], stored["meta"]["versionId"], family))
            return str(stored["meta"]["versionId"])
        if outcome.code in self.FAILED:
            if id is None:
                self.failed_creates.append(family)
            else:
                self.failed_updates.append((id, family))
            return previous
        if outcome.code == errors.UNKNOWN_OUTCOME:
            self.unknown.append((outcome.extensions, family, previous))
            return None
        self.unexpected.append(outcome.body)
        return previous


async def writer(client: httpx.AsyncClient, ledger: Ledger, name: str, stop: asyncio.Event) -> None:
    """Creates, then updates of what it created (its own, so no two writers race on one resource)."""
    mine: dict[str, str] = {}  # id -> confirmed version
    n = 0
    while not stop.is_set():
        n += 1
        family = f"{name}-{n}"
        if n % 2 and mine:
            id, version = next(iter(mine.items()))
            after = ledger.record(await update(client, id, family, version), family, id, version)
            mine.pop(id)
            if after is not None:
                mine[id] = after  # re-inserted last: the writer cycles through its resources
        else:
            outcome = await create(client, family)
            after = ledger.record(outcome, family, None, None)
            if after is not None:
                mine[ledger.confirmed[-1][0]] = after


async def check(store: Store, ledger: Ledger) -> None:
    assert ledger.unexpected == [], ledger.unexpected
    histories: dict[str, list[tuple[str, str]]] = {}
    for id in {id for id, _, _ in ledger.confirmed} | {id for id, _ in ledger.failed_updates}:
        versions = await store.history("Patient", id)
        histories[id] = [(r["meta"]["versionId"], r["name"][0]["family"]) for r in versions]
    for id, version, family in ledger.confirmed:
        assert (version, family) in histories[id], f"confirmed Patient/{id} v{version} ({family}) was lost"
    for id, family in ledger.failed_updates:
        assert all(f != family for _, f in histories[id]), f"update {family} of Patient/{id} failed yet was stored"
    for family in ledger.failed_creates:
        assert await store.db["Patient"].find_one({"name.family": family}) is None, f"failed create {family} stored"
    for ext, family, previous in ledger.unknown:
        assert ext["resourceType"] == "Patient" and ext["operation"] in ("create", "update"), ext
        current = await store.get("Patient", ext["id"])
        if current is None:  # not stored: only a create may be absent
            assert ext["operation"] == "create" and previous is None, ext
            continue
        # Stored or not, the resource is at one of the two versions, never something in between.
        assert current["meta"]["versionId"] in (ext["version"], previous), (ext, current["meta"])
        if current["meta"]["versionId"] == ext["version"]:
            assert current["name"][0]["family"] == family
    # Every current resource is its newest history entry: no half-committed write.
    for id, versions in histories.items():
        current = await store.get("Patient", id)
        assert current is not None and (current["meta"]["versionId"], current["name"][0]["family"]) == versions[0]


async def confirmed_since(ledger: Ledger, count: int, at_least: int) -> None:
    async def enough() -> bool:
        return len(ledger.confirmed) >= count + at_least

    await eventually(enough, f"{at_least} more confirmed writes")


async def test_kill_9_under_concurrent_writes_loses_nothing_confirmed(faulty: Faulty) -> None:
    f = faulty
    # Each restart waits longer than a request may run: a request sent meanwhile must report the outage.
    f.db.restart_delays = (REQUEST_TIMEOUT + 1.0,) * 3
    ledger, stop = Ledger(), asyncio.Event()
    workers = [asyncio.create_task(writer(f.client, ledger, f"w{i}", stop)) for i in range(4)]
    try:
        for round in range(3):
            await confirmed_since(ledger, len(ledger.confirmed), 12)
            process = f.db.process
            assert process is not None
            os.kill(process.pid, signal.SIGKILL)

            async def not_ready() -> bool:
                return await ready(f.client) == 503

            await eventually(not_ready, "reported by /readyz")
            assert_unavailable(await create(f.client, f"probe-{round}"))
            ledger.failed_creates.append(f"probe-{round}")
            await eventually(lambda: is_ready(f), "ready again")
            await confirmed_since(ledger, len(ledger.confirmed), 12)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert f.db.restarts == 3
    await check(f.store, ledger)
    assert ledger.failed_creates or ledger.failed_updates


async def test_a_stalled_database_is_reported_promptly_then_recovers(
    faulty: Faulty, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = faulty
    existing = await create(f.client, "before")
    assert existing.code is None
    process = f.db.process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    halted(process.pid)  # a signal is delivered asynchronously: only a stopped server is a stalled one
    try:
        assert await ready(f.client) == 503
        read = await post(f.client, "query($id: ID!) { Patient(id: $id) { id } }", {"id": "x"})
        assert_unavailable(read)
        assert_unavailable(await create(f.client, "during"))

        async def slow(*args: Any, **kwargs: Any) -> list[Any]:
            await asyncio.sleep(REQUEST_TIMEOUT * 5)
            return []

        # Cut by the GraphQL layer, not by the driver: the database's silence still makes it an outage.
        with monkeypatch.context() as patched:
            patched.setattr(Store, "search", slow)
            assert_unavailable(await post(f.client, "{ PatientList { id } }", {}))
    finally:
        os.kill(process.pid, signal.SIGCONT)
    await eventually(lambda: is_ready(f), "ready again")
    assert (await create(f.client, "after")).code is None
    assert await f.store.db["Patient"].find_one({"name.family": "during"}) is None


def halted(pid: int) -> None:
    """Until every thread of `pid` is stopped (T) or gone (Z, X, or no longer listed)."""
    deadline = time.monotonic() + GENEROUS
    while True:
        states = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        if all(state in "TtZX" for state in states):
            return
        assert time.monotonic() < deadline, f"process {pid} did not halt: {states}"
        time.sleep(0.001)


@pytest.mark.parametrize("fault", [signal.SIGSTOP, signal.SIGKILL], ids=["stalled", "killed"])
async def test_a_commit_cut_off_is_unknown_outcome_never_conflict_or_failure(
    faulty: Faulty, fault: signal.Signals, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = faulty
    f.db.restart_delays = (0.0,)
    created = await create(f.client, "v1")
    id = next(iter(created.body["data"].values()))["id"]
    process = f.db.process
    assert process is not None
    counted = f.store.commands.started

    def started(event: Any) -> None:  # the fault strikes as the commit is sent
        counted(event)
        if event.command_name == "commitTransaction":
            monkeypatch.setattr(f.store.commands, "started", counted)
            os.kill(process.pid, fault)
            halted(process.pid)  # before the commit leaves: no thread of the server may still run it

    monkeypatch.setattr(f.store.commands, "started", started)
    try:
        outcome = await update(f.client, id, "v2", "1")
    finally:
        if fault == signal.SIGSTOP:
            os.kill(process.pid, signal.SIGCONT)
    assert outcome.code == errors.UNKNOWN_OUTCOME, outcome.body
    assert {k: outcome.extensions[k] for k in ("operation", "resourceType", "id", "version")} == {
        "operation": "update",
        "resourceType": "Patient",
        "id": id,
        "version": "2",
    }
    await eventually(lambda: is_ready(f), "ready again")
    current = await f.store.get("Patient", id)
    assert current is not None
    assert (current["meta"]["versionId"], current["name"][0]["family"]) in (("1", "v1"), ("2", "v2"))


def test_a_restarted_database_still_never_outlives_fingate(tmp_path: Path) -> None:
    """The restarted child is started by the supervisor thread, which lives as long as FinGate:
    kill -9 of `fingate serve` still takes it down (PR_SET_PDEATHSIG)."""
    environment = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    environment.update(FINGATE_DATA_DIR=str(tmp_path), FINGATE_LOAD_DEMO="false")
    log = tmp_path / "serve.log"
    server, port = serve([sys.executable, "-m", "app.cli", "serve"], environment, log, timeout=GENEROUS)
    try:
        (first,) = secantus_pids(tmp_path)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + GENEROUS
        while not (pids := secantus_pids(tmp_path)) or pids == [first]:
            assert time.monotonic() < deadline, f"the database was not restarted:\n{log.read_text()}"
            time.sleep(0.05)
        wait_ready(port, server, log, timeout=GENEROUS)
        server.kill()
        server.wait(30)
        deadline = time.monotonic() + GENEROUS
        while secantus_pids(tmp_path):
            assert time.monotonic() < deadline, f"the restarted database outlived FinGate:\n{log.read_text()}"
            time.sleep(0.05)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for pid in secantus_pids(tmp_path):
            os.kill(pid, signal.SIGKILL)


async def test_healthz_is_503_once_a_streak_of_crashes_spends_the_restart_budget(
    faulty: Faulty, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = faulty
    f.db.restart_delays = (0.0, 0.0)  # two restarts per streak of crashes

    def up(long_enough: bool) -> None:
        """Whether the next crash counts as after a stable run. The supervisor compares the uptime with
        STABLE_SECONDS when the process dies: set here instead of slept out (3.5 s against 3.0), so neither a slow
        restart nor a slow machine moves a crash from one streak to another."""
        monkeypatch.setattr("app.embedded.STABLE_SECONDS", 0.0 if long_enough else math.inf)

    async def kill_then_wait_for_restart(restarts: int) -> None:
        process = f.db.process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)

        async def relaunched() -> bool:
            return f.db.restarts == restarts and await is_ready(f)

        await eventually(relaunched, f"restart {restarts}")

    up(long_enough=True)  # each crash starts a new streak
    for restarts in (1, 2):
        await kill_then_wait_for_restart(restarts)
    up(long_enough=False)  # a streak of crashes, each within STABLE_SECONDS of its start
    await kill_then_wait_for_restart(3)
    assert not f.db.gave_up
    process = f.db.process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)

    async def unhealthy() -> bool:
        return (await bounded(f.client.get("/healthz"))).status_code == 503

    await eventually(unhealthy, "given up")
    assert f.db.restarts == 3 and f.db.gave_up and await ready(f.client) == 503
