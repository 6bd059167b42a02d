"""FinGate over HTTP for the benchmark: `fingate serve` as a subprocess, time to /readyz, latency, throughput, RSS."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.timing import Stats, sample

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 120.0
_JSON = {"content-type": "application/json"}


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    ready_seconds: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(settings: dict[str, str], log: Path, args: tuple[str, ...] = (), floor: bool = False) -> Server:
    """`python -m app.cli serve` with `settings` as environment (with `floor`, `bench.floor`'s bare route under
    uvicorn's defaults, as `fingate serve` uses them); returns once /readyz answers 200."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI" and not k.startswith("FINGATE_")}
    env |= {"FINGATE_PORT": str(port), "FINGATE_LOAD_DEMO": "false", **settings}
    command = (
        ["uvicorn", "--factory", "bench.floor:app", "--port", str(port), "--no-access-log", "--log-level", "warning"]
        if floor
        else ["app.cli", "serve"]
    )
    started = time.perf_counter()
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *command, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - started < READY_TIMEOUT:
        if process.poll() is not None:
            raise RuntimeError(f"fingate serve exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return Server(process, url, time.perf_counter() - started)
        except httpx.TransportError:
            pass
        time.sleep(0.01)
    stop(Server(process, url, 0))
    raise RuntimeError(f"fingate serve not ready within {READY_TIMEOUT:.0f} s; see {log}")


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc")


def body(query: str, variables: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"query": query, "variables": variables or {}}, default=str)


async def _post(client: httpx.AsyncClient, payload: bytes) -> bytes:
    response = await client.post("/graphql", content=payload, headers=_JSON)
    if response.status_code != 200 or b'"errors"' in response.content:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
    return response.content


async def answer(url: str, payload: bytes) -> bytes:
    """The answer's body, as the server sends it before compression."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await _post(client, payload)


async def latency(url: str, payload: bytes, n: int) -> Stats:
    """Median and p90 of `n` sequential requests on one keep-alive connection."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await sample(lambda: _post(client, payload), n)


async def throughput(url: str, payload: bytes, total: int, concurrency: int) -> float:
    """Requests per second for `total` requests, `concurrency` in flight at a time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(_post(client, payload) for _ in range(concurrency)))
        todo = iter(range(total))

        async def worker() -> None:
            for _ in todo:
                await _post(client, payload)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - started)
