"""Start-up on existing data does no work twice: indexes and ready queries already in place cost a read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.explorer import ready_queries
from app.graphql.apq import persist
from app.graphql.compat import graphql_schema
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


def test_the_ready_path_does_not_import_the_pdf_engine() -> None:
    """fpdf2 (with fontTools and numpy, about 0.3 s of imports) waits for the first document."""
    code = "import sys, app.cli, app.http\nprint(sorted(m for m in ('fpdf', 'fontTools', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
