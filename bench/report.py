"""The benchmark's one table, its target verdicts, and `bench/results.json` with the machine it ran on."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).with_name("results.json")
WORKLOADS = ("W1", "W2", "W3", "W4")
LIBRARIES = (
    "strawberry-graphql",
    "graphql-core",
    "starlette",
    "uvicorn",
    "pymongo",
    "orjson",
    "httpx",
    "fhir.resources",
    "SecantusDB",
)
_BASELINES = (("a", "(a) raw PyMongo"), ("b", "(b) graphql-core `graphql()`"), ("c", "(c) `orjson.dumps`"))
# FinGate's rows: (key, label, key of the same measure on the other execution path). W4, a mutation, has no
# compiled rows: the compiled path hands mutations to graphql-core.
_MEASURED = (
    ("in_process", "FinGate in-process (graphql-core path)", "in_process_compiled"),
    ("in_process_compiled", "FinGate in-process (compiled)", "in_process"),
    ("http", "FinGate over HTTP (graphql-core path)", "http_compiled"),
    ("http_compiled", "FinGate over HTTP (compiled)", "http"),
)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in LIBRARIES},
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _ms(stats: dict[str, float] | None, key: str) -> str:
    return f"{stats[key]:.2f} ms" if stats else "-"


def _ratio(value: float, floor: float) -> str:
    return f"{value / floor:.1f}x" if floor > 0 else "-"


def _workload_rows(name: str, w: dict[str, Any]) -> list[list[str]]:
    floors = {k: w[k]["median_ms"] for k, _ in _BASELINES}
    rows = []
    for key, label, other in _MEASURED:
        if key not in w:
            continue
        median = w[key]["median_ms"]
        ratios = [_ratio(median, floors[k]) for k, _ in _BASELINES] + [_ratio(median, sum(floors.values()))]
        ratios.append(_ratio(median, w[other]["median_ms"]) if other in w else "")
        rows.append([f"{name} {label}", _ms(w.get(key), "median_ms"), _ms(w.get(key), "p90_ms"), *ratios])
    rows += [
        [f"{name} {label}", _ms(w[k], "median_ms"), _ms(w[k], "p90_ms"), "", "", "", "", ""] for k, label in _BASELINES
    ]
    if floor := w.get("http_floor"):  # no GraphQL, no database: what any server pays to send this answer
        label = f"{name} HTTP floor: FinGate's answer from a bare route (`bench.floor`)"
        rows.append([label, _ms(floor, "median_ms"), _ms(floor, "p90_ms"), _ratio(floor["median_ms"], floors["a"]),
                     "", "", "", ""])  # fmt: skip
    return rows


# Execution alone on pre-fetched data, sampled in turns: (key, label); ratios against graphql-core's
# `graphql()` (the x (b) column) and, for FinGate's rows, against FinGate's other path.
_EXECUTION = (
    ("exec_compiled_step", "FinGate's compiled execute step (`CompiledEngine.run`)", None),
    ("exec_compiled", "FinGate (compiled)", "exec"),
    ("exec", "FinGate (graphql-core path)", "exec_compiled"),
    ("b_execute", "graphql-core `execute()` (parsed and validated once)", None),
    ("b_graphql", "graphql-core `graphql()`", None),
)


def _execution_rows(name: str, w: dict[str, Any]) -> list[list[str]]:
    timed = w.get("execution")
    if not timed:
        return []
    rows = []
    for key, label, other in _EXECUTION:
        median = timed[key]["median_ms"]
        vs_b = _ratio(median, timed["b_graphql"]["median_ms"]) if key != "b_graphql" else ""
        vs_other = _ratio(median, timed[other]["median_ms"]) if other else ""
        rows.append(
            [f"{name} execution on pre-fetched data: {label}", _ms(timed[key], "median_ms"),
             _ms(timed[key], "p90_ms"), "", vs_b, "", "", vs_other]
        )  # fmt: skip
    return rows


def _single(label: str, value: str) -> list[str]:
    return [label, value, "", "", "", "", "", ""]


def rows(results: dict[str, Any]) -> list[list[str]]:
    w, server = results["workloads"], results["server"]
    out = [row for name in WORKLOADS for row in _workload_rows(name, w[name])]
    out += [row for name in WORKLOADS for row in _execution_rows(name, w[name])]
    for name in ("W1", "W2", "W1 billing"):
        for key, path in (("commands", "graphql-core path"), ("commands_compiled", "compiled")):
            if key not in w.get(name, {}):
                continue
            sizes, counts = (" / ".join(map(str, w[name][key].keys())), " / ".join(map(str, w[name][key].values())))
            out.append(_single(f"{name} database commands per query at {sizes} allocations ({path})", counts))
    for key, path in (("throughput", "graphql-core path"), ("throughput_compiled", "compiled")):
        if key in w["W3"]:
            t = w["W3"][key]
            label = f"W3 over HTTP ({path}), {t['requests']} requests, {t['concurrency']} in flight"
            out.append(_single(label, f"{t['rps']:.0f} req/s"))
    w5 = w["W5"]
    out.append(
        _single(
            f"W5 load of {w5['resources']} resources, validated ({w5['commands_per_resource']:.2f} commands each)",
            f"{w5['per_second']:.0f} resources/s",
        )
    )
    if w6 := w.get("W6"):
        label = f"W6 payer import of {w6['resources']} R4 resources from the fake payer ({w6['page_size']} a page)"
        out.append(_single(label, f"{w6['per_second']:.0f} resources/s"))
        out.append(
            _single(
                "W6 re-import of the same (every resource unchanged)", f"{w6['reimport_per_second']:.0f} resources/s"
            )
        )
    for key, label in (
        ("ready_seconds", "start to /readyz, MONGODB_URI with data"),
        ("ready_embedded_seconds", "start to /readyz, embedded database with data"),
    ):
        if server.get(key) is not None:
            out.append(_single(label, f"{server[key]:.2f} s"))
    out.append(_single("server peak RSS (VmHWM) after the HTTP runs", f"{server['peak_rss_mb']:.0f} MB"))
    if found := results.get("engines"):
        for name, by in found["reads"].items():
            for label in found["engines"]:
                out.append([f"{name} on {label}", _ms(by[label], "median_ms"), _ms(by[label], "p90_ms"), *[""] * 5])
    return out


def table(results: dict[str, Any]) -> str:
    header = ["measure", "median", "p90", "x (a)", "x (b)", "x (c)", "x (a+b+c)", "x other path"]
    lines = [header, ["---"] * len(header), *rows(results)]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the reference workloads and of compiled execution: what was measured, the bound, and whether it holds."""
    w, server = results["workloads"], results["server"]

    def ratio(name: str, key: str = "in_process") -> float:
        return float(w[name][key]["median_ms"] / w[name]["b"]["median_ms"])

    def faster(name: str, key: str, than: str) -> float:
        return float(w[name][than]["median_ms"] / w[name][key]["median_ms"])

    counted = [k for k in ("commands", "commands_compiled") if k in w["W1"]]
    constant = all(
        len(set(w[name][k].values())) == 1 for name in ("W1", "W2", "W1 billing") if name in w for k in counted
    )
    checks = [
        ("W1 execution within 1.15x of (b), graphql-core path", ratio("W1"), "x", ratio("W1") <= 1.15),
        ("W2 execution within 1.15x of (b), graphql-core path", ratio("W2"), "x", ratio("W2") <= 1.15),
    ]
    if "in_process_compiled" in w["W1"]:
        for name in ("W1", "W2"):
            r = ratio(name, "in_process_compiled")
            checks.append((f"{name} execution within 1.15x of (b), compiled path", r, "x", r <= 1.15))
    checks += [
        ("W1/W2 and W1's billing views: database commands constant in allocations", float(constant), "", constant),
        ("W3 over HTTP at least 300 req/s, graphql-core path", w["W3"]["throughput"]["rps"], "req/s",
         w["W3"]["throughput"]["rps"] >= 300),
    ]  # fmt: skip
    if "throughput_compiled" in w["W3"]:
        rps = w["W3"]["throughput_compiled"]["rps"]
        checks.append(("W3 over HTTP at least 300 req/s, compiled path", rps, "req/s", rps >= 300))
    checks += [
        (
            "W5 at least 1,000 validated resources/s",
            w["W5"]["per_second"],
            "resources/s",
            w["W5"]["per_second"] >= 1000,
        ),
        ("start to /readyz under 3 s (MONGODB_URI)", server["ready_seconds"], "s", server["ready_seconds"] < 3),
    ]
    if server.get("ready_embedded_seconds") is not None:
        embedded = server["ready_embedded_seconds"]
        checks.append(
            ("start to /readyz under 1.2 s (embedded database, existing data)", embedded, "s", embedded < 1.2)
        )
    for name in ("W1", "W2"):  # the whole request against the reads alone, same commands, same server
        for key, path in (("http", "graphql-core path"), ("http_compiled", "compiled")):
            if key in w[name]:
                r = w[name][key]["median_ms"] / w[name]["a"]["median_ms"]
                checks.append((f"{name} over HTTP at most 1.5x raw PyMongo (a), {path}", r, "x", r <= 1.5))
    if found := results.get("engines"):
        labels, reads = found["engines"], found["reads"]
        fast, rest = labels[0], labels[1:]
        for name, by in reads.items():
            for other in rest:
                r = by[other]["median_ms"] / by[fast]["median_ms"]
                checks.append((f"{name}: {fast} at least 3x faster than {other}", r, "x faster", r >= 3))
    for name in ("W1", "W2"):  # the compiled-execution targets
        if timed := w[name].get("execution"):
            step = timed["b_execute"]["median_ms"] / timed["exec_compiled_step"]["median_ms"]
            request = timed["b_execute"]["median_ms"] / timed["exec_compiled"]["median_ms"]
            checks += [
                (f"{name} compiled execute step at least 10x faster than graphql-core `execute()` on the same data",
                 step, "x faster", step >= 10),
                (f"{name} compiled request (parse cache, validation, limits, execution) at least 10x faster than "
                 "graphql-core `execute()` on the same data", request, "x faster", request >= 10),
            ]  # fmt: skip
        if "http_compiled" in w[name]:
            vs_http = faster(name, "http_compiled", "http")
            checks.append(
                (f"{name} compiled at least 5x faster than the graphql-core path over HTTP, end to end", vs_http,
                 "x faster", vs_http >= 5)
            )  # fmt: skip
    return [{"target": t, "measured": round(m, 2), "unit": u, "met": ok} for t, m, u, ok in checks]


def verdict_lines(found: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"- {v['target']}: {'met' if v['met'] else 'MISSED'} ({v['measured']} {v['unit']})".rstrip() for v in found
    )


def write(results: dict[str, Any], path: Path = RESULTS) -> None:
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
