"""What the rest-hook dispatcher keeps: per Subscription its place in the outbox, lease and counts; every attempt.

A Subscription's state is one document (`_id` `<tenant>/<id>`); a dispatcher works on it only while it holds
its lease (`owner`, `leaseUntil`), taken and renewed by conditional updates, so two dispatchers on one
database never deliver for the same Subscription at once, and its events go out one at a time, in order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.store import HOOK_ATTEMPTS, TENANT, Store, outbox

STATE = "hook_state"
ACTIVE, DEAD_LETTER = "active", "dead-letter"


class Deliveries:
    """The dispatcher's records, over the whole database (every tenant's Subscriptions)."""

    def __init__(self, store: Store) -> None:
        self.db = store.db

    async def rest_hooks(self) -> list[tuple[str, dict[str, Any]]]:
        """Every tenant's active and requested (awaiting their handshake) rest-hook Subscriptions: (tenant, resource)."""
        query = {"status": {"$in": ["active", "requested"]}, "channelType.code": "rest-hook"}
        cursor = self.db["Subscription"].find(query, {"_id": 0, "_search": 0})
        return [(doc.pop(TENANT), doc) async for doc in cursor]

    async def tenants(self) -> list[str]:
        """Every tenant that has written anything (one outbox counter each)."""
        return await outbox.tenants(self.db)

    async def lease(
        self, tenant: str, id: str, owner: str, seconds: float, start: int | None = None, now: datetime | None = None
    ) -> dict[str, Any] | None:
        """Take or renew the lease on a Subscription's state (made on first use, starting at `start`, else at the
        event that created the Subscription, else at the tenant's last event); None while another holds it. `now`:
        the caller's clock (the state's `started`, and the lease's start)."""
        now = now or datetime.now(UTC)
        key = f"{tenant}/{id}"
        if start is None:
            start = await outbox.created_at(self.db, tenant, "Subscription", id)
        if start is None:
            start = await outbox.last(self.db, tenant)
        try:
            return await self.db[STATE].find_one_and_update(
                {"_id": key, "$or": [{"owner": owner}, {"leaseUntil": {"$lt": now}}]},
                {
                    "$set": {"owner": owner, "leaseUntil": now + timedelta(seconds=seconds)},
                    "$setOnInsert": {
                        TENANT: tenant,
                        "subscription": id,
                        "position": start,
                        "eventsSinceSubscriptionStart": 0,
                        "state": ACTIVE,
                        "lastError": None,
                        "started": now,  # heartbeats count from here until something is sent
                    },
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # it exists and another dispatcher holds it
            return None

    async def release(self, tenant: str, id: str, owner: str) -> None:
        await self.db[STATE].update_one(
            {"_id": f"{tenant}/{id}", "owner": owner}, {"$set": {"leaseUntil": datetime.now(UTC)}}
        )

    async def advance(self, tenant: str, id: str, owner: str, position: int, delivered: bool) -> bool:
        """Move past `position` (counted when `delivered`); False if the lease was lost meanwhile."""
        result = await self.db[STATE].update_one(
            {"_id": f"{tenant}/{id}", "owner": owner},
            {
                "$set": {"position": position, "lastError": None},
                "$inc": {"eventsSinceSubscriptionStart": 1 if delivered else 0},
            },
        )
        return result.matched_count == 1

    async def sent(self, tenant: str, id: str, owner: str, when: datetime) -> None:
        """An endpoint accepted a notification, a handshake or a heartbeat at `when` (heartbeats count from it)."""
        await self.db[STATE].update_one({"_id": f"{tenant}/{id}", "owner": owner}, {"$set": {"lastSent": when}})

    async def fail(self, tenant: str, id: str, owner: str, error: str, dead: str | None) -> None:
        """Record a failure; `dead`: the Subscription's version when its notification ran out of attempts."""
        update: dict[str, Any] = {"lastError": error}
        if dead is not None:
            update["state"] = DEAD_LETTER
            update["deadVersion"] = dead
        await self.db[STATE].update_one({"_id": f"{tenant}/{id}", "owner": owner}, {"$set": update})

    async def record(self, tenant: str, attempt: dict[str, Any]) -> None:
        await self.db[HOOK_ATTEMPTS].insert_one({**attempt, TENANT: tenant, "when": datetime.now(UTC)})

    async def revive(self, tenant: str, id: str, owner: str) -> dict[str, Any] | None:
        """Back to `active` (from the notification that died), for a Subscription changed since."""
        return await self.db[STATE].find_one_and_update(
            {"_id": f"{tenant}/{id}", "owner": owner, "state": DEAD_LETTER},
            {"$set": {"state": ACTIVE}, "$unset": {"deadVersion": ""}},
            return_document=ReturnDocument.AFTER,
        )

    async def state(self, tenant: str, id: str) -> dict[str, Any] | None:
        return await self.db[STATE].find_one({"_id": f"{tenant}/{id}"}, {"_id": 0, TENANT: 0})

    async def attempt_count(self, tenant: str, id: str) -> int:
        return await self.db[HOOK_ATTEMPTS].count_documents({TENANT: tenant, "subscription": id})

    async def attempts(self, tenant: str, id: str, count: int) -> list[dict[str, Any]]:
        """A Subscription's delivery attempts, newest first (at most `count`)."""
        cursor = self.db[HOOK_ATTEMPTS].find(
            {TENANT: tenant, "subscription": id},
            {"_id": 0, TENANT: 0},
            sort=[("when", DESCENDING), ("_id", DESCENDING)],
            limit=count,
        )
        return [doc async for doc in cursor]
