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
_MEASURED = (("in_process", "FinGate in-process"), ("http", "FinGate over HTTP"))


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
    for key, label in _MEASURED:
        median = w[key]["median_ms"] if key in w else 0.0
        ratios = [_ratio(median, floors[k]) for k, _ in _BASELINES] + [_ratio(median, sum(floors.values()))]
        rows.append([f"{name} {label}", _ms(w.get(key), "median_ms"), _ms(w.get(key), "p90_ms"), *ratios])
    rows += [
        [f"{name} {label}", _ms(w[k], "median_ms"), _ms(w[k], "p90_ms"), "", "", "", ""] for k, label in _BASELINES
    ]
    return rows


def _single(label: str, value: str) -> list[str]:
    return [label, value, "", "", "", "", ""]


def rows(results: dict[str, Any]) -> list[list[str]]:
    w, server = results["workloads"], results["server"]
    out = [row for name in WORKLOADS for row in _workload_rows(name, w[name])]
    for name in ("W1", "W2"):
        counts = " / ".join(str(n) for n in w[name]["commands"].values())
        out.append(
            _single(
                f"{name} database commands per query at {' / '.join(map(str, w[name]['commands']))} allocations", counts
            )
        )
    out.append(
        _single(
            f"W3 over HTTP, {w['W3']['throughput']['requests']} requests, {w['W3']['throughput']['concurrency']} in flight",
            f"{w['W3']['throughput']['rps']:.0f} req/s",
        )
    )
    w5 = w["W5"]
    out.append(
        _single(
            f"W5 load of {w5['resources']} resources, validated ({w5['commands_per_resource']:.1f} commands each)",
            f"{w5['per_second']:.0f} resources/s",
        )
    )
    for key, label in (
        ("ready_seconds", "start to /readyz, MONGODB_URI with data"),
        ("ready_embedded_seconds", "start to /readyz, embedded database with data"),
    ):
        if server.get(key) is not None:
            out.append(_single(label, f"{server[key]:.2f} s"))
    out.append(_single("server peak RSS (VmHWM) after the HTTP runs", f"{server['peak_rss_mb']:.0f} MB"))
    return out


def table(results: dict[str, Any]) -> str:
    header = ["measure", "median", "p90", "x (a)", "x (b)", "x (c)", "x (a+b+c)"]
    lines = [header, ["---"] * len(header), *rows(results)]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 5: what was measured, the bound, and whether it holds."""
    w, server = results["workloads"], results["server"]

    def ratio(name: str) -> float:
        return float(w[name]["in_process"]["median_ms"] / w[name]["b"]["median_ms"])

    constant = all(len(set(w[name]["commands"].values())) == 1 for name in ("W1", "W2"))
    checks = [
        ("W1 execution within 1.15x of (b)", ratio("W1"), "x", ratio("W1") <= 1.15),
        ("W2 execution within 1.15x of (b)", ratio("W2"), "x", ratio("W2") <= 1.15),
        ("W1/W2 database commands constant in allocations", float(constant), "", constant),
        ("W3 over HTTP at least 300 req/s", w["W3"]["throughput"]["rps"], "req/s", w["W3"]["throughput"]["rps"] >= 300),
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
        checks.append(("start to /readyz under 3 s (embedded database)", embedded, "s", embedded < 3))
    return [{"target": t, "measured": round(m, 2), "unit": u, "met": ok} for t, m, u, ok in checks]


def verdict_lines(found: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"- {v['target']}: {'met' if v['met'] else 'MISSED'} ({v['measured']} {v['unit']})".rstrip() for v in found
    )


def write(results: dict[str, Any], path: Path = RESULTS) -> None:
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
