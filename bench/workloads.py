"""W1-W4 executed in-process by FinGate's schema, with baselines (a), (b), (c); database commands per query."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import execute as graphql_execute
from graphql import graphql, parse

from app import validation
from app.auth import anonymous
from app.fhir.values import Resource, now_instant
from app.graphql.build import schema as fingate_schema
from app.graphql.compat import graphql_schema
from app.graphql.compiled import CompiledEngine, compiled_execution
from app.graphql.context import Context
from app.graphql.resolvers import BATCH_FORMS
from app.store import Store
from app.writes import Writer
from bench import baseline, data, queries
from bench.timing import interleaved, sample, sample_sync

DB = "fingate_bench"
SIZES_DB = "fingate_bench_sizes"  # the 10/50/200 sets live apart, so they do not weigh on the timed scans
VIEWS = "W1 billing"  # W1's payment and its Claims' billing views: command counts only
COMPILED = ("W1", "W2", "W3")  # the read workloads, measured on both execution paths; W4 is a mutation


@dataclass(frozen=True)
class Sizes:
    """How much data and how many repetitions: the full run, or `--quick` for the smoke test."""

    label: str
    pool: int
    w2_count: int
    repeats: int
    fast_repeats: int
    w5: int
    throughput_requests: int
    concurrency: int = 8
    w6: int = 100  # W6: copies of the R4 examples the fake payer serves (x 6 + 1 resources)


FULL = Sizes(
    label="full", pool=200, w2_count=data.W2_COUNT, repeats=20, fast_repeats=200, w5=10_000, throughput_requests=1000
)
QUICK = Sizes(label="quick", pool=20, w2_count=3, repeats=3, fast_repeats=5, w5=100, throughput_requests=40, w6=3)


@dataclass
class Env:
    store: Store
    sizes_store: Store
    writer: Writer
    raw: baseline.RawMongo
    fixture: data.Fixture
    sizes: Sizes
    schema: Any = field(default_factory=fingate_schema)
    w1_selection: str = ""
    compiled_schema: Any = (
        None  # `schema` with compiled execution (app/graphql/compiled); `schema` is the graphql-core path
    )
    engine: CompiledEngine = field(init=False)

    def __post_init__(self) -> None:
        self.compiled_schema, engine = compiled_execution(self.schema, BATCH_FORMS, enabled=True)
        if engine is None:
            raise RuntimeError("compiled execution is unavailable for FinGate's schema (see the server log warning)")
        self.engine = engine


@dataclass
class Workload:
    name: str
    query: str
    raw: Callable[[], Awaitable[Any]]
    repeats: int
    variables: dict[str, Any] | None = None
    found: dict[tuple[str, str], Resource] = field(default_factory=dict)
    listed: list[Resource] = field(default_factory=list)
    reads: list[list[dict[str, Any]]] = field(default_factory=list)  # FinGate's recorded reads, baseline (a)'s


async def setup(uri: str, sizes: Sizes) -> Env:
    """A fresh database holding the fixture, loaded through the real write path (so it is valid FHIR)."""
    store, sizes_store = await _fresh(uri, DB), await _fresh(uri, SIZES_DB)
    fixture = data.fixture(sizes.pool, (data.W1_SIZE,), {data.W2_SIZE: sizes.w2_count})
    await _insert(store, fixture.resources)
    await _insert(sizes_store, data.fixture(sizes.pool, data.SIZES, {k: 3 for k in data.SIZES}).resources)
    env = Env(store, sizes_store, Writer(store), baseline.RawMongo(uri, DB), fixture, sizes)
    await env.raw.prepare()
    reconciliation = await store.get("PaymentReconciliation", fixture.w1_ids[data.W1_SIZE])
    assert reconciliation is not None
    found = {f"{t}/{i}": d for (t, i), d in (await _prefetch(store, [reconciliation])).items()}
    env.w1_selection = queries.selection([queries.expanded(reconciliation, found)])
    return env


async def _fresh(uri: str, db: str) -> Store:
    store = Store(uri, db)
    await store.drop_all()
    await store.ensure_indexes()
    return store


async def _insert(store: Store, resources: list[Resource]) -> None:
    """Validated like any write, then stored in one transaction without the rule reads: through `Writer`, one
    transaction each and the 200-allocation reconciliations' 400 existence checks would make set-up the longest part."""
    meta = {"versionId": "1", "lastUpdated": now_instant()}
    async with store.transaction() as session:
        for resource in resources:
            rtype = resource["resourceType"]
            await store.insert(rtype, {**validation.validate(rtype, resource), "meta": meta}, session)


async def close(env: Env) -> None:
    await env.raw.close()
    await env.store.close()
    await env.sizes_store.close()


async def execute(
    env: Env,
    query: str,
    variables: dict[str, Any] | None = None,
    store: Store | None = None,
    compiled: bool = False,
) -> tuple[Any, int]:
    """FinGate's schema (graphql-core path, or compiled) on a fresh request Context: (data, database commands sent)."""
    store = store or env.store
    before = store.commands.count
    context = Context(store, "bench", anonymous(store.tenant))
    schema = env.compiled_schema if compiled else env.schema
    result = await schema.execute(query, variable_values=variables, context_value=context)
    if result.errors:
        raise RuntimeError(f"FinGate answered errors: {result.errors}")
    return result.data, store.commands.count - before


async def _prefetch(store: Store, reconciliations: list[Resource]) -> dict[tuple[str, str], Resource]:
    """The reconciliations and every Claim and ClaimResponse they allocate to, as the store returns them."""
    wanted: dict[str, list[str]] = defaultdict(list)
    for r in reconciliations:
        for allocation in r["allocation"]:
            for key in ("target", "response"):
                rtype, id = allocation[key]["reference"].split("/")
                wanted[rtype].append(id)
    found = await store.get_by_type(wanted)
    return {**found, **{("PaymentReconciliation", r["id"]): r for r in reconciliations}}


async def sent(env: Env, query: str) -> list[list[dict[str, Any]]]:
    """The reads FinGate sends for `query` (compiled, projected, as served), for baseline (a) to send as they are."""
    baseline.RECORDER.db, baseline.RECORDER.rounds = DB, []
    try:
        await execute(env, query, compiled=True)
    finally:
        baseline.RECORDER.db = None
    return baseline.RECORDER.rounds


async def workloads(env: Env) -> list[Workload]:
    fx, sizes = env.fixture, env.sizes
    w1_id, payer = fx.w1_ids[data.W1_SIZE], fx.w2_payers[data.W2_SIZE]
    w1_found = await _prefetch(env.store, [r for r in [await env.store.get("PaymentReconciliation", w1_id)] if r])
    listed = await env.store.search("PaymentReconciliation", {"payment-issuer": payer}, data.W2_COUNT)
    claim = await env.store.get("Claim", fx.w3_claim)
    new_claim = data.new_claim()
    raw_claim = baseline.bson_ready({"resourceType": "Claim", **new_claim})
    w1, w2, w3 = queries.w1(w1_id, env.w1_selection), queries.w2(payer, data.W2_COUNT), queries.w3(fx.w3_claim)
    reads = {name: await sent(env, query) for name, query in (("W1", w1), ("W2", w2), ("W3", w3))}
    return [
        Workload("W1", w1, lambda: env.raw.replay(reads["W1"]), sizes.repeats, found=w1_found, reads=reads["W1"]),
        Workload("W2", w2, lambda: env.raw.replay(reads["W2"]), sizes.repeats,
                 found=await _prefetch(env.store, listed), listed=listed, reads=reads["W2"]),
        Workload("W3", w3, lambda: env.raw.replay(reads["W3"]), sizes.fast_repeats,
                 found={("Claim", fx.w3_claim): claim} if claim else {}, reads=reads["W3"]),
        Workload("W4", queries.W4, lambda: env.raw.w4(raw_claim), sizes.repeats, variables={"res": new_claim}),
    ]  # fmt: skip


class Prefetched:
    """A store answering from the data baseline (b) is given (the workload's documents, read before timing),
    so FinGate's execution is timed on the same data as graphql-core's, without I/O. Benchmark only: the
    reads W1-W3 make and nothing else (anything else is an AttributeError, not a silent answer)."""

    tenant = "bench"

    def __init__(self, w: Workload) -> None:
        self.found, self.listed = w.found, w.listed

    def for_tenant(self, tenant: str) -> Prefetched:
        return self

    async def get_by_type(self, ids_by_type: dict[str, list[str]], **_: Any) -> dict[tuple[str, str], Resource]:
        keys = ((t, id) for t, ids in ids_by_type.items() for id in ids)
        return {key: self.found[key] for key in keys if key in self.found}

    async def search(
        self, resource_type: str, params: dict[str, str], count: int, *_: Any, **__: Any
    ) -> list[Resource]:
        return self.listed[:count]


async def _execution(env: Env, w: Workload, built: Any, answer: Any) -> dict[str, Any]:
    """Execution alone, on the same pre-fetched data for all, sampled in turns so the ratios survive a noisy
    machine: the compiled execute step (`CompiledEngine.run`: a plan from the cache run over the Context,
    what graphql-core's `execute()` does), FinGate's whole request on both paths (parse cache, validation,
    limits and execution: everything but the database), and graphql-core's `execute()` and `graphql()`
    over baseline (b)'s schema."""
    store = Prefetched(w)

    async def fingate(schema: Any) -> Any:
        result = await schema.execute(
            w.query,
            variable_values=w.variables,
            context_value=Context(store, "bench", anonymous(store.tenant)),
        )
        if result.errors:
            raise RuntimeError(f"{w.name} on pre-fetched data: {result.errors}")
        return result.data

    if await fingate(env.compiled_schema) != answer or await fingate(env.schema) != answer:
        raise RuntimeError(f"{w.name}: FinGate answers differently on pre-fetched data")
    document = parse(w.query)

    async def core_execute() -> Any:
        return graphql_execute(built, document, variable_values=w.variables)

    engine = env.engine

    async def compiled_step() -> Any:
        result = await engine.run(w.query, document, Context(store, "bench", anonymous(store.tenant)), w.variables)
        if result is None:
            raise RuntimeError(f"{w.name}: the compiled execute step handed the operation back")
        return result.data

    if await compiled_step() != answer:
        raise RuntimeError(f"{w.name}: the compiled execute step answers differently")
    stats = engine.stats
    before = dict(stats)
    timed = await interleaved(
        {
            "exec_compiled_step": compiled_step,
            "exec_compiled": lambda: fingate(env.compiled_schema),
            "exec": lambda: fingate(env.schema),
            "b_execute": core_execute,
            "b_graphql": lambda: graphql(built, w.query, variable_values=w.variables),
        },
        w.repeats,
    )
    counts = {k: stats[k] - before.get(k, 0) for k in ("compiled", "fallback", "unsupported")}
    if counts["compiled"] < w.repeats or counts["fallback"] or counts["unsupported"]:
        raise RuntimeError(f"{w.name} on pre-fetched data: not every run was compiled: {counts}")
    return timed


def engine(env: Env, w: Workload) -> Any:
    sdl = baseline.trimmed_sdl(graphql_schema(env.schema), [w.query])
    return baseline.engine_schema(sdl, baseline.roots_for(w.found, w.listed), w.found)


async def _compiled(env: Env, w: Workload, answer: Any) -> dict[str, Any]:
    """The compiled path's in-process samples, after checking it answers what the graphql-core path answers and
    that it really ran compiled (no fallback): the plan-cache counts of the run are kept with the samples."""
    stats = env.engine.stats
    before = dict(stats)
    compiled_answer, _ = await execute(env, w.query, w.variables, compiled=True)
    if orjson.dumps(compiled_answer, default=str) != orjson.dumps(answer, default=str):
        raise RuntimeError(f"{w.name}: the compiled path answers differently from the graphql-core path")
    timed = await sample(lambda: execute(env, w.query, w.variables, compiled=True), w.repeats)
    counts = {k: stats[k] - before.get(k, 0) for k in ("compiled", "fallback", "unsupported")}
    if counts["compiled"] == 0 or counts["fallback"] or counts["unsupported"]:
        raise RuntimeError(f"{w.name}: not answered by the compiled path: {counts}")
    return {**timed, "paths": counts}


async def measure(env: Env, w: Workload) -> dict[str, Any]:
    """FinGate in-process on both paths and the three baselines, after checking (b) answers what FinGate answers."""
    answer, _ = await execute(env, w.query, w.variables)
    built = engine(env, w)
    floor = await graphql(built, w.query, variable_values=w.variables)
    if floor.errors or (w.name != "W4" and floor.data != answer):
        raise RuntimeError(f"{w.name}: baseline (b) differs from FinGate: {floor.errors}")
    compiled = {"in_process_compiled": await _compiled(env, w, answer)} if w.name in COMPILED else {}
    execution = {"execution": await _execution(env, w, built, answer)} if w.name in COMPILED else {}
    return {
        **compiled,
        **execution,
        "in_process": await sample(lambda: execute(env, w.query, w.variables), w.repeats),
        "a": await sample(w.raw, w.repeats),
        "b": await sample(lambda: graphql(built, w.query, variable_values=w.variables), w.repeats),
        "c": sample_sync(lambda: orjson.dumps({"data": answer}), w.repeats * 10),
    }


async def commands(env: Env, compiled: bool = False) -> dict[str, dict[int, int]]:
    """Database commands per query for W1, W2 and W1 with billing views at every size: constant when references
    and views are batched per level."""
    out: dict[str, dict[int, int]] = {"W1": {}, "W2": {}, VIEWS: {}}
    for k in data.SIZES:
        w1, w2 = (
            queries.w1(f"bench-w1-{k}", env.w1_selection),
            queries.w2(f"Organization/bench-payer-{k}", data.W2_COUNT),
        )
        _, out["W1"][k] = await execute(env, w1, store=env.sizes_store, compiled=compiled)
        _, out["W2"][k] = await execute(env, w2, store=env.sizes_store, compiled=compiled)
        views = queries.w1(f"bench-w1-{k}", queries.W1_BILLING)
        _, out[VIEWS][k] = await execute(env, views, store=env.sizes_store, compiled=compiled)
    return out


async def profile_w1(env: Env, runs: int = 20) -> str:
    """pyinstrument over `runs` W1 executions on the compiled path, the default (async-aware: time awaiting
    the database is shown as such)."""
    from pyinstrument import Profiler

    query = queries.w1(env.fixture.w1_ids[data.W1_SIZE], env.w1_selection)
    await execute(env, query, compiled=True)
    profiler = Profiler(interval=0.0005, async_mode="enabled")
    profiler.start()
    for _ in range(runs):
        await execute(env, query, compiled=True)
    profiler.stop()
    tree = profiler.output_text(unicode=True, color=False)
    flat = profiler.output_text(unicode=True, color=False, flat=True)
    return f"{tree}\n# Self time per function (flat)\n{flat}"
