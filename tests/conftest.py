"""Shared fixtures: a real database server for the whole run (embedded unless MONGODB_URI is set)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from app.embedded import EmbeddedMongo
from app.store import Store

# The product's request timeout (10 s) bounds speed: on a slow machine a heavy test request could meet it and
# fail for that. Test apps get a bound no healthy request meets; the tests of the timeout set their own.
os.environ.setdefault("FINGATE_REQUEST_TIMEOUT", "120")


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    with EmbeddedMongo(tmp_path_factory.mktemp("secantus")) as db:
        yield db.uri


@contextlib.asynccontextmanager
async def fresh_store(uri: str) -> AsyncIterator[Store]:
    """A Store on a database of its own, dropped afterwards."""
    s = Store(uri, f"test_{uuid.uuid4().hex[:12]}")
    await s.ensure_indexes()
    try:
        yield s
    finally:
        await s.drop_all()
        await s.close()


@pytest.fixture
async def store(mongo_uri: str) -> AsyncIterator[Store]:
    async with fresh_store(mongo_uri) as s:
        yield s


@pytest.fixture(scope="module")
async def demo_store(mongo_uri: str) -> AsyncIterator[Store]:
    """One database per test module with the R5 examples and the demo set loaded."""
    from app.demo import load_demo
    from app.writes import Writer

    async with fresh_store(mongo_uri) as s:
        report = await load_demo(Writer(s))
        assert report.rejected == [], report.rejected
        yield s
