"""`python -m bench --quick`: a smoke run of the benchmark (no timing assertions) and its one correctness check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUERY_WORKLOADS = ("W1", "W2", "W3", "W4")
MEASURES = ("in_process", "http", "a", "b", "c")
EXECUTION = (
    "exec_compiled_step",
    "exec_compiled",
    "exec",
    "b_execute",
    "b_graphql",
)  # on pre-fetched data, sampled in turns
COMPILED_WORKLOADS = ("W1", "W2", "W3")  # measured on both execution paths (issue 8)
PATH_ROWS = (
    "FinGate in-process (graphql-core path)",
    "FinGate in-process (compiled)",
    "FinGate over HTTP (graphql-core path)",
    "FinGate over HTTP (compiled)",
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for name in COMPILED_WORKLOADS:
        for label in PATH_ROWS:
            assert f"| {name} {label} |" in run.stdout, f"no row {name} {label}"
        assert f"| {name} execution on pre-fetched data: FinGate (compiled) |" in run.stdout
    assert "| W4 FinGate in-process (graphql-core path) |" in run.stdout
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", QUERY_WORKLOADS)
def test_query_workload_has_every_measure(results: dict[str, Any], name: str) -> None:
    measured = results["workloads"][name]
    assert all(measured[key]["median_ms"] >= 0 and measured[key]["n"] > 0 for key in MEASURES)


@pytest.mark.parametrize("name", COMPILED_WORKLOADS)
def test_read_workload_is_measured_on_both_paths(results: dict[str, Any], name: str) -> None:
    measured = results["workloads"][name]
    for key in ("in_process", "in_process_compiled", "http", "http_compiled"):
        assert measured[key]["median_ms"] > 0 and measured[key]["n"] > 0, key
    for key in EXECUTION:
        assert measured["execution"][key]["median_ms"] > 0 and measured["execution"][key]["n"] > 0, key
    # the compiled samples were answered by compiled plans, none handed back to graphql-core
    assert measured["in_process_compiled"]["paths"]["compiled"] > 0
    assert measured["in_process_compiled"]["paths"]["fallback"] == 0


def test_load_workload_and_server_are_measured(results: dict[str, Any]) -> None:
    w5, server = results["workloads"]["W5"], results["server"]
    assert w5["resources"] > 0 and w5["per_second"] > 0
    assert set(w5["cost_us"]) == {
        "total",
        "validation walk",
        "fhir.resources model",
        "rules, reads and the write transaction",
    }
    assert results["workloads"]["W3"]["throughput"]["rps"] > 0
    assert results["workloads"]["W3"]["throughput_compiled"]["rps"] > 0
    assert server["ready_seconds"] > 0 and server["peak_rss_mb"] > 0
    assert server["compiled"]["ready_seconds"] > 0 and server["compiled"]["peak_rss_mb"] > 0
    assert {"nproc", "cpu", "date", "python", "versions"} <= set(results["machine"])
    assert len(results["targets"]) >= 6
    for target in ("compiled execute step at least 10x faster", "at least 5x faster than the graphql-core path"):
        assert sum(target in v["target"] for v in results["targets"]) == 2, target  # W1 and W2 (issue 8)


@pytest.mark.parametrize("name", ["W1", "W2"])
@pytest.mark.parametrize("key", ["commands", "commands_compiled"])
def test_database_commands_do_not_grow_with_allocations(results: dict[str, Any], name: str, key: str) -> None:
    counts = results["workloads"][name][key]
    assert set(counts) == {"10", "50", "200"}
    assert len(set(counts.values())) == 1, f"{name} database commands per query grow with allocations: {counts}"
