"""Start-up on existing data does no work twice: indexes and ready queries already in place cost a read."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app import cli
from app.explorer import ready_queries
from app.graphql.apq import persist
from app.graphql.compat import graphql_schema
from app.hooks.topics import TOPICS
from app.settings import Settings
from app.store import Store
from tests.harness import schema


async def test_indexes_present_are_not_created_again(store: Store) -> None:
    before = store.commands.count
    await store.ensure_indexes()  # the fixture made them: a marker read and a collection list
    assert store.commands.count - before == 2
    await store.db.drop_collection("Claim")  # a collection gone (with its indexes): all are made again
    await store.ensure_indexes()
    names = [i["name"] async for i in await store.db["Claim"].list_indexes()]
    assert len(names) > 5
    before = store.commands.count
    await store.ensure_indexes()
    assert store.commands.count - before == 2


async def test_ready_queries_stored_are_not_written_again(store: Store, tmp_path: Path) -> None:
    gschema = graphql_schema(schema())
    files = ready_queries()
    assert await persist(store, gschema, files) == []
    before = store.commands.count
    bad = tmp_path / "bad.graphql"
    bad.write_text("{ NoSuchField }")
    refused = await persist(store, gschema, [*files, bad])
    assert [path for path, _ in refused] == [bad]  # still validated, and refused
    assert store.commands.count - before == 1  # one read: nothing written


# -- what `fingate serve` does before /readyz, and the schema built after it (app.cli) -----------------------


class _Recorder:
    """A SchemaBuild stand-in: notes how many database commands had been sent when the build was started."""

    def __init__(self, store: Store) -> None:
        self.store, self.started_at = store, None

    def start(self) -> None:
        if self.started_at is None:
            self.started_at = self.store.commands.count


async def test_the_schema_build_starts_once_the_ready_path_is_done(store: Store) -> None:
    """Built beside the ready path, the schema took the interpreter half the time and /readyz came twice as late."""
    await store.db.drop_collection("Claim")  # an index to make again
    schema = _Recorder(store)
    await cli.ready_path(store, Settings(load_demo=False), schema)  # type: ignore[arg-type]
    assert schema.started_at == store.commands.count  # started after the ready path's last command
    assert [i async for i in await store.db["Claim"].list_indexes()]
    for topic in TOPICS.values():
        assert await store.get("SubscriptionTopic", f"fingate-{topic.code}") is not None


async def test_a_demo_load_runs_beside_the_schema_build(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = _Recorder(store)
    loaded: list[int | None] = []

    async def load_demo(s: Store) -> None:
        loaded.append(schema.started_at)

    monkeypatch.setattr(cli, "load_demo", load_demo)
    await cli.ready_path(store, Settings(load_demo=True), schema)  # type: ignore[arg-type]
    assert loaded == [schema.started_at] and schema.started_at is not None  # started before the (long) load


async def test_a_waiter_that_gives_up_leaves_the_schema_to_the_others() -> None:
    release = threading.Event()
    build = cli.SchemaBuild(lambda: release.wait(60) and "schema")
    build.start()
    first = asyncio.ensure_future(asyncio.wrap_future(build.future))
    await asyncio.sleep(0)
    first.cancel()  # a request cancelled (its client gone, or the server stopping) while the schema is built
    with pytest.raises(asyncio.CancelledError):
        await first
    for _ in range(3):
        await asyncio.sleep(0)  # the cancellation reaches the build's future (a callback on the loop)
    assert not build.future.cancelled()
    release.set()
    assert await asyncio.wrap_future(build.future) == "schema"  # the others still get it; no traceback in the thread


def test_a_server_stopped_before_the_build_starts_builds_nothing() -> None:
    built: list[bool] = []
    build = cli.SchemaBuild(lambda: built.append(True))
    build.future.cancel()  # what the app's waiters do when the server stops first
    build.start()
    assert built == [] and build.future.cancelled()


def test_the_schema_is_built_without_cyclic_collection_which_comes_back_after() -> None:
    enabled_during: list[bool] = []
    build = cli.SchemaBuild(lambda: enabled_during.append(gc.isenabled()))
    build.start()
    build.future.result(timeout=60)
    assert enabled_during == [False]  # the schema's objects live as long as the process: collecting them is waste
    assert gc.isenabled()


def test_the_ready_path_leaves_out_what_only_some_requests_need() -> None:
    """fpdf2 (with fontTools and numpy, about 0.3 s of imports) waits for the first document, stripe (with
    requests, 40 ms) for the first webhook."""
    code = (
        "import sys, app.cli; app.cli._import_app(); import app.http\n"
        "print(sorted(m for m in ('fpdf', 'fontTools', 'numpy', 'stripe', 'requests') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
