"""Idempotency-Key records: a mutation request's first response, kept per tenant and key so a retry replays it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from app import errors
from app.store import IDEMPOTENCY_KEYS, TENANT, Store, _guarded

PENDING, DONE = "pending", "done"


@dataclass(frozen=True)
class Record:
    """A key's record: `pending` while its first request runs, then `done` with that request's response."""

    request_hash: str
    state: str
    expires: datetime
    status: int | None = None
    body: bytes | None = None
    content_type: str | None = None


def _record(doc: dict[str, Any]) -> Record:
    expires = doc["expires"]
    return Record(
        request_hash=doc["hash"],
        state=doc["state"],
        expires=expires if expires.tzinfo else expires.replace(tzinfo=UTC),
        status=doc.get("status"),
        body=bytes(doc["body"]) if doc.get("body") is not None else None,
        content_type=doc.get("contentType"),
    )


class IdempotencyKeys:
    """The `idempotency_keys` collection: unique on (tenant, key); a TTL index removes a record once `expires`
    (its creation plus the TTL) has passed, and a record past it is treated as gone before that."""

    def __init__(self, store: Store, ttl_seconds: float) -> None:
        self.collection = store.db[IDEMPOTENCY_KEYS]  # indexes: `Store.ensure_indexes`
        self.ttl = timedelta(seconds=ttl_seconds)

    @_guarded
    async def claim(self, tenant: str, key: str, request_hash: str) -> Record | None:
        """Claim `key` for a request: None when this caller now holds it (pending), else the record that
        holds it (pending: another request is running; done: its response)."""
        for _ in range(2):
            now = datetime.now(UTC)
            doc = {TENANT: tenant, "key": key, "hash": request_hash, "state": PENDING, "expires": now + self.ttl}
            try:
                await self.collection.insert_one(doc)
                return None
            except DuplicateKeyError:
                found = await self.collection.find_one({TENANT: tenant, "key": key})
            if found is None:  # removed in between (expired, or released): claim it again
                continue
            record = _record(found)
            if record.expires > now:
                return record
            # Expired, not yet removed by the TTL monitor: gone, as far as anyone can tell.
            await self.collection.delete_one({"_id": found["_id"], "expires": found["expires"]})
        raise errors.FinGateError(
            errors.CONFLICT,
            f"Idempotency-Key {key!r} is being claimed by another request: retry",
            extensions={"retryable": True, "retryAfter": errors.RETRY_AFTER_SECONDS},
        )

    @_guarded
    async def get(self, tenant: str, key: str) -> Record | None:
        found = await self.collection.find_one({TENANT: tenant, "key": key})
        return None if found is None else _record(found)

    @_guarded
    async def complete(self, tenant: str, key: str, status: int, body: bytes, content_type: str) -> None:
        """Keep the response of the request holding `key`, for every retry until it expires."""
        await self.collection.update_one(
            {TENANT: tenant, "key": key, "state": PENDING},
            {"$set": {"state": DONE, "status": status, "body": body, "contentType": content_type}},
        )

    @_guarded
    async def release(self, tenant: str, key: str) -> None:
        """Give `key` up (its request stored nothing and may be sent again): the next request with it runs."""
        await self.collection.delete_one({TENANT: tenant, "key": key, "state": PENDING})
