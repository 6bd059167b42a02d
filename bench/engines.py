"""`python -m bench.engines`: the embedded engines side by side in one run: the same data, the same reads.

Starts every SecantusDB server that can run here (the Rust server and the Python server of the pinned
wheel; `--py-path DIR` adds the Python server of a SecantusDB installed with `pip install --target DIR`,
e.g. another version), loads W1/W2's fixture into each, then times in turns, on each engine:

- W1 and W2's reads as raw PyMongo sends them: under `make bench`, FinGate's own reads recorded on the main run
  (baseline (a)); alone, `find` by `_id` with `$in` per type, of whole documents;
- FinGate's reference level as `Store.get_by_type` reads it (one `find` by `_id` per type, sent together) and
  as the one-command `$documents` + `$lookup` aggregate it used to send, with whole documents and with W2's
  projection, as dicts and as `RawBSONDocument`.

Prints medians, and each engine's ratio to the first one's, and writes `bench/engines.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from bson.raw_bson import RawBSONDocument

from app import embedded
from app.embedded import EmbeddedMongo, Engine
from app.store import Store
from bench import baseline, data, workloads
from bench.timing import interleaved

OUT = Path(__file__).with_name("engines.json")
W2_FIELDS = ("id", "status", "created", "total", "outcome", "payment", "patient", "insurer")


def engines(py_paths: list[str]) -> list[Engine]:
    found = [e for e in (embedded.rs_engine(), embedded.py_engine()) if e is not None]
    for path in py_paths:
        version = next(Path(path).glob("secantusdb-*.dist-info")).name.removesuffix(".dist-info").split("-")[1]
        command = ("/usr/bin/env", f"PYTHONPATH={path}", sys.executable, "-m", "secantus")
        found.append(Engine(embedded.PY, version, command))
    return found


@contextlib.contextmanager
def running(found: list[Engine], tmp: Path) -> Iterator[list[tuple[Engine, str]]]:
    with contextlib.ExitStack() as stack:
        yield [(e, stack.enter_context(EmbeddedMongo(tmp / str(n), e)).uri) for n, e in enumerate(found)]


async def _prepare(uri: str, sizes: workloads.Sizes) -> tuple[Store, baseline.RawMongo, data.Fixture]:
    store = Store(uri, workloads.DB)
    await store.drop_all()
    await store.ensure_indexes()
    fixture = data.fixture(sizes.pool, (data.W1_SIZE,), {data.W2_SIZE: sizes.w2_count})
    await workloads._insert(store, fixture.resources)
    raw = baseline.RawMongo(uri, workloads.DB)
    await raw.prepare()
    return store, raw, fixture


async def _levels(store: Store, fixture: data.Fixture) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """W1's and W2's reference levels: {type: ids} of the Claims and ClaimResponses their allocations name."""
    w1 = await store.get("PaymentReconciliation", fixture.w1_ids[data.W1_SIZE])
    listed = await store.search("PaymentReconciliation", {"payment-issuer": fixture.w2_payers[data.W2_SIZE]}, 20)
    out = []
    for roots in ([w1], listed):
        wanted: dict[str, list[str]] = {}
        for r in roots:
            for a in (r or {}).get("allocation", ()):
                for key in ("target", "response"):
                    rtype, id = a[key]["reference"].split("/")
                    wanted.setdefault(rtype, []).append(id)
        out.append(wanted)
    return out[0], out[1]


Recorded = dict[str, list[list[dict[str, Any]]]]  # workload -> FinGate's reads, as `bench.workloads.sent` records them


def _calls(
    store: Store, raw: baseline.RawMongo, fixture: data.Fixture, levels: Any, recorded: Recorded | None = None
) -> dict[str, Callable[[], Awaitable[Any]]]:
    w1_id, payer = fixture.w1_ids[data.W1_SIZE], fixture.w2_payers[data.W2_SIZE]
    w1_level, w2_level = levels
    raw_db = store.db.with_options(codec_options=store.db.codec_options.with_options(document_class=RawBSONDocument))

    async def raw_bson(level: dict[str, list[str]], fields: tuple[str, ...] = ()) -> Any:
        """The plain finds `get_by_type` sends, decoded lazily (`RawBSONDocument`: nothing turned into Python)."""

        async def one(t: str, ids: list[str]) -> list[Any]:
            projection = dict.fromkeys(("id", *fields), 1) if fields else None
            keys = [f"{store.tenant}/{id}" for id in dict.fromkeys(ids)]
            return await raw_db[t].find({"_id": {"$in": keys}}, projection, batch_size=len(keys) + 1).to_list()

        return await asyncio.gather(*(one(t, ids) for t, ids in level.items()))

    async def aggregate(level: dict[str, list[str]]) -> Any:
        """The level as one command: a `$documents` row per key, a `$lookup` by `_id` per type."""
        types = list(level)
        rows = [{f"k{n}": f"{store.tenant}/{id}"} for n, t in enumerate(types) for id in dict.fromkeys(level[t])]
        lookups = [
            {"$lookup": {"from": t, "localField": f"k{n}", "foreignField": "_id", "as": f"r{n}"}}
            for n, t in enumerate(types)
        ]
        return await (await store.db.aggregate([{"$documents": rows}, *lookups], batchSize=len(rows) + 1)).to_list()

    async def replayed(rounds: list[list[dict[str, Any]]]) -> list[Any]:
        found = await raw.replay(rounds)
        if not found:
            raise RuntimeError("FinGate's recorded reads found nothing here: not the fixture they were recorded on")
        return found

    # With FinGate's recorded reads (`make bench`), the reads it sends; alone, raw finds of whole documents.
    return {
        "W1 raw PyMongo (a)": (lambda: replayed(recorded["W1"])) if recorded else (lambda: raw.w1(w1_id)),
        "W2 raw PyMongo (a)": (
            (lambda: replayed(recorded["W2"])) if recorded else (lambda: raw.w2(payer, data.W2_COUNT))
        ),
        "W1 level: aggregate": lambda: aggregate(w1_level),
        "W1 level: finds per type": lambda: store.get_by_type(w1_level),
        "W2 level: aggregate": lambda: aggregate(w2_level),
        "W2 level: finds per type": lambda: store.get_by_type(w2_level),
        "W2 level: finds, projected": lambda: store.get_by_type(w2_level, W2_FIELDS),
        "W2 level: finds, projected, raw BSON": lambda: raw_bson(w2_level, W2_FIELDS),
        "W2 level: finds, raw BSON": lambda: raw_bson(w2_level),
    }


READS = ("W1 raw PyMongo (a)", "W2 raw PyMongo (a)")  # what `make bench` compares the engines on


async def measure(
    found: list[tuple[Engine, str]],
    sizes: workloads.Sizes,
    only: tuple[str, ...] = (),
    recorded: Recorded | None = None,
) -> dict[str, dict[str, Any]]:
    calls: dict[str, Callable[[], Awaitable[Any]]] = {}
    opened = []
    for engine, uri in found:
        store, raw, fixture = await _prepare(uri, sizes)
        opened += [store, raw]
        levels = await _levels(store, fixture)
        calls |= {
            f"{engine.label} | {name}": call
            for name, call in _calls(store, raw, fixture, levels, recorded).items()
            if not only or name in only
        }
    try:
        stats = await interleaved(calls, sizes.repeats)
    finally:
        for thing in opened:
            await thing.close()
    out: dict[str, dict[str, Any]] = {}
    for key, value in stats.items():
        label, name = key.split(" | ")
        out.setdefault(name, {})[label] = value
    return out


def compare(sizes: workloads.Sizes, recorded: Recorded | None = None) -> dict[str, Any]:
    """`make bench`'s engine comparison: W1's and W2's reads (FinGate's, as recorded) on every engine that runs
    here, in turns, on the same fixture."""
    found = engines([])
    with tempfile.TemporaryDirectory(prefix="fingate-engines-") as tmp, running(found, Path(tmp)) as started:
        reads = asyncio.run(measure(started, sizes, READS, recorded))
    return {"engines": [e.label for e in found], "reads": reads}


def table(results: dict[str, dict[str, Any]], labels: list[str]) -> str:
    head = (
        "| read | "
        + " | ".join(f"{label} median" for label in labels)
        + " | "
        + " | ".join(f"{labels[0]} vs {label}" for label in labels[1:])
        + " |"
    )
    lines = [head, "|" + " --- |" * (1 + 2 * len(labels) - 1)]
    for name, by in results.items():
        medians = [by[label]["median_ms"] for label in labels]
        ratios = [f"{m / medians[0]:.1f}x" for m in medians[1:]]
        lines.append(f"| {name} | " + " | ".join(f"{m:.2f} ms" for m in medians) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__)
    parser.add_argument("--py-path", action="append", default=[], help="a SecantusDB installed with --target DIR")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sizes = workloads.QUICK if args.quick else workloads.FULL
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    found = engines(args.py_path)
    with tempfile.TemporaryDirectory(prefix="fingate-engines-") as tmp, running(found, Path(tmp)) as started:
        results = asyncio.run(measure(started, sizes))
    labels = [e.label for e in found]
    args.out.write_text(json.dumps({"engines": labels, "reads": results}, indent=1, default=str) + "\n")
    print(table(results, labels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
