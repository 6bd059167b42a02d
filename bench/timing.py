"""Timing helpers: repeated samples of an async call, summarised as median and p90 in milliseconds."""

from __future__ import annotations

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
