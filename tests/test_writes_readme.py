"""The README's "Idempotent writes, patches and transactions" examples answer as it says, on the demo data."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.store import Store
from tests.harness import client_for, gql, ok

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SECTION = README.split("## Idempotent writes, patches and transactions", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"```graphql\n(.*?)```", SECTION, re.S)


@pytest.fixture
async def client(demo_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(demo_store) as c:
        yield c


def test_the_section_has_its_examples() -> None:
    assert len(BLOCKS) == 3


async def test_conditional_create_returns_the_demo_payer_unchanged(client: httpx.AsyncClient) -> None:
    before = ok(await gql(client, '{ Organization(id: "demo-payer") { id name meta { versionId } } }'))["Organization"]
    for _ in range(2):
        assert ok(await gql(client, BLOCKS[0]))["OrganizationCreate"] == before


async def test_the_patch_example(client: httpx.AsyncClient) -> None:
    patched = ok(await gql(client, BLOCKS[1]))["PatientPatch"]
    assert patched["birthDate"] == "1984-02-29" and patched["gender"] == "unknown"
    assert int(patched["meta"]["versionId"]) >= 2


async def test_the_transaction_example(client: httpx.AsyncClient) -> None:
    result = ok(await gql(client, BLOCKS[2]))["transaction"]
    assert [r["status"] for r in result] == ["201 Created", "200 OK", "201 Created"]
    assert [r["outcome"] for r in result] == ["created", "updated", "created"]
    claim = result[1]["resource"]
    assert claim["status"] == "active" and result[1]["location"].endswith("/_history/2")
    assert claim["billing"] == {"paid": [{"value": "80.00"}], "outstanding": [{"value": "0.00"}]}
