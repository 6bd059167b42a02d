"""The outbox: one event per committed write, appended in the write's transaction, ordered per tenant.

Positions come from a per-tenant counter document incremented (`$inc`, upsert) inside the write's
transaction, so the counter and the event commit or vanish together: positions are gapless and
visible in commit order, and a reader that has seen position N has seen every event before it.
Two transactions of one tenant that both append conflict on the counter: the loser gets CONFLICT
(as for any write conflict) and nothing of it is stored. The increment is the last command of a write,
which keeps that window short; tenants never conflict with each other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from app import errors

OUTBOX = "outbox"
POSITIONS = "outbox_positions"  # one counter document per tenant: `_id` the tenant, `position` its last event
TENANT = "_tenant"
INTERACTIONS = ("create", "update", "delete")
INDEXES = [IndexModel([(TENANT, ASCENDING), ("position", ASCENDING)], unique=True)]


def event(
    interaction: str,
    resource_type: str,
    id: str,
    version: str,
    previous_status: str | None,
    status: str | None,
    request_id: str | None,
) -> dict[str, Any]:
    """An event before it has a position (`append` gives it one)."""
    assert interaction in INTERACTIONS, interaction
    return {
        "resourceType": resource_type,
        "id": id,
        "versionId": version,
        "interaction": interaction,
        "previousStatus": previous_status,
        "status": status,
        "when": datetime.now(UTC),
        "requestId": request_id,
    }


async def append(db: AsyncDatabase[Any], tenant: str, record: dict[str, Any], session: AsyncClientSession) -> int:
    """Give `record` the tenant's next position and store it, both in `session`'s transaction."""
    try:
        counter = await db[POSITIONS].find_one_and_update(
            {"_id": tenant},
            {"$inc": {"position": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
    except DuplicateKeyError as exc:  # a new tenant's first two writes at once: both upserted its counter
        raise errors.FinGateError(
            errors.CONFLICT, "a concurrent write conflicted with this one; nothing was written: read again and retry"
        ) from exc
    assert counter is not None  # upserted
    position = int(counter["position"])
    await db[OUTBOX].insert_one(
        {"_id": f"{tenant}/{position}", TENANT: tenant, "position": position, **record}, session=session
    )
    return position


async def after(
    db: AsyncDatabase[Any], tenant: str, position: int, limit: int, types: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    """The tenant's events past `position`, in order, at most `limit` (only of `types` when given)."""
    query: dict[str, Any] = {TENANT: tenant, "position": {"$gt": position}}
    if types is not None:
        query["resourceType"] = {"$in": sorted(types)}
    cursor = db[OUTBOX].find(query, {"_id": 0, TENANT: 0}, sort=[("position", ASCENDING)], limit=limit)
    return [doc async for doc in cursor]


async def last(db: AsyncDatabase[Any], tenant: str) -> int:
    """The tenant's last position (0 before its first event)."""
    counter = await db[POSITIONS].find_one({"_id": tenant})
    return 0 if counter is None else int(counter["position"])


async def created_at(db: AsyncDatabase[Any], tenant: str, resource_type: str, id: str) -> int | None:
    """The position of the event that created `resource_type/id` (None if the outbox has none)."""
    found = await db[OUTBOX].find_one(
        {TENANT: tenant, "resourceType": resource_type, "id": id, "interaction": "create"}, {"position": 1}
    )
    return None if found is None else int(found["position"])
