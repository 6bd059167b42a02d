"""Change events: reading and following the outbox of committed writes, per tenant and in order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import weakref
from collections import deque
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


class _Feed:
    """One reader of a tenant's outbox in this process for all its followers: a commit (or the poll) costs one
    read (and one sequencing of pending events), not one per follower; followers take events from its recent
    ones, and only one resuming from before them reads the outbox itself."""

    RECENT = 2000  # events kept, oldest first, positions contiguous

    def __init__(self, store: Store, poll: float, head: int) -> None:
        self.store = store
        self.poll = poll
        self.recent: deque[Resource] = deque(maxlen=self.RECENT)
        self.head = head  # the position read up to: from its first follower's
        self.moved = asyncio.Event()  # set, then replaced, whenever `head` moves
        self.followers = 0
        self.task = asyncio.get_running_loop().create_task(self._run())

    def past(self, position: int, batch: int) -> list[Resource] | None:
        """Up to `batch` events after `position` from the recent ones ([] when caught up); None when they do not
        reach back to it (the follower reads the outbox itself)."""
        if position >= self.head:
            return []
        if not self.recent or self.recent[0]["position"] > position + 1:
            return None
        start = position + 1 - self.recent[0]["position"]
        return list(itertools.islice(self.recent, start, start + batch))

    def _moved(self) -> None:
        moved, self.moved = self.moved, asyncio.Event()
        moved.set()

    async def _run(self) -> None:
        while True:
            commit = self.store.commits.next()
            found: list[Resource] = []
            try:
                found = await self.store.events_after(self.head, BATCH)
            except Exception:  # an outage: its followers wait, and the next round tries again
                log.warning("change feed of tenant %s: reading the outbox failed", self.store.tenant, exc_info=True)
            if found:
                self.recent.extend(found)
                self.head = found[-1]["position"]
                self._moved()
            if len(found) < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(commit.wait(), self.poll)


# The feeds of this process: per Store (its `commits`, shared by every view of it), then database, tenant, poll.
_feeds: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, float], _Feed]] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def _joined(store: Store, poll: float, position: int) -> AsyncIterator[_Feed]:
    """The tenant's feed (started at `position` by its first follower), for as long as one follows it."""
    feeds = _feeds.setdefault(store.commits, {})
    key = (store.db.name, store.tenant, poll)
    feed = feeds.get(key)
    if feed is None or feed.task.done() or feed.task.get_loop() is not asyncio.get_running_loop():
        feed = feeds[key] = _Feed(store, poll, position)
    feed.followers += 1
    try:
        yield feed
    finally:
        feed.followers -= 1
        if feed.followers == 0:
            feed.task.cancel()
            if feeds.get(key) is feed:
                del feeds[key]


async def follow(
    store: Store,
    after: int,
    types: frozenset[str] | None = None,
    poll: float = POLL_SECONDS,
    batch: int = BATCH,
) -> AsyncIterator[Resource]:
    """Every event of `store`'s tenant past position `after` (-1: from the last one now), in order, forever.

    The outbox is the source of truth; the process's one feed of the tenant reads it after each commit in this
    process, or every `poll` seconds, and its followers take their events from what it read (one resuming from
    further back reads the outbox itself until it catches up).
    """
    position = await store.last_position() if after < 0 else after
    async with _joined(store, poll, position) as feed:
        while True:
            moved = feed.moved  # before looking: a move after the look still wakes this follower
            found = feed.past(position, batch)
            if found is None:  # from before the feed's recent events: read them, of every type, to move past all
                found = await store.events_after(position, batch)
            for event in found:
                position = event["position"]
                if types is None or event["resourceType"] in types:
                    yield event
            if not found:
                await moved.wait()


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
