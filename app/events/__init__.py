"""Change events: reading and following the outbox of committed writes, per tenant and in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from app import errors
from app.fhir.values import Resource, instant
from app.store import Store

log = logging.getLogger("fingate.events")

POLL_SECONDS = 1.0  # a follower looks again at least this often (other instances' writes wake nobody here)
BATCH = 100


def parse_position(text: str | None, expression: str = "after") -> int:
    """A client's position (`after:`): the decimal position of the last event it has; none means 'from now'."""
    if text is None:
        return -1
    if not text.isdigit() or len(text) > 18:
        raise errors.bad_input(f"{expression} must be an event position (digits), got {text!r}", expression=expression)
    return int(text)


def public(event: Resource) -> dict[str, Any]:
    """An event as clients see it: the position as a string, `when` as a FHIR instant."""
    return {**event, "position": str(event["position"]), "when": instant(event["when"])}


async def follow(
    store: Store,
    after: int,
    types: frozenset[str] | None = None,
    poll: float = POLL_SECONDS,
    batch: int = BATCH,
) -> AsyncIterator[Resource]:
    """Every event of `store`'s tenant past position `after` (-1: from the last one now), in order, forever.

    Each batch is read from the outbox (the source of truth); between batches the follower sleeps until a
    commit in this process or `poll` seconds, whichever comes first.
    """
    position = await store.last_position() if after < 0 else after
    while True:
        commit = store.commits.next()
        found = await store.events_after(position, batch, types)
        for event in found:
            position = event["position"]
            yield event
        if len(found) < batch:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(commit.wait(), poll)


async def in_rounds(
    store: Store, one_round: Callable[[], Awaitable[Any]], what: str, poll: float = POLL_SECONDS
) -> None:
    """Run `one_round` until cancelled; after each, wait until a commit in this process or `poll` seconds.
    A round that fails (a database outage) is logged as `what` and tried again the next time."""
    while True:
        commit = store.commits.next()
        try:
            await one_round()
        except Exception:
            log.exception("%s round failed", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(commit.wait(), poll)
