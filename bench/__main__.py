"""`python -m bench` (`make bench`): W1-W5 against their baselines, W6 (payer import); prints one table, writes bench/results.json."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.embedded import EmbeddedMongo
from bench import engines, floor, loading, payers, report, server, workloads

PROFILE = Path(__file__).with_name("profile-w1.txt")
FLOORS = ("W1", "W2")  # the workloads measured against their HTTP floor (`bench.floor`)


@contextlib.contextmanager
def database(tmp: Path) -> Iterator[tuple[str, Path | None]]:
    """MONGODB_URI when set, else an embedded database under `tmp` (its directory is also returned)."""
    if uri := os.environ.get("MONGODB_URI"):
        yield uri, None
        return
    with EmbeddedMongo(tmp / "db") as db:
        yield db.uri, tmp / "db"


async def _over_http(
    uri: str, env: workloads.Env, items: list[workloads.Workload], log: Path, compiled: bool
) -> dict[str, Any]:
    """`fingate serve` with FINGATE_COMPILED on or off: latency of `items`, W3 throughput, start-up and RSS."""
    settings = {"MONGODB_URI": uri, "FINGATE_DB": workloads.DB, "FINGATE_COMPILED": str(compiled).lower()}
    served = server.start(settings, log)
    try:
        out: dict[str, Any] = {
            w.name: await server.latency(served.url, server.body(w.query, w.variables), w.repeats) for w in items
        }
        if compiled:  # the same answers from a bare route: what serving them costs with no GraphQL, no database
            for w in items:
                if w.name in FLOORS:
                    body = await server.answer(served.url, server.body(w.query, w.variables))
                    out[f"{w.name} floor"] = await _floor(body, w.repeats, log)
        w3, sizes = next(w for w in items if w.name == "W3"), env.sizes
        rps = await server.throughput(served.url, server.body(w3.query), sizes.throughput_requests, sizes.concurrency)
        out["throughput"] = {"rps": rps, "requests": sizes.throughput_requests, "concurrency": sizes.concurrency}
        out["server"] = {"ready_seconds": served.ready_seconds, "peak_rss_mb": server.peak_rss_mb(served.process.pid)}
        return out
    finally:
        server.stop(served)


async def _floor(body: bytes, repeats: int, log: Path) -> Any:
    path = log.with_suffix(".floor.json")
    path.write_bytes(body)
    served = server.start({floor.BODY: str(path)}, log.with_suffix(".floor.log"), floor=True)
    try:
        return await server.latency(served.url, server.body("{ floor }"), repeats)
    finally:
        server.stop(served)


async def measure(uri: str, sizes: workloads.Sizes, tmp: Path) -> dict[str, Any]:
    env = await workloads.setup(uri, sizes)
    try:
        items = await workloads.workloads(env)
        results: dict[str, Any] = {w.name: await workloads.measure(env, w) for w in items}
        for name, counts in (await workloads.commands(env)).items():
            results.setdefault(name, {})["commands"] = counts
        for name, counts in (await workloads.commands(env, compiled=True)).items():
            results.setdefault(name, {})["commands_compiled"] = counts
        # The graphql-core path over HTTP (FINGATE_COMPILED=false), then the default, compiled, server.
        http = await _over_http(uri, env, items, tmp / "serve.log", compiled=False)
        read_items = [w for w in items if w.name in workloads.COMPILED]
        http_compiled = await _over_http(uri, env, read_items, tmp / "serve-compiled.log", compiled=True)
    finally:
        await workloads.close(env)
    for w in items:
        results[w.name]["http"] = http[w.name]
        if w.name in http_compiled:
            results[w.name]["http_compiled"] = http_compiled[w.name]
        if f"{w.name} floor" in http_compiled:
            results[w.name]["http_floor"] = http_compiled[f"{w.name} floor"]
    results["W3"]["throughput"] = http["throughput"]
    results["W3"]["throughput_compiled"] = http_compiled["throughput"]
    results["W5"] = await loading.w5(uri, sizes.w5)
    results["W6"] = await payers.w6(uri, sizes.w6)
    recorded = {w.name: w.reads for w in items if w.reads}
    return {"workloads": results, "server": {**http["server"], "compiled": http_compiled["server"]}, "reads": recorded}


def ready_embedded(data_dir: Path, tmp: Path) -> float:
    """Start to /readyz of `fingate serve` starting the embedded database on storage that already holds data."""
    served = server.start({"FINGATE_DB": workloads.DB}, tmp / "serve-embedded.log", ("--data-dir", str(data_dir)))
    server.stop(served)
    return served.ready_seconds


async def profile(uri: str, sizes: workloads.Sizes) -> str:
    env = await workloads.setup(uri, sizes)
    try:
        return await workloads.profile_w1(env)
    finally:
        await workloads.close(env)


def run(sizes: workloads.Sizes, out: Path, do_profile: bool) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory(prefix="fingate-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with database(tmp) as (uri, data_dir):
            if do_profile:
                PROFILE.write_text(asyncio.run(profile(uri, sizes)))
                print(f"wrote {PROFILE}")
                return None
            results = asyncio.run(measure(uri, sizes, tmp))
        recorded = results.pop("reads")
        if data_dir is not None:
            results["server"]["ready_embedded_seconds"] = ready_embedded(data_dir, tmp)
            results["engines"] = engines.compare(sizes, recorded)
    results = {"machine": report.machine(), "mode": sizes.label, "w5_resources": sizes.w5, **results}
    results["targets"] = report.verdicts(results)
    report.write(results, out)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not a measurement")
    parser.add_argument("--profile", action="store_true", help=f"profile W1 with pyinstrument into {PROFILE.name}")
    parser.add_argument(
        "--w5", type=int, help="resources for W5 (the default 10000 takes minutes on the embedded database)"
    )
    parser.add_argument("--out", type=Path, default=report.RESULTS, help="where to write the results JSON")
    args = parser.parse_args(argv)
    sizes = workloads.QUICK if args.quick else workloads.FULL
    if args.w5:
        sizes = replace(sizes, w5=args.w5)
    results = run(sizes, args.out, args.profile)
    if results is not None:
        m = results["machine"]
        print(f"FinGate benchmark, {m['date']}, {m['nproc']} x {m['cpu']}, Python {m['python']}\n")
        print(report.table(results))
        print("\n" + report.verdict_lines(results["targets"]))
        print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
