"""Reads ask for what the operation selects: the elements per type, and the projections sent to the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from graphql import parse
from pymongo import monitoring

from app.graphql.compat import graphql_schema
from app.graphql.projection import ALWAYS, elements
from app.settings import Settings
from app.store import Store
from tests.harness import client_for, gql, ok, schema


def _elements(query: str, name: str | None = None) -> Any:
    return elements(graphql_schema(schema()), parse(query), name)


CASES: dict[str, tuple[str, dict[str, set[str] | None] | None]] = {
    "a reconciliation and what it settles": (
        '{ PaymentReconciliation(id: "x") { id status allocation { amount { value }'
        " target { resource { ... on Claim { total { value } } ... on Invoice { status } } } } } }",
        {
            "PaymentReconciliation": {"status", "allocation"},
            "Claim": {"total"},
            "Invoice": {"status"},
        },
    ),
    "fragments, aliases, a search": (
        'query Q { ClaimList(status: "active") { ...F when: created } } fragment F on Claim { id use patient { display } }',
        {"Claim": {"use", "patient", "created"}},
    ),
    "a reverse list needs only the id": (
        '{ Claim(id: "x") { ClaimResponseList(_reference: request) { outcome } } }',
        {"Claim": set(), "ClaimResponse": {"outcome"}},
    ),
    "a billing view reads the whole resource": (
        '{ Claim(id: "x") { id billing { balance { value } } } }',
        {"Claim": None},
    ),
    "a keyword-named element": ("{ EncounterList { class { text } } }", {"Encounter": {"class"}}),
    "a Connection's resources": (
        "{ ClaimConnection { count edges { resource { ... on Claim { status } } } } }",
        {"Claim": {"status"}},
    ),
    "a mutation reads whole resources": ('mutation { ClaimDelete(id: "x") { id } }', None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_elements_per_type(case: str) -> None:
    query, expected = CASES[case]
    found = _elements(query)
    if expected is None:
        assert found is None
        return
    want = {t: None if e is None else frozenset(e | ALWAYS) for t, e in expected.items()}
    assert {t: found[t] for t in want} == want
    assert set(found) == set(want)


class _Finds(monitoring.CommandListener):
    """The projections of the reads sent to one database (registered for the clients made after it)."""

    def __init__(self) -> None:
        self.db: str | None = None
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.db and event.command_name in ("find", "aggregate"):
            self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_LISTENER = _Finds()
monitoring.register(_LISTENER)


@pytest.fixture
async def watched(mongo_uri: str, demo_store: Store) -> AsyncIterator[Store]:
    store = Store(mongo_uri, demo_store.db.name)
    _LISTENER.db, _LISTENER.sent = demo_store.db.name, []
    try:
        yield store
    finally:
        _LISTENER.db = None
        await store.close()


QUERY = """{
  PaymentReconciliation(id: "demo-payment-1") {
    id status
    allocation { target { resource { ... on Claim { id total { value } } } } response { reference } }
  }
  ClaimList(insurer: "Organization/demo-payer", _count: 3) { id created }
}"""


@pytest.mark.parametrize("compiled", [True, False])
async def test_reads_ask_for_the_selected_elements_on_both_paths(watched: Store, compiled: bool) -> None:
    async with client_for(watched, settings=Settings(compiled=compiled)) as client:
        projected = ok(await gql(client, QUERY))
    sent = _LISTENER.sent
    _LISTENER.sent = []
    async with client_for(watched, settings=Settings(compiled=compiled, projection=False)) as client:
        assert ok(await gql(client, QUERY)) == projected  # the same answer as from whole resources
    unprojected = _LISTENER.sent

    def projection(collection: str, commands: list[dict[str, Any]]) -> set[str] | None:
        (command,) = [c for c in commands if c.get("find") == collection]
        return set(command["projection"]) if "projection" in command else None

    assert projection("PaymentReconciliation", sent) == {"id", "resourceType", "contained", "status", "allocation"}
    # One set per type for the whole operation (the references' Claims and the listed ones share reads).
    claim = {"id", "resourceType", "contained", "total", "created"}
    assert projection("Claim", [c for c in sent if "sort" not in c]) == claim
    assert projection("Claim", [c for c in sent if "sort" in c]) == claim
    assert projection("PaymentReconciliation", unprojected) is None


PAGED = """{
  ClaimConnection(insurer: "Organization/demo-payer", _count: 2, _sort: "-created") {
    count next last edges { resource { ... on Claim { id created } } }
  }
  ClaimHistory(id: "demo-claim-01") { id status meta { versionId } }
  Patient(id: "demo-patient-1") { ClaimList(_reference: patient, _count: 2, _sort: "created") { id total { value } } }
}"""
NEXT = "{ ClaimConnection(_cursor: $cursor) { count next edges { resource { ... on Claim { id created } } } } }"


@pytest.mark.parametrize("compiled", [True, False])
async def test_pages_history_and_a_reverse_list_read_the_selected_elements(watched: Store, compiled: bool) -> None:
    """A Connection page (and the page its cursor leads to), a history and a one-target reverse list ask for the
    selected elements, and the page's sort keys (which place its cursors): the same answers as whole resources."""

    async def answers(client: Any) -> list[Any]:
        first = ok(await gql(client, PAGED))
        follow = "query($cursor: String!) " + NEXT
        then = [ok(await gql(client, follow, {"cursor": first["ClaimConnection"][k]})) for k in ("next", "last")]
        return [first, *then]

    async with client_for(watched, settings=Settings(compiled=compiled)) as client:
        projected = await answers(client)
    sent, _LISTENER.sent = _LISTENER.sent, []
    async with client_for(watched, settings=Settings(compiled=compiled, projection=False)) as client:
        assert await answers(client) == projected
    unprojected, _LISTENER.sent = _LISTENER.sent, []
    assert len(projected[0]["ClaimConnection"]["edges"]) == 2 and projected[1]["ClaimConnection"]["edges"]
    assert projected[0]["ClaimHistory"] and projected[0]["Patient"]["ClaimList"]

    # One set per type for the whole operation: the first one's Claims are its page's, history's and list's.
    claim = {"id", "resourceType", "contained", "created", "status", "meta", "total"}
    pages = [c for c in sent if c.get("find") == "Claim" and "limit" in c and "patient" not in str(c["filter"])]
    sort_keys = {"_search.created_sort", "_id"}
    assert [set(c["projection"]) for c in pages] == [
        claim | sort_keys,  # the first page
        *[{"id", "resourceType", "contained", "created"} | sort_keys] * 2,  # `next` and `last`, in their operation
    ]
    (reverse,) = [c for c in sent if c.get("find") == "Claim" and "patient" in str(c["filter"])]
    assert set(reverse["projection"]) == claim
    (history,) = [c for c in sent if c.get("find") == "Claim_history"]
    assert set(history["projection"]) == {"_id", "deleted", *(f"resource.{e}" for e in claim)}
    assert all("projection" not in c for c in unprojected if c.get("find") == "Claim")  # whole resources
