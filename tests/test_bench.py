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
MEASURES = ("in_process", "http", "a", "b", "b_execute", "c")


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
    assert "| W1 FinGate in-process |" in run.stdout
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", QUERY_WORKLOADS)
def test_query_workload_has_every_measure(results: dict[str, Any], name: str) -> None:
    measured = results["workloads"][name]
    assert all(measured[key]["median_ms"] >= 0 and measured[key]["n"] > 0 for key in MEASURES)


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
    assert server["ready_seconds"] > 0 and server["peak_rss_mb"] > 0
    assert {"nproc", "cpu", "date", "python", "versions"} <= set(results["machine"])
    assert len(results["targets"]) >= 6


@pytest.mark.parametrize("name", ["W1", "W2"])
def test_database_commands_do_not_grow_with_allocations(results: dict[str, Any], name: str) -> None:
    counts = results["workloads"][name]["commands"]
    assert set(counts) == {"10", "50", "200"}
    assert len(set(counts.values())) == 1, f"{name} database commands per query grow with allocations: {counts}"
