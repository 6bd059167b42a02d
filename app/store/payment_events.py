"""The payment processor's received events: one record per event id and tenant (a unique index), plus duplicates."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

COLLECTION = "payment_events"
INTENTS = "payment_intents"  # one document per payment intent, written by every posting that concerns it
TENANT = "_tenant"
PROCESSING = "processing"  # claimed by a delivery that is posting it now
FAILED = "failed"  # its posting failed for a reason outside the event (an outage): a redelivery posts it again
DUPLICATE = "duplicate"

# `key` is the event id for the first delivery (unique per tenant: the idempotency key); a duplicate
# delivery is its own record, keyed `<event id>#duplicate#<random>`, pointing at the first.
INDEXES = [
    IndexModel([(TENANT, ASCENDING), ("key", ASCENDING)], unique=True),
    IndexModel([(TENANT, ASCENDING), ("receivedAt", DESCENDING)]),
    IndexModel([(TENANT, ASCENDING), ("paymentIntent", ASCENDING)]),
]


def _public(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is not None:
        doc.pop("_id", None)
        doc.pop(TENANT, None)
    return doc


class PaymentEvents:
    """One tenant's received events (a view over the Store's database)."""

    def __init__(self, db: AsyncDatabase[Any], tenant: str) -> None:
        self.events = db[COLLECTION]
        self.intents = db[INTENTS]
        self.tenant = tenant

    def _id(self, key: str) -> str:
        return f"{self.tenant}/{key}"

    async def claim(
        self, event_id: str, fields: dict[str, Any], now: datetime, abandoned_before: datetime
    ) -> dict[str, Any] | None:
        """Record the event as being posted by this delivery; None when it was received before (the unique
        key), unless that earlier posting failed, or was claimed before `abandoned_before` and never finished
        (its process died: its transaction never committed), which this delivery then takes over."""
        doc = {"_id": self._id(event_id), TENANT: self.tenant, "key": event_id, "eventId": event_id, **fields}
        doc.update(outcome=PROCESSING, receivedAt=now, claimedAt=now, deliveries=1)
        try:
            await self.events.insert_one(doc)
            return _public(doc)
        except DuplicateKeyError:
            pass
        retaken = await self.events.find_one_and_update(
            {
                "_id": self._id(event_id),
                "$or": [{"outcome": FAILED}, {"outcome": PROCESSING, "claimedAt": {"$lt": abandoned_before}}],
            },
            {"$set": {"outcome": PROCESSING, "reason": None, "claimedAt": now}, "$inc": {"deliveries": 1}},
            return_document=ReturnDocument.AFTER,
        )
        return _public(retaken)

    async def record_duplicate(self, event_id: str, fields: dict[str, Any], now: datetime) -> dict[str, Any]:
        """A further delivery of a received event: counted on the first, and kept as its own record."""
        first = await self.events.find_one_and_update(
            {"_id": self._id(event_id)}, {"$inc": {"deliveries": 1}}, return_document=ReturnDocument.AFTER
        )
        state = (first or {}).get("outcome", "unknown")
        key = f"{event_id}#duplicate#{uuid.uuid4().hex}"
        doc = {
            "_id": self._id(key),
            TENANT: self.tenant,
            "key": key,
            "eventId": event_id,
            **fields,
            **{k: first[k] for k in ("paymentIntent", "invoice") if first and first.get(k)},
            "outcome": DUPLICATE,
            "reason": f"event {event_id} was received before (its outcome: {state}); nothing posted again",
            "duplicateOf": event_id,
            "receivedAt": now,
        }
        await self.events.insert_one(doc)
        return _public(doc)  # type: ignore[return-value]

    async def lock_intent(self, payment_intent: str, session: AsyncClientSession) -> None:
        """Write the intent's document in `session`'s transaction: of two postings for one intent (a payment and
        its refund, delivered at once), one conflicts and retries, so each sees what the other committed."""
        await self.intents.update_one(
            {"_id": self._id(payment_intent)},
            {"$inc": {"postings": 1}, "$setOnInsert": {TENANT: self.tenant, "paymentIntent": payment_intent}},
            upsert=True,
            session=session,
        )

    async def fail(self, event_id: str, reason: str) -> None:
        """The posting failed (nothing was posted): a redelivery may take it over. Only while it is still being
        posted: a commit that did happen before its confirmation was lost has settled it already."""
        await self.events.update_one(
            {"_id": self._id(event_id), "outcome": PROCESSING}, {"$set": {"outcome": FAILED, "reason": reason}}
        )

    async def settle(self, event_id: str, fields: dict[str, Any], session: AsyncClientSession | None = None) -> None:
        """Write the event's outcome (in the posting's transaction when `session` is given)."""
        await self.events.update_one({"_id": self._id(event_id)}, {"$set": fields}, session=session)

    async def get(self, event_id: str, session: AsyncClientSession | None = None) -> dict[str, Any] | None:
        return _public(await self.events.find_one({"_id": self._id(event_id)}, session=session))

    async def for_intent(
        self, payment_intent: str, action: str, outcomes: tuple[str, ...], session: AsyncClientSession | None = None
    ) -> list[dict[str, Any]]:
        """The first deliveries of `action` ("payment" or "refund") for a payment intent, in `outcomes`, oldest first."""
        query = {
            TENANT: self.tenant,
            "paymentIntent": payment_intent,
            "action": action,
            "outcome": {"$in": list(outcomes)},
            "duplicateOf": {"$exists": False},
        }
        cursor = self.events.find(query, sort=[("receivedAt", ASCENDING), ("key", ASCENDING)], session=session)
        return [_public(d) async for d in cursor]  # type: ignore[misc]

    def _query(self, outcome: str | None, event_type: str | None, event_id: str | None) -> dict[str, Any]:
        query: dict[str, Any] = {TENANT: self.tenant}
        if outcome is not None:
            query["outcome"] = outcome
        if event_type is not None:
            query["type"] = event_type
        if event_id is not None:
            query["eventId"] = event_id
        return query

    async def page(
        self, count: int, offset: int, outcome: str | None, event_type: str | None, event_id: str | None
    ) -> list[dict[str, Any]]:
        """Newest first."""
        cursor = self.events.find(
            self._query(outcome, event_type, event_id),
            sort=[("receivedAt", DESCENDING), ("key", DESCENDING)],
            skip=offset,
            limit=count,
        )
        return [_public(d) async for d in cursor]  # type: ignore[misc]

    async def count(self, outcome: str | None, event_type: str | None, event_id: str | None) -> int:
        return await self.events.count_documents(self._query(outcome, event_type, event_id))
