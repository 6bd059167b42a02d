"""Background job documents (a payer import's progress and outcome), one collection per kind, per tenant."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.store import TENANT, Store, _guarded

PAYER_IMPORTS = "payer_imports"


def _key(store: Store, id: str) -> str:
    return f"{store.tenant}/{id}"


@_guarded
async def save_job(store: Store, collection: str, job: dict[str, Any]) -> None:
    """Write the whole job document (it is small and has one writer: the job itself)."""
    doc = {**job, TENANT: store.tenant, "saved": datetime.now(UTC)}
    await store.db[collection].replace_one({"_id": _key(store, job["id"])}, doc, upsert=True)


@_guarded
async def get_job(store: Store, collection: str, id: str) -> dict[str, Any] | None:
    doc = await store.db[collection].find_one({"_id": _key(store, id), TENANT: store.tenant}, {"_id": 0, TENANT: 0})
    return None if doc is None else dict(doc)
