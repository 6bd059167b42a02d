"""Mutations over HTTP and the real database: versions, history, ifMatch, races, status rules, bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from bson.decimal128 import Decimal128
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import STATUS_RULE, FinGateError
from app.http import loads
from app.settings import Settings
from app.store import Store, decimal_from_bid, decimal_to_bid
from app.writes import Writer, unchanged
from tests.harness import client_for, error_codes, gql, json_with_decimals, ok


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    # A body limit above the validation layer's own 1 MiB string limit, so "oversized string" reaches it.
    async with client_for(store, settings=Settings(max_body_bytes=4 << 20)) as c:
        yield c


PATIENT = {"resourceType": "Patient", "name": [{"family": "Rivera"}]}
PAYER = {"resourceType": "Organization", "name": "Acme Health"}


def claim(patient_id: str, status: str = "draft", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Claim",
        "status": status,
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim",
        "patient": {"reference": f"Patient/{patient_id}"},
        "created": "2026-11-01T10:00:00Z",
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Acme plan"}}],
        "item": [
            {
                "sequence": 1,
                "productOrService": {"coding": [{"code": "99213"}]},
                "unitPrice": {"value": Decimal("100.10"), "currency": "USD"},
            }
        ],
        "total": {"value": Decimal("100.10"), "currency": "USD"},
        **extra,
    }


async def post_raw(client: httpx.AsyncClient, body: str) -> dict[str, Any]:
    response = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    return loads(response.content)  # type: ignore[no-any-return]


async def create(
    client: httpx.AsyncClient,
    rtype: str,
    resource: dict[str, Any],
    fields: str = "id meta { versionId lastUpdated } status",
) -> dict[str, Any]:
    body = json_with_decimals(
        {
            "query": f"mutation($res: {rtype}Input!) {{ {rtype}Create(res: $res) {{ {fields} }} }}",
            "variables": {"res": resource},
        }
    )
    return await post_raw(client, body)


async def update(
    client: httpx.AsyncClient,
    rtype: str,
    id: str,
    resource: dict[str, Any],
    if_match: str | None = None,
    fields: str = "id meta { versionId } status",
) -> dict[str, Any]:
    body = json_with_decimals(
        {
            "query": f"mutation($id: ID!, $res: {rtype}Input!, $ifMatch: String) {{ {rtype}Update(id: $id, res: $res, ifMatch: $ifMatch) {{ {fields} }} }}",
            "variables": {"id": id, "res": resource, "ifMatch": if_match},
        }
    )
    return await post_raw(client, body)


async def setup_patient(client: httpx.AsyncClient) -> str:
    return str(ok(await create(client, "Patient", PATIENT, "id"))["PatientCreate"]["id"])


def _same(a: Decimal, b: Decimal) -> bool:
    return a.as_tuple() == b.as_tuple() or (a.is_nan() and b.is_nan() and a.is_signed() == b.is_signed())


@given(st.binary(min_size=16, max_size=16))
@settings(max_examples=2000, deadline=None)
def test_the_fast_decimal128_decoder_is_pymongos_on_any_bits(bid: bytes) -> None:
    value = Decimal128.from_bid(bid)
    assert _same(decimal_from_bid(value), value.to_decimal())


@given(st.decimals(allow_nan=False, allow_infinity=False) | st.sampled_from([Decimal("-0.00"), Decimal("1E+6111")]))
@settings(max_examples=2000, deadline=None)
def test_the_fast_decimal128_decoder_keeps_every_digit(number: Decimal) -> None:
    try:
        value = Decimal128(number)
    except Exception:  # more digits or a wider exponent than Decimal128 holds: the write path refuses those
        return
    assert _same(decimal_from_bid(value), value.to_decimal())
    assert str(decimal_from_bid(value)) == str(value.to_decimal())


@given(
    st.decimals(allow_nan=True, allow_infinity=True)
    | st.decimals(places=2, min_value=-(10**9), max_value=10**9)
    | st.sampled_from(
        [
            Decimal("-0.00"),
            Decimal("0E-6176"),
            Decimal("9" * 34),
            Decimal("9" * 35),
            Decimal("1E-6177"),
            Decimal("-1E-6176"),
        ]
    )
    | st.sampled_from([Decimal("1E+6111"), Decimal("1E+6112"), Decimal("12E+6110"), Decimal("0E+6112")])
)
@settings(max_examples=3000, deadline=None)
def test_the_fast_decimal128_encoder_is_pymongos(number: Decimal) -> None:
    try:
        expected = Decimal128(number)
    except Exception as exc:  # what PyMongo refuses, the fast path refuses alike (it hands those to PyMongo)
        with pytest.raises(type(exc)):
            decimal_to_bid(number)
        return
    assert decimal_to_bid(number).bid == expected.bid


async def test_money_keeps_its_digits_through_create_update_history(client: httpx.AsyncClient, store: Store) -> None:
    pid = await setup_patient(client)
    created = ok(await create(client, "Claim", claim(pid), "id total { value currency } item { unitPrice { value } }"))[
        "ClaimCreate"
    ]
    assert created["total"] == {"value": "100.10", "currency": "USD"}
    assert created["item"][0]["unitPrice"]["value"] == "100.10"
    # Read without FinGate's codec: MongoDB itself holds a Decimal128 with the same digits.
    stored = await store.client.get_database(store.db.name)["Claim"].find_one({"id": created["id"]})
    assert stored is not None
    assert stored["total"]["value"] == Decimal128("100.10")
    changed = claim(pid, total={"value": Decimal("7.10"), "currency": "USD"})
    ok(await update(client, "Claim", created["id"], changed))
    history = ok(
        await gql(client, f'{{ ClaimHistory(id: "{created["id"]}") {{ meta {{ versionId }} total {{ value }} }} }}')
    )["ClaimHistory"]
    assert [(h["meta"]["versionId"], h["total"]["value"]) for h in history] == [("2", "7.10"), ("1", "100.10")]


async def test_versions_count_up_and_if_match_guards(client: httpx.AsyncClient, store: Store) -> None:
    pid = await setup_patient(client)
    created = ok(await create(client, "Claim", claim(pid)))["ClaimCreate"]
    assert created["meta"]["versionId"] == "1" and created["meta"]["lastUpdated"].endswith("Z")
    cid = created["id"]
    changed = claim(pid, use="preauthorization")
    assert ok(await update(client, "Claim", cid, changed, if_match="1"))["ClaimUpdate"]["meta"]["versionId"] == "2"
    stale = await update(client, "Claim", cid, claim(pid, use="claim"), if_match="1")
    assert error_codes(stale) == ["CONFLICT"]
    current = await store.get("Claim", cid)
    assert current is not None and current["meta"]["versionId"] == "2" and current["use"] == "preauthorization"


async def test_racing_writers_one_wins(client: httpx.AsyncClient, store: Store) -> None:
    # Every racer reads version N; only once all have read (the gather) do they all write with ifMatch N.
    # Whatever the server's speed, exactly one wins per version and every other gets CONFLICT.
    pid = await setup_patient(client)
    cid = ok(await create(client, "Claim", claim(pid)))["ClaimCreate"]["id"]
    racers = 8
    read = f'{{ Claim(id: "{cid}") {{ meta {{ versionId }} total {{ value }} }} }}'
    for version in ("1", "2", "3"):
        seen = await asyncio.gather(*(gql(client, read) for _ in range(racers)))
        assert {ok(r)["Claim"]["meta"]["versionId"] for r in seen} == {version}
        totals = [Decimal(f"{version}{n}.10") for n in range(racers)]  # each racer writes its own content
        results = await asyncio.gather(
            *(
                update(client, "Claim", cid, claim(pid, total={"value": total, "currency": "USD"}), if_match=version)
                for total in totals
            )
        )
        winners = [n for n, r in enumerate(results) if "errors" not in r]
        assert len(winners) == 1, results
        assert results[winners[0]]["data"]["ClaimUpdate"]["meta"]["versionId"] == str(int(version) + 1)
        assert all(error_codes(r) == ["CONFLICT"] for n, r in enumerate(results) if n != winners[0])
        assert ok(await gql(client, read))["Claim"]["total"]["value"] == str(totals[winners[0]])  # the winner's content
    history = await store.history("Claim", cid)
    assert [h["meta"]["versionId"] for h in history] == ["4", "3", "2", "1"]


async def test_lifecycle_draft_active_cancelled(client: httpx.AsyncClient, store: Store) -> None:
    pid = await setup_patient(client)
    cid = ok(await create(client, "Claim", claim(pid)))["ClaimCreate"]["id"]
    assert ok(await update(client, "Claim", cid, claim(pid, status="active")))["ClaimUpdate"]["status"] == "active"
    frozen = await update(client, "Claim", cid, claim(pid, status="active", use="preauthorization"))
    assert error_codes(frozen) == ["STATUS_RULE"]
    assert frozen["errors"][0]["extensions"]["operationOutcome"]["resourceType"] == "OperationOutcome"
    assert (
        ok(await update(client, "Claim", cid, claim(pid, status="cancelled")))["ClaimUpdate"]["status"] == "cancelled"
    )
    back = await update(client, "Claim", cid, claim(pid, status="active"))
    assert error_codes(back) == ["STATUS_RULE"]
    assert (await store.get("Claim", cid))["status"] == "cancelled"  # type: ignore[index]


async def test_delete_only_drafts_and_history_stays(client: httpx.AsyncClient, store: Store) -> None:
    pid = await setup_patient(client)
    draft = ok(await create(client, "Claim", claim(pid)))["ClaimCreate"]["id"]
    active = ok(await create(client, "Claim", claim(pid, status="active")))["ClaimCreate"]["id"]
    assert (
        ok(await gql(client, f'mutation {{ ClaimDelete(id: "{draft}") {{ id status }} }}'))["ClaimDelete"]["id"]
        == draft
    )
    assert await store.get("Claim", draft) is None
    assert len(await store.history("Claim", draft)) == 2  # the version and the deletion
    refused = await gql(client, f'mutation {{ ClaimDelete(id: "{active}") {{ id }} }}')
    assert error_codes(refused) == ["STATUS_RULE"]
    assert await store.get("Claim", active) is not None
    assert error_codes(await gql(client, 'mutation { ClaimDelete(id: "missing") { id } }')) == ["NOT_FOUND"]


async def test_created_as_cancelled_is_refused(client: httpx.AsyncClient, store: Store) -> None:
    pid = await setup_patient(client)
    result = await create(client, "Claim", claim(pid, status="cancelled"))
    assert error_codes(result) == ["STATUS_RULE"]
    assert await store.db["Claim"].count_documents({}) == 0


BAD_INPUTS: list[tuple[str, dict[str, Any], str | None]] = [
    ("unknown field", {"bogusField": 1}, None),
    ("wrong type", {"use": {"nested": "object"}}, None),
    ("bad date", {"created": "2024-13-45"}, "Claim.created"),
    ("code outside required binding", {"use": "bogus"}, "Claim.use"),
    ("wrong resourceType", {"resourceType": "Patient"}, None),
    ("reference of the wrong target type", {"patient": {"reference": "Organization/x"}}, "Claim.patient"),
    ("currency outside ISO 4217", {"total": {"value": Decimal("1.00"), "currency": "XYZ"}}, "Claim.total.currency"),
    (
        "decimal beyond Decimal128",
        {"total": {"value": Decimal("1." + "1" * 40), "currency": "USD"}},
        "Claim.total.value",
    ),
    ("oversized string", {"item": [{"sequence": 1, "productOrService": {"text": "x" * 1_100_000}}]}, None),
    (
        "period end before start (per-1)",
        {"billablePeriod": {"start": "2026-11-20", "end": "2026-11-01"}},
        "Claim.billablePeriod",
    ),
    (
        "reference type disagrees with its literal",
        {"related": [{"claim": {"reference": "Claim/x", "type": "Invoice"}}]},
        "Claim.related[0].claim.type",
    ),
    (
        "script in the narrative (txt-1)",
        {
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml"><script>x()</script></div>',
            }
        },
        "Claim.text.div",
    ),
]


@pytest.mark.parametrize(("case", "change", "expression"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
async def test_bad_input_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, store: Store, case: str, change: dict[str, Any], expression: str | None
) -> None:
    pid = await setup_patient(client)
    result = await create(client, "Claim", {**claim(pid), **change})
    assert error_codes(result) == ["BAD_USER_INPUT"], result
    error = result["errors"][0]
    assert "Traceback" not in json.dumps(result)
    if expression is not None:
        issues = error["extensions"]["operationOutcome"]["issue"]
        assert any(expression in (i.get("expression") or [""])[0] for i in issues), issues
    assert await store.db["Claim"].count_documents({}) == 0
    assert await store.db["Claim_history"].count_documents({}) == 0


async def response_for(client: httpx.AsyncClient, pid: str, claim_id: str) -> dict[str, Any]:
    return await create(
        client,
        "ClaimResponse",
        {
            "resourceType": "ClaimResponse",
            "status": "active",
            "type": {"coding": [{"code": "professional"}]},
            "use": "claim",
            "patient": {"reference": f"Patient/{pid}"},
            "created": "2026-11-02",
            "outcome": "complete",
            "request": {"reference": f"Claim/{claim_id}"},
        },
    )


async def test_claim_response_needs_an_active_claim(client: httpx.AsyncClient, store: Store) -> None:
    pid = await setup_patient(client)
    draft = ok(await create(client, "Claim", claim(pid)))["ClaimCreate"]["id"]
    assert error_codes(await response_for(client, pid, draft)) == ["STATUS_RULE"]
    assert error_codes(await response_for(client, pid, "missing")) == ["STATUS_RULE"]
    assert await store.db["ClaimResponse"].count_documents({}) == 0
    active = ok(await create(client, "Claim", claim(pid, status="active")))["ClaimCreate"]["id"]
    assert ok(await response_for(client, pid, active))["ClaimResponseCreate"]["status"] == "active"


def payment(targets: list[str], status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "PaymentReconciliation",
        "status": status,
        "type": {"coding": [{"code": "payment"}]},
        "created": "2026-11-03",
        "date": "2026-11-03",
        "amount": {"value": Decimal("100.10") * max(len(targets), 1), "currency": "USD"},
        "allocation": [
            {"target": {"reference": t}, "amount": {"value": Decimal("100.10"), "currency": "USD"}} for t in targets
        ],
    }


async def test_allocation_targets_must_exist_and_block_cancelling(client: httpx.AsyncClient, store: Store) -> None:
    pid = await setup_patient(client)
    cid = ok(await create(client, "Claim", claim(pid, status="active")))["ClaimCreate"]["id"]
    assert error_codes(await create(client, "PaymentReconciliation", payment(["Claim/missing"]))) == ["STATUS_RULE"]
    assert await store.db["PaymentReconciliation"].count_documents({}) == 0
    external = ok(await create(client, "PaymentReconciliation", payment(["http://other.example/Claim/1"])))
    assert external["PaymentReconciliationCreate"]["status"] == "active"
    ok(await create(client, "PaymentReconciliation", payment([f"Claim/{cid}"])))
    refused = await update(client, "Claim", cid, claim(pid, status="cancelled"))
    assert error_codes(refused) == ["STATUS_RULE"]
    assert (await store.get("Claim", cid))["status"] == "active"  # type: ignore[index]


async def test_responses_need_their_requests(client: httpx.AsyncClient, store: Store) -> None:
    enrollment_response = {
        "resourceType": "EnrollmentResponse",
        "status": "active",
        "request": {"reference": "EnrollmentRequest/missing"},
    }
    assert error_codes(await create(client, "EnrollmentResponse", enrollment_response)) == ["STATUS_RULE"]
    request_id = ok(
        await create(client, "EnrollmentRequest", {"resourceType": "EnrollmentRequest", "status": "active"}, "id")
    )["EnrollmentRequestCreate"]["id"]
    good = {**enrollment_response, "request": {"reference": f"EnrollmentRequest/{request_id}"}}
    assert ok(await create(client, "EnrollmentResponse", good))["EnrollmentResponseCreate"]["status"] == "active"
    eligibility = {
        "resourceType": "CoverageEligibilityResponse", "status": "active", "purpose": ["validation"],
        "patient": {"reference": "Patient/p"}, "created": "2026-11-01", "request": {"reference": "CoverageEligibilityRequest/missing"},
        "outcome": "complete", "insurer": {"reference": "Organization/x"},
    }  # fmt: skip
    assert error_codes(await create(client, "CoverageEligibilityResponse", eligibility)) == ["STATUS_RULE"]
    assert await store.db["CoverageEligibilityResponse"].count_documents({}) == 0


async def test_invoice_lifecycle(client: httpx.AsyncClient) -> None:
    invoice = {"resourceType": "Invoice", "status": "draft", "totalNet": {"value": Decimal("10.00"), "currency": "USD"}}
    iid = ok(await create(client, "Invoice", invoice))["InvoiceCreate"]["id"]
    assert (
        ok(await update(client, "Invoice", iid, {**invoice, "status": "issued"}))["InvoiceUpdate"]["status"] == "issued"
    )
    changed = await update(
        client,
        "Invoice",
        iid,
        {**invoice, "status": "issued", "totalNet": {"value": Decimal("11.00"), "currency": "USD"}},
    )
    assert error_codes(changed) == ["STATUS_RULE"]
    # Balanced only once paid (README "Billing views"): refused with nothing paid, accepted after 10.00.
    assert error_codes(await update(client, "Invoice", iid, {**invoice, "status": "balanced"})) == ["STATUS_RULE"]
    payment = {
        "resourceType": "PaymentReconciliation", "status": "active", "created": "2026-01-01", "date": "2026-01-01",
        "type": {"coding": [{"code": "payment"}]}, "amount": {"value": Decimal("10.00"), "currency": "USD"},
        "allocation": [{"target": {"reference": f"Invoice/{iid}"}, "amount": {"value": Decimal("10.00"), "currency": "USD"}}],
    }  # fmt: skip
    ok(await create(client, "PaymentReconciliation", payment))
    assert (
        ok(await update(client, "Invoice", iid, {**invoice, "status": "balanced"}))["InvoiceUpdate"]["status"]
        == "balanced"
    )
    # Reopened (a refund's way back, README "Patient pay"), then balanced again while nothing changed what is paid;
    # a balanced Invoice cannot be cancelled.
    reopened = ok(await update(client, "Invoice", iid, {**invoice, "status": "issued"}))["InvoiceUpdate"]
    assert reopened["status"] == "issued"
    again = ok(await update(client, "Invoice", iid, {**invoice, "status": "balanced"}))["InvoiceUpdate"]
    assert again["status"] == "balanced"
    assert error_codes(await update(client, "Invoice", iid, {**invoice, "status": "cancelled"})) == ["STATUS_RULE"]


async def _seed_claims(store: Store, prefix: str, n: int) -> None:
    """`n` active Claims with a ClaimResponse each, stored directly (the write path is not under test here)."""
    docs: dict[str, list[dict[str, Any]]] = {"Claim": [], "ClaimResponse": []}
    for i in range(n):
        c = {**claim("p"), "id": f"{prefix}-c{i}", "status": "active", "meta": {"versionId": "1"}}
        r = {"resourceType": "ClaimResponse", "id": f"{prefix}-r{i}", "status": "active", "meta": {"versionId": "1"}}
        docs["Claim"].append(store._stored("Claim", c))
        docs["ClaimResponse"].append(store._stored("ClaimResponse", r))
    for rtype, batch in docs.items():
        await store.db[rtype].insert_many(batch)


def _allocated(prefix: str, n: int, status: str = "active") -> dict[str, Any]:
    body = payment([f"Claim/{prefix}-c{i}" for i in range(n)], status)
    for i, allocation in enumerate(body["allocation"]):
        allocation["response"] = {"reference": f"ClaimResponse/{prefix}-r{i}"}
    return body


async def test_rule_reads_of_a_write_do_not_grow_with_its_allocations(store: Store) -> None:
    writer = Writer(store)
    used: dict[int, list[int]] = {}
    for n in (10, 200):
        await _seed_claims(store, f"n{n}", n)
        before = store.commands.count
        created = await writer.create("PaymentReconciliation", _allocated(f"n{n}", n, "draft"))
        after_create = store.commands.count
        await _seed_claims(store, f"m{n}", n)
        edited = {**_allocated(f"m{n}", n, "draft"), "id": created["id"]}
        after_seed = store.commands.count
        await writer.update("PaymentReconciliation", created["id"], edited)
        used[n] = [after_create - before, store.commands.count - after_seed]
    # Claims and ClaimResponses (two types) are read in one find each, whatever the number of allocations.
    assert used[10] == used[200], used


async def test_batched_rule_reads_still_name_each_bad_target(store: Store) -> None:
    await _seed_claims(store, "b", 3)
    body = _allocated("b", 3)
    body["allocation"][1]["target"] = {"reference": "Claim/missing"}
    body["allocation"][2]["response"] = {"reference": "ClaimResponse/missing"}
    with pytest.raises(FinGateError) as refused:
        await Writer(store).create("PaymentReconciliation", body)
    assert refused.value.code == STATUS_RULE
    assert [i["expression"][0] for i in refused.value.issues or []] == [
        "PaymentReconciliation.allocation[1].target",
        "PaymentReconciliation.allocation[2].response",
    ]
    assert refused.value.message.startswith(
        "PaymentReconciliation.allocation[1].target points at Claim/missing, which does not exist"
    )


async def test_many_ids_of_one_type_are_still_one_read(store: Store) -> None:
    # Past 100 ids of one type the store switches from `find` + `$in` (which SecantusDB
    # matches in time ids x ids: 8,000 allocations took 33 s) to the `$lookup` aggregate.
    await _seed_claims(store, "k", 250)
    other = store.for_tenant("other")
    await other.db["Claim"].insert_one(other._stored("Claim", {**claim("p"), "id": "k-c0", "meta": {"versionId": "1"}}))
    ids = [f"k-c{i}" for i in range(250)] + ["k-missing"]
    before = store.commands.count
    found = await store.get_by_type({"Claim": ids})
    assert store.commands.count - before == 1
    assert sorted(found) == sorted(("Claim", f"k-c{i}") for i in range(250))
    assert found[("Claim", "k-c0")]["status"] == "active" and "_search" not in found[("Claim", "k-c0")]


@pytest.mark.parametrize("n", [3, 250])
async def test_rule_reads_fetch_only_the_status(store: Store, n: int) -> None:
    # The rules look at nothing else; a Claim is kilobytes, and a payment can name thousands.
    await _seed_claims(store, "s", n)
    for wanted in ({"Claim": [f"s-c{i}" for i in range(n)]}, {"Claim": ["s-c0"], "ClaimResponse": ["s-r0"]}):
        found = await store.get_by_type(wanted, fields=("status",))
        assert len(found) == sum(map(len, wanted.values()))
        assert all(r == {"id": id, "status": "active"} for (_, id), r in found.items()), found
    reads = Writer(store).reads
    assert await reads.get_many({"Claim": ["s-c1"]}) == {("Claim", "s-c1"): {"id": "s-c1", "status": "active"}}


# -- no-op updates, deletes in history ------------------------------------------------------------------


async def test_an_update_identical_to_the_current_version_makes_no_version(
    client: httpx.AsyncClient, store: Store
) -> None:
    pid = await setup_patient(client)
    cid = ok(await create(client, "Claim", claim(pid, total={"value": Decimal("100"), "currency": "USD"})))[
        "ClaimCreate"
    ]["id"]
    before = await store.db["audit"].count_documents({})
    # The same content, with the meta a client read back and a number written another way (1E+2 is 100).
    same = claim(pid, meta={"versionId": "1", "lastUpdated": "2020-01-01T00:00:00Z"})
    same["total"] = {"value": Decimal("1E+2"), "currency": "USD"}
    result = ok(await update(client, "Claim", cid, same, if_match="1", fields="id meta { versionId lastUpdated }"))
    current = await store.get("Claim", cid)
    assert current is not None and result["ClaimUpdate"]["meta"] == current["meta"]
    assert current["meta"]["versionId"] == "1"
    assert [h["meta"]["versionId"] for h in await store.history("Claim", cid)] == ["1"]
    assert await store.db["audit"].count_documents({}) == before  # nothing written, nothing audited
    # ifMatch is still checked, and a change of digits (100 -> 100.0) or of a tag is a change.
    assert error_codes(await update(client, "Claim", cid, same, if_match="7")) == ["CONFLICT"]
    fewer_digits = claim(pid, total={"value": Decimal("100.0"), "currency": "USD"})
    assert ok(await update(client, "Claim", cid, fewer_digits))["ClaimUpdate"]["meta"]["versionId"] == "2"
    tagged = {**fewer_digits, "meta": {"tag": [{"code": "reviewed"}]}}
    assert ok(await update(client, "Claim", cid, tagged))["ClaimUpdate"]["meta"]["versionId"] == "3"
    assert ok(await update(client, "Claim", cid, tagged))["ClaimUpdate"]["meta"]["versionId"] == "3"
    assert await store.db["audit"].count_documents({}) == before + 2


async def test_the_history_of_a_deleted_resource_starts_with_its_deletion(
    client: httpx.AsyncClient, store: Store
) -> None:
    pid = await setup_patient(client)
    cid = ok(await create(client, "Claim", claim(pid)))["ClaimCreate"]["id"]
    ok(await update(client, "Claim", cid, claim(pid, use="preauthorization")))
    ok(await gql(client, f'mutation {{ ClaimDelete(id: "{cid}") {{ id }} }}'))
    for compiled in (True, False):
        async with client_for(store, settings=Settings(compiled=compiled)) as c:
            history = ok(
                await gql(
                    c,
                    f'{{ ClaimHistory(id: "{cid}") {{ id use meta {{ versionId lastUpdated tag {{ system code }} }} }} }}',
                )
            )["ClaimHistory"]
            assert [h["meta"]["versionId"] for h in history] == [None, "2", "1"]
            deletion = history[0]
            assert deletion["id"] == cid and deletion["use"] is None
            assert deletion["meta"]["tag"] == [{"system": "http://hl7.org/fhir/http-verb", "code": "DELETE"}]
            assert deletion["meta"]["lastUpdated"] >= history[1]["meta"]["lastUpdated"]
            assert all(h["meta"]["tag"] is None for h in history[1:])
            read = await gql(c, f'{{ Claim(id: "{cid}") {{ id }} }}')
            assert error_codes(read) == ["NOT_FOUND"]
            assert "was deleted at " + deletion["meta"]["lastUpdated"] in read["errors"][0]["message"]
    again = await gql(client, f'mutation {{ ClaimDelete(id: "{cid}") {{ id }} }}')
    assert error_codes(again) == ["NOT_FOUND"] and "was deleted" in again["errors"][0]["message"]
    never = await gql(client, '{ Claim(id: "never-was") { id } }')
    assert error_codes(never) == ["NOT_FOUND"] and "deleted" not in never["errors"][0]["message"]


@pytest.mark.parametrize(
    ("old", "new", "same"),
    [
        ({"v": Decimal("100")}, {"v": Decimal("1E+2")}, True),
        ({"v": 100}, {"v": Decimal("100")}, True),
        ({"v": Decimal("100")}, {"v": Decimal("100.0")}, False),
        ({"v": Decimal("0")}, {"v": Decimal("-0")}, False),
        ({"v": True}, {"v": 1}, False),
        ({"v": Decimal("1")}, {"v": Decimal("1e999999")}, False),  # no million-digit string is built
        ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),
        ({"a": [1, 2]}, {"a": [2, 1]}, False),
        ({"meta": {"versionId": "1", "lastUpdated": "x"}}, {}, True),
        ({"meta": {"versionId": "1", "tag": [{"code": "t"}]}}, {"meta": {"versionId": "1"}}, False),
    ],
)
def test_unchanged_compares_fhir_json_as_clients_see_it(old: dict[str, Any], new: dict[str, Any], same: bool) -> None:
    assert unchanged(old, new) is same
