"""The read API over HTTP and the real database: examples round-trip, traversal, reverse references, paging."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.demo import example_items
from app.fhir.model import SERVED_RESOURCES, spec
from app.store import Store
from app.writes import Writer
from tests.harness import (
    client_for,
    error_codes,
    gql,
    ok,
    selection_for,
    without_nulls,
)


@pytest.fixture(scope="module")
async def demo(demo_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(demo_store) as client:
        yield client


def _expected(value: Any, type_name: str) -> Any:
    """The example as GraphQL returns it: FHIR decimals as strings of their digits."""
    td = spec().types[type_name]
    out = {}
    for key, item in value.items():
        if key == "resourceType" or key.startswith("_"):
            out[key] = item
            continue
        element = next(e for e in td.elements if key in {e.json_name(t) for t in e.types} or e.name == key)
        fhir_type = next((t for t in element.types if element.json_name(t) == key), element.types[0])
        out[key] = _convert(item, fhir_type)
    return out


def _convert(item: Any, fhir_type: str) -> Any:
    if isinstance(item, list):
        return [_convert(i, fhir_type) for i in item]
    if fhir_type == "decimal":
        return str(item)
    if fhir_type == "Resource":
        if item["resourceType"] not in SERVED_RESOURCES:  # GraphQL can only name it: UnservedResource
            return {"resourceType": item["resourceType"], "id": item["id"]}
        return _expected(item, item["resourceType"])
    if isinstance(item, dict) and fhir_type in spec().types:
        return _expected(item, fhir_type)
    return item


def _examples() -> list[tuple[str, dict[str, Any]]]:
    return [(item.source, item.resources[0]) for item in example_items()]


async def test_every_example_round_trips(demo: httpx.AsyncClient) -> None:
    """Each vendored R5 example, queried with all its fields, comes back equal to its input (modulo meta)."""
    failures = []
    for source, resource in _examples():
        rtype = resource["resourceType"]
        fields = {k: v for k, v in resource.items() if k != "meta"}
        result = await gql(demo, f'{{ {rtype}(id: "{resource["id"]}") {{ {selection_for(fields)} }} }}')
        if "errors" in result:
            failures.append((Path(source).name, result["errors"][0]["message"]))
            continue
        got = without_nulls(result["data"][rtype])
        if got != _expected(fields, rtype):
            failures.append((Path(source).name, "differs"))
    assert failures == []


TRAVERSAL = """
query Payment($id: ID!) {
  PaymentReconciliation(id: $id) {
    id status amount { value currency }
    allocation {
      amount { value }
      target { reference resource { ... on Claim { id status total { value } patient { resource { ... on Patient { id } } } } } }
      response { resource { ... on ClaimResponse { id outcome payment { amount { value } } } } }
    }
  }
}
"""


async def test_traversal_walks_allocations_to_claims_and_responses(demo: httpx.AsyncClient) -> None:
    data = ok(await gql(demo, TRAVERSAL, {"id": "demo-payment-1"}))["PaymentReconciliation"]
    assert data["status"] == "active"
    assert len(data["allocation"]) == 7
    total = Decimal(0)
    for allocation in data["allocation"]:
        claim = allocation["target"]["resource"]
        response = allocation["response"]["resource"]
        assert claim["id"].startswith("demo-claim-") and claim["status"] == "active"
        assert claim["patient"]["resource"]["id"].startswith("demo-patient-")
        assert response["outcome"] == "complete"
        assert response["payment"]["amount"]["value"] == allocation["amount"]["value"]
        assert isinstance(allocation["amount"]["value"], str)  # money is a string of exact digits
        total += Decimal(allocation["amount"]["value"])
    assert str(total) == data["amount"]["value"]


async def test_unresolvable_references_are_null_not_errors(demo: httpx.AsyncClient) -> None:
    # R5's own ER2500 points at its claims by identifier and by external URL only.
    result = await gql(
        demo,
        '{ PaymentReconciliation(id: "ER2500") { allocation { target { reference resource { ... on Claim { id } } } } } }',
    )
    allocations = ok(result)["PaymentReconciliation"]["allocation"]
    assert allocations and all(a["target"] is None or a["target"]["resource"] is None for a in allocations)


async def test_contained_references_resolve(demo: httpx.AsyncClient) -> None:
    claim = next(r for _, r in _examples() if r["resourceType"] == "Claim" and r.get("contained"))
    contained_ids = {c["id"] for c in claim["contained"]}
    query = f'{{ Claim(id: "{claim["id"]}") {{ contained {{ ... on Organization {{ id }} ... on Coverage {{ id }} ... on Practitioner {{ id }} ... on Patient {{ id }} ... on Location {{ id }} }} provider {{ reference resource {{ ... on Organization {{ id name }} ... on Practitioner {{ id }} }} }} }} }}'
    data = ok(await gql(demo, query))["Claim"]
    ref = data["provider"]["reference"]
    if ref.startswith("#"):
        assert data["provider"]["resource"]["id"] == ref[1:]
        assert ref[1:] in contained_ids


async def test_reverse_references(demo: httpx.AsyncClient) -> None:
    query = '{ Claim(id: "demo-claim-03") { id ClaimResponseList(_reference: request) { id outcome } PaymentReconciliationList(_reference: allocation_target) { id } } }'
    data = ok(await gql(demo, query))["Claim"]
    assert [r["id"] for r in data["ClaimResponseList"]] == ["demo-claimresponse-03"]
    assert [r["id"] for r in data["PaymentReconciliationList"]] == ["demo-payment-1"]


async def test_search_and_offset_paging(demo: httpx.AsyncClient) -> None:
    query = '{ PaymentReconciliationList(payment_issuer: "Organization/demo-payer", _sort: "-created") { id created } }'
    ids = [r["id"] for r in ok(await gql(demo, query))["PaymentReconciliationList"]]
    assert ids == ["demo-payment-3", "demo-payment-2", "demo-payment-1"]
    page = ok(
        await gql(demo, '{ ClaimList(patient: "demo-patient-1", _count: 2, _offset: 2, _sort: "created") { id } }')
    )
    assert [c["id"] for c in page["ClaimList"]] == ["demo-claim-07", "demo-claim-10"]


async def test_connection_cursor_walks_every_page(demo: httpx.AsyncClient) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        args = '_count: 6, insurer: "Organization/demo-payer"' + (f', _cursor: "{cursor}"' if cursor else "")
        conn = ok(await gql(demo, f"{{ ClaimConnection({args}) {{ count next edges {{ resource {{ id }} }} }} }}"))[
            "ClaimConnection"
        ]
        assert conn["count"] == 20
        seen += [e["resource"]["id"] for e in conn["edges"]]
        pages += 1
        cursor = conn["next"]
        if cursor is None:
            break
    assert pages == 4
    assert seen == sorted(seen) and len(set(seen)) == 20


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ('{ Claim(id: "nope") { id } }', "NOT_FOUND"),
        ("{ ClaimList(_count: 1001) { id } }", "BAD_USER_INPUT"),
        ('{ ClaimList(created: "yesterday") { id } }', "BAD_USER_INPUT"),
        ('{ ClaimList(_sort: "nonsense") { id } }', "BAD_USER_INPUT"),
        ('{ ClaimConnection(_cursor: "garbage!") { count } }', "BAD_USER_INPUT"),
        ("{ Claim { id } }", "BAD_USER_INPUT"),
        ("{ NoSuchThing }", "BAD_USER_INPUT"),
    ],
)
async def test_bad_reads_get_clear_codes(demo: httpx.AsyncClient, query: str, code: str) -> None:
    result = await gql(demo, query)
    assert error_codes(result) == [code]
    assert "Traceback" not in str(result)


async def _reconciliation_with(store: Store, n: int) -> str:
    """A PaymentReconciliation with `n` allocations, each to its own Claim and ClaimResponse."""
    writer = Writer(store)
    pid = f"bound-{n}"
    for i in range(n):
        claim = {
            "resourceType": "Claim", "id": f"{pid}-c{i}", "status": "active", "use": "claim", "created": "2026-01-02",
            "type": {"coding": [{"code": "professional"}]}, "patient": {"reference": "Patient/demo-patient-1"},
            "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/demo-patient-1-coverage"}}],
            "total": {"value": Decimal("10.10"), "currency": "USD"},
        }  # fmt: skip
        await writer.create("Claim", claim, keep_id=True)
        response = {
            "resourceType": "ClaimResponse", "id": f"{pid}-r{i}", "status": "active", "use": "claim", "outcome": "complete",
            "created": "2026-01-03", "type": {"coding": [{"code": "professional"}]},
            "patient": {"reference": "Patient/demo-patient-1"}, "insurer": {"reference": "Organization/demo-payer"},
            "request": {"reference": f"Claim/{pid}-c{i}"},
        }  # fmt: skip
        await writer.create("ClaimResponse", response, keep_id=True)
    payment = {
        "resourceType": "PaymentReconciliation", "id": pid, "status": "active", "created": "2026-01-04", "date": "2026-01-04",
        "type": {"coding": [{"code": "payment"}]}, "amount": {"value": Decimal("10.10") * n, "currency": "USD"},
        "allocation": [
            {"target": {"reference": f"Claim/{pid}-c{i}"}, "response": {"reference": f"ClaimResponse/{pid}-r{i}"}}
            for i in range(n)
        ],
    }  # fmt: skip
    await writer.create("PaymentReconciliation", payment, keep_id=True)
    return pid


@pytest.mark.parametrize("n", [10, 50, 200])
async def test_commands_are_bounded_by_levels_and_types_not_items(store: Store, n: int) -> None:
    # A database of its own: written into the module's demo data, these Claims of demo-patient-1 were seen by the
    # module's searches of that patient's Claims whenever they ran after this test.
    await Writer(store).create("Patient", {"resourceType": "Patient", "id": "demo-patient-1"}, keep_id=True)
    pid = await _reconciliation_with(store, n)
    async with client_for(store) as client:
        before = store.commands.count
        data = ok(await gql(client, TRAVERSAL, {"id": pid}))["PaymentReconciliation"]
        used = store.commands.count - before
    assert len(data["allocation"]) == n
    assert all(a["target"]["resource"]["patient"]["resource"]["id"] == "demo-patient-1" for a in data["allocation"])
    # Three levels, one find per type in each: the reconciliation; its Claims and its ClaimResponses (sent
    # together); the Claims' Patients. The same for 10, 50 or 200 allocations.
    assert used == 4, used


async def _allocated_payments(store: Store) -> None:
    """Claims a, b, c; payments pa1..pa5 allocate to a, pab to a and b, pb1 and pb2 to b (created in that order)."""
    writer = Writer(store)
    for cid in ("a", "b", "c"):
        claim = {
            "resourceType": "Claim", "id": cid, "status": "active", "use": "claim", "created": "2026-01-01",
            "type": {"coding": [{"code": "professional"}]}, "patient": {"reference": "Patient/p"},
            "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "plan"}}],
        }  # fmt: skip
        await writer.create("Claim", claim, keep_id=True)
    payments = [*((f"pa{i}", f"2026-01-0{i}", ["a"]) for i in range(1, 6)), ("pab", "2026-01-06", ["a", "b"])]
    payments += [("pb1", "2026-01-02", ["b"]), ("pb2", "2026-01-03", ["b"])]
    for pid, created, claims in payments:
        payment = {
            "resourceType": "PaymentReconciliation", "id": pid, "status": "active", "created": created, "date": created,
            "type": {"coding": [{"code": "payment"}]}, "amount": {"value": Decimal("1.00"), "currency": "USD"},
            "allocation": [{"target": {"reference": f"Claim/{c}"}} for c in claims],
        }  # fmt: skip
        await writer.create("PaymentReconciliation", payment, keep_id=True)
    # The newest payment to a `Claim/a`, but another tenant's: it must never show.
    other = store.for_tenant("other")
    stranger = {**payment, "id": "x", "created": "2026-12-31", "allocation": [{"target": {"reference": "Claim/a"}}]}
    await other.db["PaymentReconciliation"].insert_one(other._stored("PaymentReconciliation", stranger))


def _payments_of(data: dict[str, Any], field: str = "PaymentReconciliationList") -> dict[str, list[str]]:
    return {c["id"]: [p["id"] for p in c[field]] for c in data["ClaimList"]}


REVERSE = "PaymentReconciliationList(_reference: allocation_target, _count: {count}, _sort: {sort!r}) {{ id }}"


async def test_reverse_lists_are_cut_to_count_in_the_database(store: Store) -> None:
    await _allocated_payments(store)
    async with client_for(store) as client:

        async def run(query: str) -> tuple[dict[str, Any], int, int]:
            commands, documents = store.commands.count, store.commands.documents
            data = ok(await gql(client, query.replace("'", '"')))
            return data, store.commands.count - commands, store.commands.documents - documents

        batched = "{ ClaimList { id " + REVERSE.format(count=2, sort="-created") + " } }"
        data, commands, documents = await run(batched)
        assert _payments_of(data) == {"a": ["pab", "pa5"], "b": ["pab", "pb2"], "c": []}
        # One command per level (one type each here), and no more than targets x (_count + 1) documents cross the wire:
        # the one past `_count` tells that more exist (`extensions.truncated`).
        assert (commands, documents) == (2, 3 + 3 + 3)

        single = '{ Claim(id: "b") { id ' + REVERSE.format(count=2, sort="created") + " } }"
        data, commands, documents = await run(single)
        assert [p["id"] for p in data["Claim"]["PaymentReconciliationList"]] == ["pb1", "pb2"]
        assert (commands, documents) == (2, 1 + 3)  # b has 3: the third only tells that more exist

        everything = "{ ClaimList { id " + REVERSE.format(count=10, sort="-created") + " } }"
        data, _, _ = await run(everything)
        assert _payments_of(data)["a"] == ["pab", "pa5", "pa4", "pa3", "pa2", "pa1"]

        two_counts = (
            "{ ClaimList { id one: " + REVERSE.format(count=1, sort="-created")
            + " three: " + REVERSE.format(count=3, sort="-created") + " } }"
        )  # fmt: skip
        data, commands, documents = await run(two_counts)
        assert _payments_of(data, "one") == {"a": ["pab"], "b": ["pab"], "c": []}
        assert _payments_of(data, "three") == {"a": ["pab", "pa5", "pa4"], "b": ["pab", "pb2", "pb1"], "c": []}
        assert (commands, documents) == (2, 3 + 4 + 3)

        none = "{ ClaimList { id " + REVERSE.format(count=0, sort="-created") + " } }"
        data, commands, documents = await run(none)
        assert _payments_of(data) == {"a": [], "b": [], "c": []}
        assert (commands, documents) == (2, 3 + 2)  # `_count: 0` counts: one row per target with matches


@pytest.mark.parametrize("sort", ["created", "-created", "disposition,-created", None])
async def test_batched_reverse_lists_keep_the_single_target_order(store: Store, sort: str | None) -> None:
    # Sort values missing on some resources: the aggregate must order them as the single-target find does.
    docs = []
    for i in range(40):
        r: dict[str, Any] = {
            "resourceType": "ClaimResponse", "id": f"r{i:02}", "status": "active", "meta": {"versionId": "1"},
            "insurer": {"reference": f"Organization/o{i % 2}"}, "requestor": {"reference": f"Organization/o{i % 3}"},
        }  # fmt: skip
        if i % 3:
            r["created"] = f"2026-01-{1 + i % 7:02}"
        if i % 4 == 0:
            r["disposition"] = f"d{i % 5}"
        docs.append(store._stored("ClaimResponse", r))
    await store.db["ClaimResponse"].insert_many(docs)
    targets = ["Organization/o0", "Organization/o1", "Organization/o2"]
    for code in ("insurer", "requestor"):
        batched = await store.referencing("ClaimResponse", code, targets, {}, sort, 5)
        for target in targets:
            alone = await store.referencing("ClaimResponse", code, [target], {}, sort, 5)
            assert batched.get(target) == alone.get(target), (code, target)
    assert [len(batched[t]) for t in targets] == [5, 5, 5]
