"""`fingate load`: ordering, Bundles (transaction all-or-nothing, batch per entry), urn:uuid rewriting."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.demo import INVALID_EXAMPLES, example_items
from app.load import load
from app.store import Store
from app.writes import Writer
from tests.harness import json_with_decimals


def write(path: Path, data: Any) -> Path:
    path.write_text(json_with_decimals(data))
    return path


def bundle(kind: str, entries: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [{"fullUrl": url, "resource": r} for url, r in entries]}


PATIENT_URL = "urn:uuid:9c7a9c43-0d63-4b3b-9a2b-2d1f0c4a1b01"
PATIENT = {"resourceType": "Patient", "name": [{"family": "Okafor"}]}


def claim_for(reference: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Claim", "status": status, "use": "claim", "created": "2026-11-01",
        "type": {"coding": [{"code": "professional"}]}, "patient": {"reference": reference},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "plan"}}],
        "total": {"value": Decimal("250.50"), "currency": "USD"},
    }  # fmt: skip


async def test_transaction_bundle_rewrites_urn_uuids(store: Store, tmp_path: Path) -> None:
    path = write(
        tmp_path / "tx.json", bundle("transaction", [("urn:uuid:c1", claim_for(PATIENT_URL)), (PATIENT_URL, PATIENT)])
    )
    report = await load(Writer(store), [path])
    assert report.rejected == [] and report.created == 2
    claim = (await store.search("Claim", {}, count=10))[0]
    patient_id = claim["patient"]["reference"].split("/")[1]
    assert claim["patient"]["reference"] == f"Patient/{patient_id}"
    assert await store.get("Patient", patient_id) is not None


async def test_transaction_bundle_is_all_or_nothing(store: Store, tmp_path: Path) -> None:
    bad_claim = {**claim_for(PATIENT_URL), "status": "bogus"}
    path = write(tmp_path / "tx.json", bundle("transaction", [(PATIENT_URL, PATIENT), ("urn:uuid:c1", bad_claim)]))
    report = await load(Writer(store), [path])
    assert len(report.rejected) == 1 and "bogus" in report.rejected[0][1]
    assert await store.db["Patient"].count_documents({}) == 0
    assert await store.db["Patient_history"].count_documents({}) == 0


async def test_batch_bundle_reports_per_entry(store: Store, tmp_path: Path) -> None:
    entries = [
        (PATIENT_URL, PATIENT),
        ("urn:uuid:c1", claim_for(PATIENT_URL)),
        ("urn:uuid:c2", {**claim_for(PATIENT_URL), "status": "bogus"}),
    ]
    report = await load(Writer(store), [write(tmp_path / "batch.json", bundle("batch", entries))])
    assert report.created == 2 and len(report.rejected) == 1
    assert "#entry[2]" in report.rejected[0][0]


async def test_files_load_in_reference_order_and_keep_ids_and_digits(store: Store, tmp_path: Path) -> None:
    # The ClaimResponse sorts first by name but needs its Claim, which needs nothing loaded before it.
    write(tmp_path / "a-response.json", {
        "resourceType": "ClaimResponse", "id": "r1", "status": "active", "use": "claim", "outcome": "complete",
        "created": "2026-11-02", "type": {"coding": [{"code": "professional"}]},
        "patient": {"reference": "Patient/p1"}, "request": {"reference": "Claim/c1"},
    })  # fmt: skip
    write(tmp_path / "b-claim.json", {**claim_for("Patient/p1"), "id": "c1"})
    (tmp_path / "c-number.json").write_text(
        '{"resourceType": "Invoice", "id": "i1", "status": "draft", "totalNet": {"value": 7.10, "currency": "USD"}}'
    )
    report = await load(Writer(store), [tmp_path])
    assert report.rejected == [] and report.created == 3
    assert (await store.get("ClaimResponse", "r1")) is not None
    invoice = await store.get("Invoice", "i1")
    assert invoice is not None and str(invoice["totalNet"]["value"]) == "7.10"
    again = await load(Writer(store), [tmp_path])
    assert again.unchanged == 3 and again.created == 0


async def test_unreadable_and_unknown_inputs_are_rejected_with_reasons(store: Store, tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{nope")
    write(tmp_path / "alien.json", {"resourceType": "Spaceship", "id": "x"})
    report = await load(Writer(store), [tmp_path])
    reasons = dict(report.rejected)
    assert "not readable as JSON" in reasons[str(tmp_path / "broken.json")]
    assert "Spaceship" in reasons[str(tmp_path / "alien.json")]


def test_cli_load_prints_counts_and_fails_on_rejections(mongo_uri: str, tmp_path: Path) -> None:
    write(tmp_path / "ok.json", PATIENT)
    write(tmp_path / "bad.json", {**PATIENT, "gender": "sometimes"})
    env = {**os.environ, "MONGODB_URI": mongo_uri, "FINGATE_DB": f"cli_{uuid.uuid4().hex[:8]}"}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "load", str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "loaded 1" in done.stdout and "rejected 1" in done.stdout
    assert "bad.json" in done.stdout and "gender" in done.stdout


async def test_the_known_invalid_r5_examples_are_refused(store: Store) -> None:
    invalid = [
        item
        for item in example_items(include_invalid=True)
        if f"{item.resources[0]['resourceType']}/{item.resources[0]['id']}" in INVALID_EXAMPLES
    ]
    assert len(invalid) == len(INVALID_EXAMPLES)
    report = await load(Writer(store), [], items=invalid)
    assert len(report.rejected) == len(INVALID_EXAMPLES) and report.loaded == 0


async def test_transaction_bundle_rules_see_its_own_entries_and_the_store(store: Store, tmp_path: Path) -> None:
    writer = Writer(store)
    patient = await writer.create("Patient", dict(PATIENT))
    stored = await writer.create("Claim", claim_for(f"Patient/{patient['id']}"))

    def payment(*targets: str) -> dict[str, Any]:
        return {
            "resourceType": "PaymentReconciliation", "status": "active", "created": "2026-11-03", "date": "2026-11-03",
            "type": {"coding": [{"code": "payment"}]}, "amount": {"value": Decimal("501.00"), "currency": "USD"},
            "allocation": [{"target": {"reference": t}} for t in targets],
        }  # fmt: skip

    new_claim = ("urn:uuid:c1", claim_for(f"Patient/{patient['id']}"))
    good = bundle("transaction", [new_claim, ("urn:uuid:p1", payment("urn:uuid:c1", f"Claim/{stored['id']}"))])
    bad = bundle("transaction", [new_claim, ("urn:uuid:p2", payment("urn:uuid:c1", "Claim/missing"))])
    report = await load(writer, [write(tmp_path / "good.json", good), write(tmp_path / "bad.json", bad)])
    assert report.created == 2 and len(report.rejected) == 1, report
    assert "allocation[1].target points at Claim/missing" in report.rejected[0][1]
    assert await store.db["PaymentReconciliation"].count_documents({}) == 1


def _response_to(claim_id: str, id: str) -> dict[str, Any]:
    return {
        "resourceType": "ClaimResponse", "id": id, "status": "active", "use": "claim", "outcome": "complete",
        "created": "2026-11-02", "type": {"coding": [{"code": "professional"}]},
        "patient": {"reference": "Patient/bulk-p"}, "insurer": {"display": "payer"},
        "request": {"reference": f"Claim/{claim_id}"},
    }  # fmt: skip


async def test_bulk_chunks_check_and_report_each_resource(store: Store, tmp_path: Path) -> None:
    # Over two chunks: references inside a chunk and across chunks hold, a bad entry is refused alone, a rule
    # sees the chunk's own entries (a response to a Claim of the same chunk) and refuses what it must.
    from app import load as loading

    claims = [{**claim_for("Patient/bulk-p"), "id": f"bulk-c{n}"} for n in range(loading.CHUNK + 5)]
    last = len(claims) - 1  # the last Claims share the second chunk with the responses
    claims[last - 1] = {**claims[last - 1], "status": "draft"}  # a draft: a response to it breaks a rule
    claims[7] = {**claims[7], "use": "sometimes"}  # invalid: refused on its own
    responses = [  # to a Claim of the first chunk, then to the second chunk's own active and draft Claims
        _response_to("bulk-c1", "bulk-r1"),
        _response_to(f"bulk-c{last}", "bulk-r2"),
        _response_to(f"bulk-c{last - 1}", "bulk-r3"),
    ]
    entries = [("", {**PATIENT, "id": "bulk-p"}), *(("", c) for c in claims), *(("", r) for r in responses)]
    before = store.commands.count
    report = await load(Writer(store), [write(tmp_path / "batch.json", bundle("batch", entries))])
    commands = store.commands.count - before
    assert report.created == len(entries) - 2, report.rejected
    reasons = dict(report.rejected)
    assert set(reasons) == {
        f"{tmp_path / 'batch.json'}#entry[8]",
        f"{tmp_path / 'batch.json'}#entry[{len(entries) - 1}]",
    }
    assert "use" in reasons[f"{tmp_path / 'batch.json'}#entry[8]"]
    assert "STATUS_RULE" in reasons[f"{tmp_path / 'batch.json'}#entry[{len(entries) - 1}]"]
    assert await store.db["Claim"].count_documents({}) == len(claims) - 1
    assert await store.db["Claim_history"].count_documents({}) == len(claims) - 1
    assert await store.db["audit"].count_documents({"operation": "create"}) == report.created
    assert commands < len(entries) / 5  # a few commands per chunk, not several per resource
    history = await store.history("Claim", "bulk-c0")
    assert [h["meta"]["versionId"] for h in history] == ["1"]


async def test_bulk_updates_and_duplicates_go_one_by_one(store: Store, tmp_path: Path) -> None:
    writer = Writer(store)
    await writer.create("Patient", {**PATIENT, "id": "bulk-p"}, keep_id=True)
    changed = {**PATIENT, "id": "bulk-p", "gender": "female"}
    twice = {**claim_for("Patient/bulk-p"), "id": "bulk-twice"}
    report = await load(
        writer, [write(tmp_path / "b.json", bundle("batch", [("", changed), ("", twice), ("", twice)]))]
    )
    assert (report.created, report.updated, report.unchanged, report.rejected) == (1, 1, 1, [])
    assert (await store.get("Patient", "bulk-p"))["gender"] == "female"  # type: ignore[index]


async def test_a_chunk_whose_transaction_fails_is_loaded_one_by_one(store: Store, tmp_path: Path) -> None:
    from app import load as loading

    writer = Writer(store)
    real = writer.create_many
    calls = []

    async def taken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        from app import errors

        raise errors.FinGateError(errors.CONFLICT, "an id of this batch was taken meanwhile")

    writer.create_many = taken  # type: ignore[method-assign]
    report = await load(writer, [write(tmp_path / "b.json", bundle("batch", [("", {**PATIENT, "id": "bulk-p"})]))])
    assert calls == [1] and report.created == 1 and report.rejected == []
    assert loading.CHUNK > 1 and real is not None


async def test_bulk_payments_to_one_claim_are_added_up(store: Store, tmp_path: Path) -> None:
    # Two payments of 60.00 to a 100.00 Claim in one batch: each fits alone, not both. The balance rules add up
    # the committed payments and the chunk's earlier ones: the second is refused, as it would be as a mutation.
    from tests.test_billing import claim, payment, usd

    entries = [
        ("", claim("bulk-paid", usd("100.00"))),
        ("", payment("bulk-pay-1", "2026-02-01", usd("60.00"), ("Claim/bulk-paid", usd("60.00")))),
        ("", payment("bulk-pay-2", "2026-02-02", usd("60.00"), ("Claim/bulk-paid", usd("60.00")))),
    ]
    report = await load(Writer(store), [write(tmp_path / "b.json", bundle("batch", entries))])
    assert report.created == 2 and len(report.rejected) == 1, report
    assert "paid-within-total" in report.rejected[0][1] or "STATUS_RULE" in report.rejected[0][1]
    assert await store.db["PaymentReconciliation"].count_documents({}) == 1


async def test_bulk_payments_share_the_chunk_and_add_up_with_the_committed_ones(store: Store, tmp_path: Path) -> None:
    # 30.00 of a 100.00 Claim is paid already. A batch pays 40.00 (70.00), a draft of 50.00 (pays nothing yet),
    # 40.00 (110.00: refused) and 30.00 (100.00): each checked against what is committed plus the chunk's earlier
    # payments, as one by one; and in the chunk's one transaction, a few commands, not a transaction per payment.
    from tests.test_billing import claim, payment, usd

    writer = Writer(store)
    await writer.create("Claim", claim("bulk-owed", usd("100.00")), keep_id=True)
    await writer.create(
        "PaymentReconciliation",
        payment("bulk-paid-before", "2026-01-05", usd("30.00"), ("Claim/bulk-owed", usd("30.00"))),
        keep_id=True,
    )
    to_claim = ("Claim/bulk-owed",)
    entries = [
        payment("bulk-a", "2026-02-01", usd("40.00"), (*to_claim, usd("40.00"))),
        payment("bulk-draft", "2026-02-02", usd("50.00"), (*to_claim, usd("50.00")), status="draft"),
        payment("bulk-over", "2026-02-03", usd("40.00"), (*to_claim, usd("40.00"))),
        payment("bulk-b", "2026-02-04", usd("30.00"), (*to_claim, usd("30.00"))),
    ]
    path = write(tmp_path / "b.json", bundle("batch", [("", e) for e in entries]))
    before = store.commands.count
    report = await load(writer, [path])
    commands = store.commands.count - before
    assert report.created == 3, report
    assert [source for source, _ in report.rejected] == [f"{path}#entry[2]"]
    assert "would bring Claim/bulk-owed to 110.00 USD paid" in report.rejected[0][1]
    paid = await store.settlements(["Claim/bulk-owed"], responses=False)
    assert sorted(p.id for p in paid["Claim/bulk-owed"].payments) == ["bulk-a", "bulk-b", "bulk-paid-before"]
    assert commands <= 15, commands  # one by one, each payment was a transaction of about 9 commands


async def test_a_resource_in_two_chunks_is_created_then_updated(store: Store, tmp_path: Path) -> None:
    # Which of a chunk exist is read while the chunk before it is written: what that chunk stores counts as
    # existing too, so the second copy is an update (through `put`), not an insert that fails the whole chunk.
    from app import load as loading

    patients = [{**PATIENT, "id": f"twice-{n}"} for n in range(loading.CHUNK + 30)]
    again = {**PATIENT, "id": "twice-0", "gender": "female"}  # the second chunk's first, then 30 new ones
    entries = [*patients[: loading.CHUNK], again, *patients[loading.CHUNK :]]
    path = write(tmp_path / "b.json", bundle("batch", [("", p) for p in entries]))
    before = store.commands.count
    report = await load(Writer(store), [path])
    commands = store.commands.count - before
    assert (report.created, report.updated, report.rejected) == (len(patients), 1, [])
    assert (await store.get("Patient", "twice-0"))["gender"] == "female"  # type: ignore[index]
    assert commands < 40, commands  # the second chunk was not loaded again one by one
