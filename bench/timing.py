"""Timing helpers: repeated samples of an async call, summarised as median and p90 in milliseconds."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

Stats = dict[str, float]


def summary(seconds: list[float]) -> Stats:
    ordered = sorted(seconds)
    p90 = ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]
    return {"median_ms": statistics.median(ordered) * 1000, "p90_ms": p90 * 1000, "n": len(ordered)}


async def sample(call: Callable[[], Awaitable[Any]], n: int, warmup: int = 2) -> Stats:
    """Median and p90 of `n` sequential calls, after `warmup` untimed ones (caches filled, connections open)."""
    for _ in range(warmup):
        await call()
    seconds = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - started)
    return summary(seconds)


def sample_sync(call: Callable[[], Any], n: int, warmup: int = 2) -> Stats:
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return summary(seconds)


async def interleaved(calls: dict[str, Callable[[], Awaitable[Any]]], n: int, block: int = 5) -> dict[str, Stats]:
    """Median and p90 of `n` samples of each call, taken in turns, a block of calls at a time (a a a a a,
    b b b b b, a a ...): a change in the machine's load weighs on every call alike, so their ratios hold
    better than from one run after another. Each block starts with a full garbage collection and one
    untimed call, so each call is timed warm and pays for the collections its own garbage causes, not
    for what the other call left (graphql-core makes ten times FinGate's garbage)."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    while any(len(taken) < n for taken in seconds.values()):
        for name, call in calls.items():
            gc.collect()
            await call()
            for _ in range(min(block, n - len(seconds[name]))):
                started = time.perf_counter()
                await call()
                seconds[name].append(time.perf_counter() - started)
    return {name: summary(taken) for name, taken in seconds.items()}
