"""Create, update and delete: validate, apply the status rules, then one conditional store write."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from app import errors, rules, validation
from app.store import Store

Resource = dict[str, Any]
DEFAULT_RULE_SEARCH_COUNT = 100


def new_id() -> str:
    return uuid.uuid4().hex


def now_instant() -> str:
    """A FHIR instant in UTC with milliseconds: `2026-11-23T09:30:00.123Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _with_meta(resource: Resource, version: int) -> Resource:
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = now_instant()
    return {**resource, "meta": meta}


def _without_meta(resource: Resource) -> Resource:
    return {k: v for k, v in resource.items() if k != "meta"}


class _RuleReads:
    """What the cross-resource rules may read: current resources, by id or search."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, resource_type: str, id: str) -> Resource | None:
        return await self.store.get(resource_type, id)

    async def search(self, resource_type: str, params: dict[str, str]) -> list[Resource]:
        return await self.store.search(resource_type, params, count=DEFAULT_RULE_SEARCH_COUNT)


class Writer:
    """The one write path, shared by the GraphQL mutations and `fingate load`.

    Every write commits with its audit record (`actor` is the JWT `sub`) in one transaction.
    """

    def __init__(self, store: Store, actor: str = "system", request_id: str | None = None) -> None:
        self.store = store
        self.reads = _RuleReads(store)
        self.actor = actor
        self.request_id = request_id

    def bound(self, store: Store, actor: str, request_id: str | None = None) -> Writer:
        """This write path for one caller: its tenant's store, its `sub` in the audit log."""
        return Writer(store, actor, request_id)

    @contextlib.asynccontextmanager
    async def _transaction(
        self, session: Any, operation: str, resource_type: str, resource: Resource
    ) -> AsyncIterator[Any]:
        """The outer transaction, or one of its own whose unconfirmed commit names what to check."""
        if session is not None:
            yield session
            return
        written = {
            "operation": operation,
            "resourceType": resource_type,
            "id": resource["id"],
            "version": resource["meta"]["versionId"],
        }
        async with self.store.transaction(written) as own:
            yield own

    async def _audit(self, session: Any, operation: str, resource_type: str, resource: Resource) -> None:
        record = {
            "sub": self.actor,
            "when": datetime.now(UTC),
            "operation": operation,
            "type": resource_type,
            "id": resource["id"],
            "version": resource["meta"]["versionId"],
            "requestId": self.request_id,
        }
        await self.store.audit(record, session)

    async def create(
        self, resource_type: str, resource: Resource, *, keep_id: bool = False, session: Any = None, reads: Any = None
    ) -> Resource:
        """Store a new resource as version 1; the server assigns the id unless `keep_id` (loads).

        `session` joins an outer transaction (a transaction Bundle); `reads` then also sees its pending entries.
        """
        resource = validation.validate(resource_type, resource)
        rules.check_create(resource_type, resource)
        await rules.check_references(resource_type, resource, None, reads or self.reads)
        if not (keep_id and resource.get("id")):
            resource["id"] = new_id()
        resource = _with_meta(resource, 1)
        async with self._transaction(session, "create", resource_type, resource) as tx:
            stored = await self.store.insert(resource_type, resource, tx)
            await self._audit(tx, "create", resource_type, stored)
        return stored

    async def update(
        self,
        resource_type: str,
        id: str,
        resource: Resource,
        if_match: str | None = None,
        *,
        session: Any = None,
        reads: Any = None,
    ) -> Resource:
        old = await self._current(resource_type, id)
        return await self._update(resource_type, old, resource, if_match, session=session, reads=reads)

    async def _update(
        self, resource_type: str, old: Resource, resource: Resource, if_match: str | None, *, session: Any, reads: Any
    ) -> Resource:
        id = old["id"]
        version = old["meta"]["versionId"]
        if if_match is not None and if_match != version:
            raise errors.FinGateError(
                errors.CONFLICT,
                f"{resource_type}/{id} is at version {version}, not {if_match}: read it again and retry",
                extensions={"currentVersion": version},
            )
        if resource.get("id") not in (None, id):
            raise errors.bad_input(
                f"id {resource['id']!r} in the resource does not match the id argument {id!r}", f"{resource_type}.id"
            )
        resource = validation.validate(resource_type, {**resource, "id": id})
        rules.check_update(resource_type, old, resource)
        await rules.check_references(resource_type, resource, old, reads or self.reads)
        new = _with_meta(resource, int(version) + 1)
        async with self._transaction(session, "update", resource_type, new) as tx:
            stored = await self.store.replace(resource_type, new, version, old.get("status"), tx)
            await self._audit(tx, "update", resource_type, stored)
        return stored

    async def delete(self, resource_type: str, id: str) -> Resource:
        old = await self._current(resource_type, id)
        rules.check_delete(resource_type, old)
        async with self._transaction(None, "delete", resource_type, old) as tx:
            await self.store.delete(resource_type, id, old["meta"]["versionId"], old.get("status"), tx)
            await self._audit(tx, "delete", resource_type, old)
        return old

    async def put(
        self, resource_type: str, resource: Resource, *, session: Any = None, reads: Any = None
    ) -> tuple[str, Resource]:
        """Update-as-create for loads: keep the resource's id; ('created'|'updated'|'unchanged', stored)."""
        id = resource.get("id")
        old = await self.store.get(resource_type, id) if id else None
        if old is None:
            return "created", await self.create(resource_type, resource, keep_id=True, session=session, reads=reads)
        # Identical to what is stored (which was valid when stored): nothing to validate or write.
        if _without_meta(old) == _without_meta({"resourceType": resource_type, **resource}):
            return "unchanged", old
        return "updated", await self._update(resource_type, old, resource, None, session=session, reads=reads)

    async def _current(self, resource_type: str, id: str) -> Resource:
        old = await self.store.get(resource_type, id)
        if old is None:
            raise errors.not_found(resource_type, id)
        return old
