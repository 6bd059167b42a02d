"""The bench's workloads as ordinary tests: each runs on both execution paths, and database commands per query
stay constant as allocations grow (10, 50, 200). Timing is `make bench`'s business, never a test's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bench import workloads


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[workloads.Env]:
    env = await workloads.setup(mongo_uri, workloads.QUICK)
    try:
        yield env
    finally:
        await env.store.drop_all()
        await env.sizes_store.drop_all()
        await workloads.close(env)


@pytest.mark.parametrize("compiled", [False, True], ids=["graphql-core", "compiled"])
async def test_database_commands_do_not_grow_with_allocations(env: workloads.Env, compiled: bool) -> None:
    counts = await workloads.commands(env, compiled=compiled)
    for name in ("W1", "W2", workloads.VIEWS):
        assert set(counts[name]) == {10, 50, 200}, counts
        assert len(set(counts[name].values())) == 1, f"{name} database commands per query grow: {counts[name]}"


@pytest.mark.parametrize("compiled", [False, True], ids=["graphql-core", "compiled"])
async def test_every_workload_answers(env: workloads.Env, compiled: bool) -> None:
    for w in await workloads.workloads(env):
        data, _ = await workloads.execute(env, w.query, w.variables, compiled=compiled)  # raises on errors
        assert data, w.name


async def test_baseline_a_sends_the_reads_fingate_sends(env: workloads.Env) -> None:
    """Baseline (a) is the issue's "same documents with the same commands": FinGate's recorded reads, replayed."""
    for w in await workloads.workloads(env):
        if w.name not in workloads.COMPILED:
            continue
        before = (env.store.commands.count, env.store.commands.documents)
        await workloads.execute(env, w.query, w.variables, compiled=True)
        commands, documents = (env.store.commands.count - before[0], env.store.commands.documents - before[1])
        rounds = await workloads.sent(env, w.query)
        assert sum(len(r) for r in rounds) == commands, w.name
        assert len(await w.raw()) == documents > 0, w.name


async def test_w5_cost_split_has_validation_and_invariants_lines(mongo_uri: str) -> None:
    from bench import loading

    split = (await loading.w5(mongo_uri, 25))["cost_us"]
    assert set(split) == {
        "total",
        "validation walk",
        "fhir.resources model",
        "invariants",
        "rules, reads and the write transaction",
    }
    assert all(v > 0 for k, v in split.items() if k != "rules, reads and the write transaction")


async def test_w6_imports_every_copy_from_the_fake_payer_then_changes_nothing(mongo_uri: str) -> None:
    from bench import payers

    w6 = await payers.w6(mongo_uri, 3)
    assert (w6["resources"], w6["pages"]) == (1 + 3 * 6, 1 + 1 + 1)  # the Patient, 12 Coverages, 6 EOBs; pages of 20
    assert w6["per_second"] > 0 and w6["reimport_per_second"] > 0


async def test_the_http_floor_serves_the_answer_as_fingate_does() -> None:
    """`bench.floor` sends the very bytes it is given, compressed by FinGate's gzip settings when accepted."""
    import httpx

    from bench import floor

    body = b'{"data": {"PaymentReconciliation": ' + b'{"id": "x"}, ' * 200 + b"null}}"
    transport = httpx.ASGITransport(app=floor.create_app(body))
    async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:
        plain = await client.post("/graphql", content=b"{}", headers={"accept-encoding": "identity"})
        packed = await client.post("/graphql", content=b"{}", headers={"accept-encoding": "gzip"})
    assert plain.content == body and "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip" and packed.content == body  # httpx inflates it
