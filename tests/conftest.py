"""Shared fixtures: a real database server for the whole run (embedded unless MONGODB_URI is set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from app.embedded import EmbeddedMongo
from app.store import Store


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    with EmbeddedMongo(tmp_path_factory.mktemp("secantus")) as db:
        yield db.uri


@pytest.fixture
async def store(mongo_uri: str) -> AsyncIterator[Store]:
    """A Store on a database of its own, dropped afterwards."""
    s = Store(mongo_uri, f"test_{uuid.uuid4().hex[:12]}")
    await s.ensure_indexes()
    try:
        yield s
    finally:
        await s.drop_all()
        await s.close()
