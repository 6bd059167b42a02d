"""The only code that talks to MongoDB: collections, indexes, conditional writes, history."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

import pymongo
from bson.codec_options import CodecOptions, TypeDecoder, TypeEncoder, TypeRegistry
from bson.decimal128 import Decimal128
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, monitoring
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError, ExecutionTimeout, OperationFailure, PyMongoError

from app import errors
from app.fhirschema.model import SERVED_RESOURCES
from app.metrics import MONGO_COMMANDS
from app.store import search

log = logging.getLogger("fingate.store")

Resource = dict[str, Any]
TENANT = "_tenant"  # hidden like `_search`: every stored document's tenant, first in every index
DEFAULT_TENANT = "default"
AUDIT = "audit"  # one record per write, in the write's transaction
FIRST_PAGE = "first"  # the cursor of a connection's first page
COMMIT_RETRY_SECONDS = 10.0  # how long an unconfirmed commit is retried outside a request's deadline
_WRITE_CONFLICT = 112
_NO_SUCH_TRANSACTION = 251  # at commit: the server has no record of it (restarted, or the driver's own retry)

_deadline: ContextVar[float | None] = ContextVar("fingate_store_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every database operation inside the block (and in tasks it starts) ends within `seconds`:
    the driver's client-side operation timeout, covering server selection, each command, commits
    and aborts; what runs out of time raises UNAVAILABLE or RanOutOfTime (see `_translated`)."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        with pymongo.timeout(seconds):
            yield
    finally:
        _deadline.reset(token)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """PyMongo's errors as FinGate's: an outage is UNAVAILABLE, never INTERNAL or CONFLICT."""
    try:
        yield
    except ConnectionFailure as exc:  # refused, reset, network timeout, no server selectable in time
        raise errors.unavailable() from exc
    except ExecutionTimeout as exc:  # the server's maxTimeMS, or no time left to send the command
        raise errors.RanOutOfTime("the request ran out of time in the database: ask for less, or page") from exc
    except OperationFailure as exc:
        if exc.code == _WRITE_CONFLICT:  # SecantusDB also reports it for two creates in one collection
            raise errors.FinGateError(
                errors.CONFLICT,
                "a concurrent write conflicted with this one; nothing was written: read again and retry",
            ) from exc
        if exc.has_error_label("TransientTransactionError"):  # e.g. a restarted server forgot the transaction
            raise errors.unavailable() from exc
        raise


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _guarded(method: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    @functools.wraps(method)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with _translated():
            return await method(*args, **kwargs)

    return guarded


def _unknown_commit(exc: PyMongoError) -> bool:
    """Whether a failed commitTransaction may still have been applied."""
    if exc.has_error_label("UnknownTransactionCommitResult"):
        return True
    return isinstance(exc, OperationFailure) and exc.code == _NO_SUCH_TRANSACTION


class _DecimalCodec(TypeEncoder, TypeDecoder):  # type: ignore[misc]
    """FHIR decimals: `Decimal` in Python, `Decimal128` in MongoDB, the same digits both ways."""

    python_type = Decimal
    bson_type = Decimal128

    def transform_python(self, value: Decimal) -> Decimal128:
        return Decimal128(value)

    def transform_bson(self, value: Decimal128) -> Decimal:
        return decimal_from_bid(value)


_BID = struct.Struct("<QQ")  # Decimal128.bid: the low 64 bits, then the high 64 bits
_SPECIAL = 0x6000000000000000  # combination bits 11: infinity, NaN, or a non-canonical significand
_MAX_COEFFICIENT = 10**34 - 1


def decimal_from_bid(value: Decimal128) -> Decimal:
    """`value.to_decimal()`, four times faster (a billing screen's read decodes hundreds of amounts).

    A finite, canonical Decimal128 is `sign coefficient E exponent`, and the Decimal built from that
    text has the same digits and exponent as PyMongo's; any other form is left to PyMongo.
    """
    low, high = _BID.unpack(value.bid)
    coefficient = ((high & 0x1FFFFFFFFFFFF) << 64) | low
    if high & _SPECIAL == _SPECIAL or coefficient > _MAX_COEFFICIENT:
        return value.to_decimal()
    return Decimal(f"{'-' if high >> 63 else ''}{coefficient}E{((high >> 49) & 0x3FFF) - 6176}")


CODEC_OPTIONS: CodecOptions[Resource] = CodecOptions(
    document_class=dict, tz_aware=True, tzinfo=UTC, type_registry=TypeRegistry([_DecimalCodec()])
)


class _CommandCounter(monitoring.CommandListener):
    """Counts every command sent (`fingate_mongo_commands_total`), also for tests' round-trip bounds."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.count += 1
        MONGO_COMMANDS.labels(event.command_name).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _hide(doc: Resource) -> Resource:
    """A stored document as FHIR JSON: without `_id`, the tenant and the hidden search values."""
    doc.pop("_id", None)
    doc.pop("_search", None)
    doc.pop(TENANT, None)
    return doc


def _public(doc: Resource | None) -> Resource | None:
    return None if doc is None else _hide(doc)


class Store:
    """One database: a collection per resource type (`Claim`) and its history (`Claim_history`).

    A Store reads and writes one tenant's documents: `_id` is `<tenant>/<id>` (FHIR ids hold no `/`),
    and every query is filtered on the hidden `_tenant`. `for_tenant` gives another tenant's view
    over the same connection.
    """

    def __init__(self, uri: str, db_name: str, tenant: str = DEFAULT_TENANT) -> None:
        self.commands = _CommandCounter()
        # A write is confirmed once a majority has it in its journal (on disk); for the embedded
        # database that is its sync-on-commit. These override any w= or journal= in the URI.
        self.client: AsyncMongoClient[Resource] = AsyncMongoClient(
            uri,
            event_listeners=[self.commands],
            tz_aware=True,
            serverSelectionTimeoutMS=10_000,
            w="majority",
            journal=True,
        )
        self.db: AsyncDatabase[Resource] = self.client.get_database(db_name, codec_options=CODEC_OPTIONS)
        self.tenant = tenant

    def for_tenant(self, tenant: str) -> Store:
        """The same connection, scoped to `tenant` (cheap: one per request)."""
        if tenant == self.tenant:
            return self
        view = copy.copy(self)
        view.tenant = tenant
        return view

    def _key(self, id: str) -> str:
        return f"{self.tenant}/{id}"

    def _scoped(self, query: dict[str, Any]) -> dict[str, Any]:
        return {TENANT: self.tenant, **query} if TENANT not in query else {"$and": [{TENANT: self.tenant}, query]}

    def _history_id(self, id: str, version: str) -> str:
        return f"{self.tenant}/{id}/_history/{version}"

    async def close(self) -> None:
        await self.client.close()

    async def ping(self, seconds: float | None = None) -> bool:
        """Whether the database answers (within `seconds` when given)."""
        try:
            with pymongo.timeout(seconds):
                await self.client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    @_guarded
    async def ensure_indexes(self) -> None:
        """Idempotent (creating an index that exists is a no-op): one `createIndexes` per collection."""
        wanted: dict[str, list[list[tuple[str, int]]]] = {}
        for rtype in SERVED_RESOURCES:
            wanted[rtype] = [[(TENANT, ASCENDING), *keys] for keys in search.index_keys(rtype)]
            wanted[f"{rtype}_history"] = [[(TENANT, ASCENDING), ("id", ASCENDING), ("v", DESCENDING)]]
        wanted[AUDIT] = [
            [(TENANT, ASCENDING), ("when", DESCENDING)],
            [(TENANT, ASCENDING), ("type", ASCENDING), ("id", ASCENDING), ("when", DESCENDING)],
        ]
        for collection, indexes in wanted.items():
            if indexes:
                await self.db[collection].create_indexes([IndexModel(keys) for keys in indexes])

    @_guarded
    async def is_empty(self) -> bool:
        for rtype in SERVED_RESOURCES:
            if await self.db[rtype].find_one({TENANT: self.tenant}, {"_id": 1}) is not None:
                return False
        return True

    @_guarded
    async def drop_all(self) -> None:
        await self.client.drop_database(self.db.name)

    # -- reads ---------------------------------------------------------------------------

    @_guarded
    async def get(self, resource_type: str, id: str) -> Resource | None:
        return _public(await self.db[resource_type].find_one({"_id": self._key(id)}))

    @_guarded
    async def get_by_type(self, ids_by_type: dict[str, list[str]]) -> dict[tuple[str, str], Resource]:
        """Any number of resources of any types in ONE command ({(type, id): resource} of those found).

        A database-level aggregate: `$documents` holds one row per wanted key, and one `$lookup` per
        type joins the rows of that type to their documents by `_id`, which MongoDB and SecantusDB
        both answer from the `_id` index. The other one-command form, `$unionWith`, makes SecantusDB
        decode the whole foreign collection (its stage scans it), so a level cost what the data
        weighed, not what the query asked. One row per key keeps every reply document one resource
        big (MongoDB's 16 MB limit); the hidden fields are dropped here, not by a `$project`, which
        SecantusDB runs as a deep copy of each document (a third of this read's time there).
        """
        wanted = {t: list(dict.fromkeys(ids)) for t, ids in ids_by_type.items() if ids}
        if not wanted:
            return {}
        types = sorted(wanted)
        if len(types) == 1:  # the common level: a plain find (SecantusDB runs it in half an aggregate's time)
            (t,) = types
            keys = [self._key(id) for id in wanted[t]]
            cursor = self.db[t].find({"_id": {"$in": keys}}, batch_size=len(keys) + 1)
            return {(t, doc["id"]): _hide(doc) async for doc in cursor}
        rows = [{f"k{n}": self._key(id)} for n, t in enumerate(types) for id in wanted[t]]
        pipeline: list[dict[str, Any]] = [{"$documents": rows}]
        pipeline += [
            {"$lookup": {"from": t, "localField": f"k{n}", "foreignField": "_id", "as": f"r{n}"}}
            for n, t in enumerate(types)
        ]
        out = {}
        async for row in await self.db.aggregate(pipeline, batchSize=len(rows) + 1):
            for n, t in enumerate(types):
                for doc in row[f"r{n}"]:  # a row's own type finds its document; the others find none
                    out[(t, doc["id"])] = _hide(doc)
        return out

    @_guarded
    async def search(
        self,
        resource_type: str,
        params: dict[str, str],
        count: int,
        offset: int = 0,
        sort: str | None = None,
    ) -> list[Resource]:
        query = self._scoped(search.compile_filter(resource_type, params))
        order = search.compile_sort(resource_type, sort)
        cursor = self.db[resource_type].find(query, sort=order, skip=offset, limit=count, batch_size=count + 1)
        return [_hide(doc) async for doc in cursor]

    @_guarded
    async def page(
        self, resource_type: str, params: dict[str, str], count: int, cursor: str | None, sort: str | None
    ) -> dict[str, Any]:
        """A keyset page: {count (total matches), first, next, edges: [{resource}]}."""
        if cursor == FIRST_PAGE:
            cursor = None
        query = self._scoped(search.compile_filter(resource_type, params))
        order = search.compile_sort(resource_type, sort)
        paged = {"$and": [query, search.cursor_filter(resource_type, sort, cursor)]} if cursor else query
        coll = self.db[resource_type]
        docs = [d async for d in coll.find(paged, sort=order, limit=count + 1, batch_size=count + 2)]
        total = await coll.count_documents(query)
        more = len(docs) > count
        docs = docs[:count]
        next_cursor = search.cursor_for(resource_type, sort, docs[-1]) if more and docs else None
        return {
            "count": total,
            "first": None if cursor is None else FIRST_PAGE,
            "next": next_cursor,
            "edges": [{"resource": _hide(d)} for d in docs],
        }

    @_guarded
    async def referencing(
        self,
        resource_type: str,
        code: str,
        targets: list[str],
        params: dict[str, str],
        sort: str | None,
    ) -> list[tuple[list[str], Resource]]:
        """Resources whose reference parameter `code` points at any of `targets`, one command.

        Each comes with the normalized references it holds for `code`, so callers can group.
        """
        key = search.reference_key(resource_type, code)
        query = search.compile_filter(resource_type, params)
        query = self._scoped({"$and": [query, {key: {"$in": targets}}]} if query else {key: {"$in": targets}})
        order = search.compile_sort(resource_type, sort)
        out: list[tuple[list[str], Resource]] = []
        async for doc in self.db[resource_type].find(query, sort=order):
            refs = _dotted(doc, key)
            out.append((refs, _hide(doc)))
        return out

    @_guarded
    async def history(self, resource_type: str, id: str) -> list[Resource]:
        cursor = self.db[f"{resource_type}_history"].find(
            {TENANT: self.tenant, "id": id}, {"_id": 0, "id": 0, "v": 0, TENANT: 0}, sort=[("v", DESCENDING)]
        )
        return [d["resource"] async for d in cursor]

    # -- writes: each is one conditional operation plus its history, in one transaction ----

    async def _with_history(self, session: AsyncClientSession, resource_type: str, resource: Resource) -> None:
        version = resource["meta"]["versionId"]
        await self.db[f"{resource_type}_history"].insert_one(
            {
                "_id": self._history_id(resource["id"], version),
                TENANT: self.tenant,
                "id": resource["id"],
                "v": int(version),
                "resource": resource,
            },
            session=session,
        )

    def _stored(self, resource_type: str, resource: Resource) -> Resource:
        return {
            **resource,
            "_id": self._key(resource["id"]),
            TENANT: self.tenant,
            "_search": search.index_values(resource_type, resource),
        }

    @contextlib.asynccontextmanager
    async def transaction(self, written: dict[str, str] | None = None) -> AsyncIterator[AsyncClientSession]:
        """All writes given this session commit together or not at all.

        A write conflict with a concurrent transaction is the loser's CONFLICT, never a retry:
        the caller re-reads and decides, exactly as for a stale `ifMatch`. A commit the database
        neither confirms nor denies is retried, then reported as UNKNOWN_OUTCOME naming `written`.
        """
        with _translated():
            async with self.client.start_session() as session:
                await session.start_transaction()
                try:
                    yield session
                except BaseException:
                    await session.abort_transaction()  # the driver ignores an abort's errors
                    raise
                await _commit(session, written)

    @contextlib.asynccontextmanager
    async def _joined(self, session: AsyncClientSession | None) -> AsyncIterator[AsyncClientSession]:
        if session is not None:
            yield session
        else:
            async with self.transaction() as own:
                yield own

    @_guarded
    async def insert(
        self, resource_type: str, resource: Resource, session: AsyncClientSession | None = None
    ) -> Resource:
        """Store version 1 (the caller set `id` and `meta`); CONFLICT if the id is taken."""
        async with self._joined(session) as session:
            try:
                await self.db[resource_type].insert_one(self._stored(resource_type, resource), session=session)
            except DuplicateKeyError as exc:
                raise errors.FinGateError(errors.CONFLICT, f"{resource_type}/{resource['id']} already exists") from exc
            await self._with_history(session, resource_type, resource)
        return resource

    def _expected(self, id: str, version: str, status: str | None) -> dict[str, Any]:
        """The filter of a conditional write: this id, still at `version` (and `status`)."""
        match: dict[str, Any] = {"_id": self._key(id), "meta.versionId": version}
        if status is not None:
            match["status"] = status
        return match

    @_guarded
    async def replace(
        self,
        resource_type: str,
        resource: Resource,
        expected_version: str,
        expected_status: str | None,
        session: AsyncClientSession | None = None,
    ) -> Resource:
        """Replace the current version iff it is still `expected_version` (and status); else CONFLICT."""
        match = self._expected(resource["id"], expected_version, expected_status)
        async with self._joined(session) as session:
            result = await self.db[resource_type].replace_one(
                match, self._stored(resource_type, resource), session=session
            )
            if result.matched_count != 1:
                raise errors.FinGateError(
                    errors.CONFLICT,
                    f"{resource_type}/{resource['id']} changed since version {expected_version}: read it again and retry",
                )
            await self._with_history(session, resource_type, resource)
        return resource

    @_guarded
    async def delete(
        self,
        resource_type: str,
        id: str,
        expected_version: str,
        expected_status: str | None,
        session: AsyncClientSession | None = None,
    ) -> None:
        """Remove the current version (history stays) iff unchanged; else CONFLICT."""
        match = self._expected(id, expected_version, expected_status)
        async with self._joined(session) as session:
            deleted = await self.db[resource_type].find_one_and_delete(match, {"_id": 1}, session=session)
            if deleted is None:
                raise errors.FinGateError(
                    errors.CONFLICT, f"{resource_type}/{id} changed since version {expected_version}"
                )
            await self.db[f"{resource_type}_history"].update_one(
                {"_id": self._history_id(id, expected_version)},
                {"$set": {"deleted": datetime.now(UTC)}},
                session=session,
            )

    # -- audit: who wrote what, one record per write, committed with it ------------------------

    @_guarded
    async def audit(self, record: Resource, session: AsyncClientSession) -> None:
        """Append an audit record (sub, when, type, id, version, operation) inside the write's transaction."""
        await self.db[AUDIT].insert_one({**record, TENANT: self.tenant}, session=session)

    @_guarded
    async def audit_log(self, count: int, resource_type: str | None = None, id: str | None = None) -> list[Resource]:
        """This tenant's audit records, newest first."""
        query: dict[str, Any] = {TENANT: self.tenant}
        if resource_type is not None:
            query["type"] = resource_type
        if id is not None:
            query["id"] = id
        cursor = self.db[AUDIT].find(query, {"_id": 0}, sort=[("when", DESCENDING)], limit=count)
        return [{**doc, "tenant": doc.pop(TENANT)} async for doc in cursor]

    # -- persisted queries: GraphQL documents by their sha256, shared by every instance ----

    @_guarded
    async def get_query(self, sha256: str) -> str | None:
        doc = await self.db[PERSISTED_QUERIES].find_one({"_id": sha256}, {"query": 1})
        return None if doc is None else doc["query"]

    @_guarded
    async def put_query(self, sha256: str, query: str) -> None:
        """Idempotent: the id is the text's hash, so a stored query never changes."""
        await self.db[PERSISTED_QUERIES].update_one(
            {"_id": sha256}, {"$setOnInsert": {"query": query, "stored": datetime.now(UTC)}}, upsert=True
        )


PERSISTED_QUERIES = "persisted_queries"


async def _commit(session: AsyncClientSession, written: dict[str, str] | None) -> None:
    """Commit; an unconfirmed commit is retried (commitTransaction is idempotent) until the
    server answers or the request's time is spent, and is never reported as not written."""
    try:
        await session.commit_transaction()
        return
    except PyMongoError as exc:
        if not _unknown_commit(exc):
            with _translated():
                raise
        log.warning("commit of %s unconfirmed (%s); retrying", written, exc)
    until = _deadline.get() or time.monotonic() + COMMIT_RETRY_SECONDS
    while time.monotonic() < until:
        await asyncio.sleep(0.05)
        try:
            with pymongo.timeout(max(until - time.monotonic(), 0.001)):
                await session.commit_transaction()
            return
        except PyMongoError as exc:
            # Only a lost connection is worth another try; any answer but ok leaves it unknown.
            if not isinstance(exc, ConnectionFailure):
                break
    raise errors.unknown_outcome(written)


def _dotted(doc: Resource, key: str) -> list[str]:
    value: Any = doc
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


__all__ = ["CODEC_OPTIONS", "Store"]
