"""W5: `fingate load`'s path (`app.load.load`, validation on) over a generated mix, and where each resource's time goes."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from app import validation
from app.invariants import invariant_issues
from app.load import Item, load
from app.store import Store
from app.writes import Writer
from bench import data

DB = "fingate_bench_load"
_SAMPLE = 500


def _per_resource_us(resources: list[dict[str, Any]], check: Any) -> float:
    started = time.perf_counter()
    for r in resources:
        check(r["resourceType"], r)
    return (time.perf_counter() - started) / len(resources) * 1e6


async def w5(uri: str, total: int) -> dict[str, Any]:
    """Resources per second through the load path into an empty database, and a per-resource cost split."""
    store = Store(uri, DB)
    await store.drop_all()
    await store.ensure_indexes()
    resources = data.load_mix(total)
    items = [Item(f"bench:{r['resourceType']}/{r['id']}", [r]) for r in resources]
    before = store.commands.count
    started = time.perf_counter()
    report = await load(Writer(store), [], items=items)
    seconds = time.perf_counter() - started
    commands = store.commands.count - before
    await store.drop_all()
    await store.close()
    if report.rejected:
        raise RuntimeError(f"W5 rejected: {report.rejected[:3]}")
    sample = resources[:: max(len(resources) // _SAMPLE, 1)]
    total_us = seconds / total * 1e6
    walk_us = _per_resource_us(sample, lambda t, r: validation.validate(t, r, model_check=False, invariants=False))
    model_us = _per_resource_us(sample, lambda t, r: validation.model_issues(t, {"resourceType": t, **r}))
    invariants_us = _per_resource_us(sample, lambda t, r: invariant_issues(t, {"resourceType": t, **r}))
    return {
        "resources": total,
        "mix": dict(Counter(r["resourceType"] for r in resources)),
        "seconds": seconds,
        "per_second": total / seconds,
        "commands_per_resource": commands / total,
        "cost_us": {
            "total": total_us,
            "validation walk": walk_us,
            "fhir.resources model": model_us,
            "invariants": invariants_us,
            "rules, reads and the write transaction": total_us - walk_us - model_us - invariants_us,
        },
    }
