"""The only code that talks to MongoDB: collections, indexes, conditional writes, history."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import hashlib
import logging
import secrets
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
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
from app.fhir.decimals import plain
from app.fhir.model import COMPARTMENT_SELF, SERVED_RESOURCES, patient_compartment
from app.fhir.references import by_type
from app.fhir.values import Resource, deletion, instant
from app.metrics import MONGO_COMMANDS
from app.store import cursors, outbox, payment_events, search, settlements
from app.store.filter import compile_query
from app.store.settlements import AccountLedger, OpenItem, Settlement

log = logging.getLogger("fingate.store")

TENANT = "_tenant"  # hidden like `_search`: every stored document's tenant, first in every index
GUARD = "_guard"  # hidden: bumped by a write whose rules read this document, so racing writers conflict
DEFAULT_TENANT = "default"
AUDIT = "audit"  # one record per write, in the write's transaction
HOOK_ATTEMPTS = "hook_attempts"  # one record per rest-hook delivery attempt (app.store.deliveries)
HISTORY_PATH = "/_history/"  # an id holding it asks `get_by_type` for that version (FHIR's vread path)
DEFAULT_PAGE = 20  # a Connection's page size when neither `_count` nor a cursor gives one
COMMIT_RETRY_SECONDS = 10.0  # how long an unconfirmed commit is retried outside a request's deadline
INSERT_BATCH = 50  # documents per insert of `insert_many`: the next batch's are made while one is written
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
        return decimal_to_bid(plain(value))  # stored as shown: `1E+2` is kept as `100`

    def transform_bson(self, value: Decimal128) -> Decimal:
        return decimal_from_bid(value)


_BID = struct.Struct("<QQ")  # Decimal128.bid: the low 64 bits, then the high 64 bits
_SPECIAL = 0x6000000000000000  # combination bits 11: infinity, NaN, or a non-canonical significand
_MAX_COEFFICIENT = 10**34 - 1
_EXPONENT_BIAS, _MIN_EXPONENT, _MAX_EXPONENT = 6176, -6176, 6111


def decimal_to_bid(value: Decimal) -> Decimal128:
    """`Decimal128(value)`, ten times faster (a bulk load encodes a dozen amounts per resource, twice).

    A finite value of at most 34 digits whose exponent Decimal128 holds is `sign coefficient E exponent`, packed
    as its BID bits; any other (NaN, an infinity, more digits, an exponent out of range) is left to PyMongo.
    """
    sign, digits, exponent = value.as_tuple()
    if type(exponent) is not int or len(digits) > 34 or not _MIN_EXPONENT <= exponent <= _MAX_EXPONENT:
        return Decimal128(value)
    coefficient = 0
    for digit in digits:
        coefficient = coefficient * 10 + digit
    high = (sign << 63) | ((exponent + _EXPONENT_BIAS) << 49) | (coefficient >> 64)
    return Decimal128.from_bid(_BID.pack(coefficient & 0xFFFFFFFFFFFFFFFF, high))


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
    """Counts every command sent (`fingate_mongo_commands_total`) and the documents their cursors
    returned, also for tests' bounds on round trips and on what crosses the wire."""

    def __init__(self) -> None:
        self.count = 0
        self.documents = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.count += 1
        MONGO_COMMANDS.labels(event.command_name).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor")
        if isinstance(cursor, dict):
            self.documents += len(cursor.get("firstBatch") or cursor.get("nextBatch") or ())

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _hide(doc: Resource) -> Resource:
    """A stored document as FHIR JSON: without `_id`, the tenant and the hidden search values."""
    doc.pop("_id", None)
    doc.pop("_search", None)
    doc.pop(TENANT, None)
    doc.pop(GUARD, None)
    return doc


def _public(doc: Resource | None) -> Resource | None:
    return None if doc is None else _hide(doc)


def _only(elements: Iterable[str] | None, *paths: str) -> dict[str, int] | None:
    """The projection reading `elements` (and `id`, and the stored `paths` a read itself needs); None: whole."""
    return None if elements is None else dict.fromkeys(("id", *elements, *paths), 1)


def _all(*clauses: dict[str, Any] | None) -> dict[str, Any]:
    """The conjunction of filters: one dict while their keys differ, else `$and`."""
    merged: dict[str, Any] = {}
    rest = []
    for clause in clauses:
        if not clause:
            continue
        if merged.keys() & clause.keys():
            rest.append(clause)
        else:
            merged.update(clause)
    return {"$and": [merged, *rest]} if rest else merged


class Store:
    """One database: a collection per resource type (`Claim`) and its history (`Claim_history`).

    A Store reads and writes one tenant's documents: `_id` is `<tenant>/<id>` (FHIR ids hold no `/`),
    and every query is filtered on the hidden `_tenant`. `for_tenant` gives another tenant's view
    over the same connection; `in_compartment` narrows a view to one patient's compartment for some
    types, and every read and write below applies it (`_scoped`, `_restricted`).
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
        self.patient: str | None = None  # set by `in_compartment`
        self.compartment: dict[str, dict[str, Any]] = {}  # resource type -> the filter of the patient's compartment
        self._signing: dict[str, cursors.Signer] = {}  # shared by every view: the cursor signer, made once
        self.commits = Commits()  # shared by every view: wakes outbox readers in this process after a commit

    def for_tenant(self, tenant: str) -> Store:
        """The same connection, scoped to all of `tenant` (cheap: one per request)."""
        if tenant == self.tenant and not self.compartment:
            return self
        view = copy.copy(self)
        view.tenant = tenant
        view.patient, view.compartment = None, {}
        return view

    def in_compartment(self, patient: str, types: Iterable[str]) -> Store:
        """This view where each of `types` holds only Patient/`patient`'s compartment: reads by id,
        searches, counts, reverse references and history see nothing else, and writes may neither
        touch nor produce anything else (SMART `patient/` scopes)."""
        view = copy.copy(self)
        view.patient = patient
        view.compartment = {t: search.compartment_filter(t, patient) for t in types}
        return view

    def _key(self, id: str) -> str:
        return f"{self.tenant}/{id}"

    def _scoped(self, resource_type: str, query: dict[str, Any]) -> dict[str, Any]:
        """A query of `resource_type` within this view: the tenant, then the compartment (both indexed)."""
        return _all({TENANT: self.tenant}, self.compartment.get(resource_type), query)

    async def _filter(
        self, resource_type: str, params: dict[str, str], session: AsyncClientSession | None = None
    ) -> dict[str, Any]:
        """The filter of search params (with `_filter` and `code:modifier` keys, see app.store.filter)."""

        async def ids_of(target: str, query: dict[str, Any], limit: int) -> list[str]:
            found = self.db[target].find(self._scoped(target, query), {"id": 1}, limit=limit, session=session)
            return [doc["id"] async for doc in found]

        return await compile_query(resource_type, params, ids_of)

    def _restricted(self, resource_type: str, query: dict[str, Any]) -> dict[str, Any]:
        """A query by `_id` (which holds the tenant) within this view's compartment."""
        return _all(query, self.compartment.get(resource_type))

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
        """Idempotent (creating an index that exists is a no-op): one `createIndexes` per collection.

        Skipped, at the cost of two commands, when this database records that it has every index of this
        very list (`server_keys`, by a digest of the list, options included) and every collection they are on
        still exists; a start-up on existing data then spends no time on some 60 `createIndexes`."""
        wanted = self._wanted_indexes()
        described = sorted((c, [m.document for m in models]) for c, models in wanted.items())
        digest = hashlib.sha256(repr(described).encode()).hexdigest()
        marker = await self.db[SERVER_KEYS].find_one({"_id": INDEXES_KEY})
        if marker is not None and marker.get("digest") == digest:
            present = set(await self.db.list_collection_names())
            if present.issuperset(wanted):
                return
        for collection, models in wanted.items():
            await self.db[collection].create_indexes(models)
        await self.db[SERVER_KEYS].replace_one({"_id": INDEXES_KEY}, {"digest": digest}, upsert=True)

    def _wanted_indexes(self) -> dict[str, list[IndexModel]]:
        wanted: dict[str, list[IndexModel]] = {}
        for rtype in SERVED_RESOURCES:
            wanted[rtype] = [IndexModel([(TENANT, ASCENDING), *keys]) for keys in search.index_keys(rtype)]
            wanted[f"{rtype}_history"] = [IndexModel([(TENANT, ASCENDING), ("id", ASCENDING), ("v", DESCENDING)])]
        wanted[AUDIT] = [
            IndexModel([(TENANT, ASCENDING), ("when", DESCENDING)]),
            IndexModel([(TENANT, ASCENDING), ("type", ASCENDING), ("id", ASCENDING), ("when", DESCENDING)]),
        ]
        wanted[payment_events.COLLECTION] = payment_events.INDEXES
        # Idempotency-Key records (app.store.idempotency): one per tenant and key, removed once `expires` passes.
        wanted[IDEMPOTENCY_KEYS] = [
            IndexModel([(TENANT, ASCENDING), ("key", ASCENDING)], unique=True),
            IndexModel([("expires", ASCENDING)], expireAfterSeconds=0),
        ]
        wanted[CONDITIONAL_KEYS] = [IndexModel([(TENANT, ASCENDING), ("key", ASCENDING)], unique=True)]
        wanted[outbox.OUTBOX] = outbox.INDEXES
        wanted[outbox.PENDING] = outbox.PENDING_INDEXES
        # The counters' collection exists before the first write's transaction upserts into it.
        wanted[outbox.POSITIONS] = [IndexModel([("position", ASCENDING)])]
        # Rest-hook delivery attempts (app.store.deliveries), newest first per Subscription.
        wanted[HOOK_ATTEMPTS] = [IndexModel([(TENANT, ASCENDING), ("subscription", ASCENDING), ("when", DESCENDING)])]
        return wanted

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
    async def get(self, resource_type: str, id: str, session: AsyncClientSession | None = None) -> Resource | None:
        query = self._restricted(resource_type, {"_id": self._key(id)})
        return _public(await self.db[resource_type].find_one(query, session=session))

    @_guarded
    async def get_by_type(
        self,
        ids_by_type: dict[str, list[str]],
        fields: tuple[str, ...] = (),
        session: AsyncClientSession | None = None,
        projections: Mapping[str, Iterable[str] | None] | None = None,
    ) -> dict[tuple[str, str], Resource]:
        """Any number of resources of any types: one `find` by `_id` per type, sent together (one round trip;
        in a transaction, whose session carries one operation at a time, one after another). {(type, id):
        resource} of those found.

        An id `x/_history/2` asks for version 2 of `x`: its history entry, whose `_id` is `<tenant>/x/_history/2`.

        With `fields`, only those elements (and `id`) of each resource: the status rules read just
        the status of what a write references (8,000 Claims of 3 KB: 0.8 s instead of 4.9 s). With
        `projections`, per type, the elements a query selects (None for a type: all); versions are whole.

        Per-type finds, not one command: on `secantusd-rs` a `$documents` + `$lookup`-per-type aggregate took
        4-6x the server time of the finds at every size (README, "A level is one find per type"), and PyMongo
        decodes an aggregate's reply twice; the finds' number is the number of types, whatever the number of ids.
        """
        wanted: dict[tuple[str, bool], list[str]] = {}
        for t, ids in ids_by_type.items():
            for id in dict.fromkeys(ids):
                wanted.setdefault((t, HISTORY_PATH in id), []).append(id)

        def projection(t: str) -> dict[str, int] | None:
            if projections is None or t not in projections:
                return _only(fields or None)
            return _only(projections[t])

        skip = len(self.tenant) + 1  # `_id` is `<tenant>/<id>`, a version's `<tenant>/<id>/_history/<v>`

        async def read(t: str, versioned: bool, ids: list[str]) -> list[tuple[tuple[str, str], Resource]]:
            keys = [self._key(id) for id in ids]
            cursor = self.db[f"{t}_history" if versioned else t].find(
                self._restricted(t, {"_id": {"$in": keys}}),
                None if versioned else projection(t),
                batch_size=len(keys) + 1,
                session=session,
            )
            return [((t, doc["_id"][skip:]), doc["resource"] if versioned else _hide(doc)) async for doc in cursor]

        reads = [read(t, versioned, ids) for (t, versioned), ids in wanted.items()]
        if session is not None or len(reads) < 2:
            found = [await r for r in reads]
        else:
            tasks = [asyncio.ensure_future(r) for r in reads]
            try:
                found = await asyncio.gather(*tasks)
            except BaseException:  # one failed (or the request was cancelled): the others stop too
                for task in tasks:
                    task.cancel()
                raise
        return {key: resource for part in found for key, resource in part}

    @_guarded
    async def search(
        self,
        resource_type: str,
        params: dict[str, str],
        count: int,
        offset: int = 0,
        sort: str | None = None,
        session: AsyncClientSession | None = None,
        elements: Iterable[str] | None = None,
    ) -> list[Resource]:
        """With `elements`, only those (and `id`) of each resource: what a query selects."""
        query = self._scoped(resource_type, await self._filter(resource_type, params, session))
        if count == 0:  # FHIR's `_count=0` asks for no entries; MongoDB's `limit=0` would mean no limit at all
            return []
        order = search.compile_sort(resource_type, sort)
        cursor = self.db[resource_type].find(
            query, _only(elements), sort=order, skip=offset, limit=count, batch_size=count + 1, session=session
        )
        return [_hide(doc) async for doc in cursor]

    @_guarded
    async def count(self, resource_type: str, params: dict[str, Any]) -> int:
        """How many resources match: FHIR's `_count=0` ("how many"), one `count` command."""
        query = self._scoped(resource_type, await self._filter(resource_type, params))
        return await self.db[resource_type].count_documents(query)

    @_guarded
    async def referencing_counts(
        self, resource_type: str, code: str, targets: list[str], params: dict[str, Any]
    ) -> dict[str, int]:
        """Per target, how many resources `referencing` would list without a limit: one command (absent: none)."""
        targets = list(dict.fromkeys(targets))
        if not targets:
            return {}
        key = search.reference_key(resource_type, code)
        wanted = {key: targets[0] if len(targets) == 1 else {"$in": targets}}
        match = self._scoped(resource_type, _all(wanted, await self._filter(resource_type, params)))
        coll = self.db[resource_type]
        if len(targets) == 1:
            found = await coll.count_documents(match)
            return {targets[0]: found} if found else {}
        pipeline: list[dict[str, Any]] = [
            {"$match": match},
            {"$project": {"_id": 0, "ref": f"${key}"}},
            {"$unwind": "$ref"},
            {"$match": {"ref": {"$in": targets}}},
            {"$group": {"_id": "$ref", "n": {"$sum": 1}}},
        ]
        return {row["_id"]: row["n"] async for row in await coll.aggregate(pipeline, batchSize=len(targets) + 1)}

    @_guarded
    async def referrers(
        self,
        resource_type: str,
        codes: list[str],
        ref: str,
        statuses: tuple[str, ...],
        count: int,
        session: AsyncClientSession | None = None,
    ) -> list[Resource]:
        """Up to `count` resources (`id` and `status`) in `statuses` whose reference parameter, any of `codes`,
        holds `ref`: one indexed query (each parameter's `_search` values are indexed after the tenant)."""
        either = [{search.reference_key(resource_type, c): ref} for c in codes]
        query = self._scoped(resource_type, {"$or": either, "status": {"$in": list(statuses)}})
        cursor = self.db[resource_type].find(query, {"id": 1, "status": 1}, limit=count, session=session)
        return [_hide(doc) async for doc in cursor]

    @_guarded
    async def guard(self, keys: Iterable[tuple[str, str]], session: AsyncClientSession) -> None:
        """Write each (type, id) in `session`'s transaction without changing its FHIR JSON: a rule read made
        a write, so a concurrent transaction writing one of them (a status change, a delete) conflicts with
        this one and exactly one of the two commits. One command per type: an `$in` update (on secantusd-rs
        100 guards take 12 ms so, 18 ms as a statement per id)."""
        for rtype, ids in by_type((rtype, self._key(id)) for rtype, id in keys).items():
            await self.db[rtype].update_many({"_id": {"$in": ids}}, {"$inc": {GUARD: 1}}, session=session)

    def use_cursor_keys(self, keys: list[str]) -> None:
        """Sign Connection cursors with `keys`, newest first (FINGATE_CURSOR_KEYS); without, the database's key."""
        if keys:
            self._signing["signer"] = cursors.Signer(keys)

    async def _signer(self) -> cursors.Signer:
        """The cursor signer: the configured keys, else one random key made once and kept in the database
        (`server_keys`), so every instance and every restart signs and verifies alike."""
        if "signer" not in self._signing:
            made = {"key": secrets.token_urlsafe(32), "created": datetime.now(UTC)}
            keys = self.db[SERVER_KEYS]
            try:
                await keys.update_one({"_id": CURSOR_KEY}, {"$setOnInsert": made}, upsert=True)
            except DuplicateKeyError:
                pass  # another instance made it first: read theirs
            doc = await keys.find_one({"_id": CURSOR_KEY})
            if doc is None:
                raise errors.unavailable()
            self._signing.setdefault("signer", cursors.Signer([doc["key"]]))
        return self._signing["signer"]

    def _cursor_scope(self, resource_type: str) -> tuple[str, str | None]:
        """What a cursor must have been made in: this tenant and, for a type confined to one, the compartment."""
        return self.tenant, self.patient if resource_type in self.compartment else None

    @_guarded
    async def page(
        self,
        resource_type: str,
        params: dict[str, str],
        count: int | None,
        cursor: str | None,
        sort: str | None,
        default_count: int = DEFAULT_PAGE,
        elements: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """A keyset page: {count, offset, pagesize, first, previous, next, last, edges: [{mode, score, resource}]}.

        A cursor carries its whole search: arguments given with it must be its own (or be left out). With
        `elements`, only those (and `id`) of each resource, as `search`."""
        signer = await self._signer()
        tenant, patient = self._cursor_scope(resource_type)
        if cursor is None:
            at = cursors.Cursor(
                resource_type, params, sort or None, default_count if count is None else count, tenant, patient
            )
        else:
            at = signer.loads(cursor)
            if (at.type, at.tenant, at.patient) != (resource_type, tenant, patient):
                raise search.bad_cursor(
                    f"it pages a search of another type, tenant or compartment than this {resource_type}Connection"
                )
            for name, given, own in (
                ("search arguments", params or None, at.params),
                ("_sort", sort or None, at.sort),
                ("_count", count, at.count),
            ):
                if given is not None and given != own:
                    raise search.bad_cursor(
                        f"the {name} given with it are not its own (leave them out: a cursor carries its search)"
                    )
        return await self._page(resource_type, at, signer, elements)

    async def _page(
        self, resource_type: str, at: cursors.Cursor, signer: cursors.Signer, elements: Iterable[str] | None
    ) -> dict[str, Any]:
        query = self._scoped(resource_type, await self._filter(resource_type, at.params))
        order = search.compile_sort(resource_type, at.sort)
        coll, n = self.db[resource_type], at.count
        projection = _only(elements, *(field for field, _ in order))  # the sort keys place the page's cursors
        total = await coll.count_documents(query)
        if n == 0:
            return _page_of([], total, 0, n, {})
        if at.position is None and at.backward:  # `last`: the page an offset walk would end on
            take = total - (total - 1) // n * n if total else 0
            found = (
                await coll.find(
                    query, projection, sort=search.reversed_sort(order), limit=take, batch_size=take + 1
                ).to_list()
                if take
                else []
            )
            docs, offset = found[::-1], total - len(found)
            before, after = offset > 0, False
        else:
            paged = (
                _all(query, search.keyset_filter(resource_type, at.sort, at.position, at.backward))
                if at.position is not None
                else query
            )
            found = await coll.find(
                paged,
                projection,
                sort=search.reversed_sort(order) if at.backward else order,
                limit=n + 1,
                batch_size=n + 2,
            ).to_list()
            more, found = len(found) > n, found[:n]
            if at.backward:
                docs, offset = found[::-1], max(at.offset - len(found), 0) if more else 0
                before, after = more, bool(docs)
            else:
                docs, offset = found, at.offset
                before, after = at.position is not None, more
        return _page_of(docs, total, offset, n, _links(resource_type, at, docs, offset, before, after, signer))

    @_guarded
    async def referencing(
        self,
        resource_type: str,
        code: str,
        targets: list[str],
        params: dict[str, str],
        sort: str | None,
        count: int,
        elements: Iterable[str] | None = None,
    ) -> dict[str, list[Resource]]:
        """Per target, the first `count` resources (in `sort` order) whose reference parameter `code` points at it: one command.

        With `elements`, one target's find reads only those (and `id`); the aggregate of several reads whole
        resources (projecting there would be one more stage copying every document on SecantusDB).

        At most targets x count documents come back. One target is a `find` with a limit. Several are
        one aggregate: the first `$match` is answered from the tenant + reference index; each resource
        is unwound into a row per reference it holds (so it counts for every target it points at), and
        `$topN` keeps each target's first `count` (MongoDB holds no more than that per target while
        grouping). The references are projected to the top level beside the document because SecantusDB
        deep-copies every document it unwinds at a dotted path (1,000 documents of 2 KB: 0.45 s, not 0.15 s).
        One row per resource keeps every reply document one resource big; `$facet` would put them all in
        one 16 MB document, and a `$lookup` or `$unionWith` per target makes SecantusDB scan the whole
        collection for each.
        """
        targets = list(dict.fromkeys(targets))
        if count <= 0 or not targets:
            return {}
        key = search.reference_key(resource_type, code)
        wanted = {key: targets[0] if len(targets) == 1 else {"$in": targets}}
        query = await self._filter(resource_type, params)
        match = self._scoped(resource_type, _all(wanted, query))
        order = search.compile_sort(resource_type, sort)
        coll = self.db[resource_type]
        if len(targets) == 1:
            found = coll.find(match, _only(elements), sort=order, limit=count, batch_size=count + 1)
            docs = [_hide(d) async for d in found]
            return {targets[0]: docs} if docs else {}
        top = {"n": count, "sortBy": {f"doc.{field}": direction for field, direction in order}, "output": "$doc"}
        pipeline: list[dict[str, Any]] = [
            {"$match": match},
            {"$project": {"_id": 0, "ref": f"${key}", "doc": "$$ROOT"}},
            {"$unwind": "$ref"},
            {"$match": {"ref": {"$in": targets}}},
            {"$group": {"_id": "$ref", "top": {"$topN": top}}},
            {"$unwind": "$top"},
        ]
        out: dict[str, list[Resource]] = {}
        async for row in await coll.aggregate(pipeline, batchSize=len(targets) * count + 1):
            out.setdefault(row["_id"], []).append(_hide(row["top"]))
        return out

    @_guarded
    async def reverse_pages(
        self, resource_type: str, code: str, targets: list[str], sort: str | None, count: int
    ) -> dict[str, dict[str, Any]]:
        """Per target, the first page of the `resource_type` Connection of those whose reference parameter `code`
        points at it (the search `{code: target}`), with its total: one aggregate, as `referencing`'s."""
        signer = await self._signer()
        tenant, patient = self._cursor_scope(resource_type)
        targets = list(dict.fromkeys(targets))
        key = search.reference_key(resource_type, code)
        order = search.compile_sort(resource_type, sort)
        top = {"n": count + 1, "sortBy": {f"doc.{field}": direction for field, direction in order}, "output": "$doc"}
        pipeline: list[dict[str, Any]] = [
            {"$match": self._scoped(resource_type, {key: targets[0] if len(targets) == 1 else {"$in": targets}})},
            {"$project": {"_id": 0, "ref": f"${key}", "doc": "$$ROOT"}},
            {"$unwind": "$ref"},
            {"$match": {"ref": {"$in": targets}}},
            {"$group": {"_id": "$ref", "top": {"$topN": top}, "total": {"$sum": 1}}},
        ]
        rows = {row["_id"]: row async for row in await self.db[resource_type].aggregate(pipeline)}
        out = {}
        for target in targets:
            at = cursors.Cursor(resource_type, {code: target}, sort or None, count, tenant, patient)
            row = rows.get(target, {"top": [], "total": 0})
            docs = row["top"][:count]
            links = _links(resource_type, at, docs, 0, False, len(row["top"]) > count, signer) if count else {}
            out[target] = _page_of(docs, row["total"], 0, count, links)
        return out

    @_guarded
    async def settlements(
        self, targets: list[str], responses: bool, session: AsyncClientSession | None = None
    ) -> dict[str, Settlement]:
        """Per target (`Type/id`), the active payments allocated to it and, with `responses`, the benefit totals
        of its active ClaimResponses: one aggregate (`$unionWith` for the responses), whatever the number of
        targets. Each side is read within this view (tenant, compartment); with `session`, within its transaction."""
        targets = list(dict.fromkeys(targets))
        if not targets:
            return {}
        scope = self._scoped(settlements.PAYMENTS, {})
        response_scope = self._scoped(settlements.RESPONSES, {}) if responses else None
        pipeline = settlements.pipeline(scope, response_scope, targets)
        # Rows are small (ids, a date, a sum): all in the first reply, however many, up to MongoDB's 16 MB.
        cursor = await self.db[settlements.PAYMENTS].aggregate(
            pipeline, batchSize=settlements.ROWS_PER_REPLY, session=session
        )
        rows = [row async for row in cursor]
        return settlements.settlements(rows)

    def received_events(self) -> payment_events.PaymentEvents:
        """This tenant's received payment-processor events (app.store.payment_events)."""
        return payment_events.PaymentEvents(self.db, self.tenant)

    @_guarded
    async def account_ledgers(self, accounts: list[str]) -> dict[str, AccountLedger]:
        """Per Account (`Account/id`), its billed Invoices and the active payments to them or to it: one aggregate
        (the Invoices, each with its payments by `$lookup` on the allocation-target index, then `$unionWith` the
        payments to the Accounts)."""
        accounts = list(dict.fromkeys(accounts))
        if not accounts:
            return {}
        pipeline = settlements.account_pipeline(
            self._scoped(settlements.INVOICES, {}), self._scoped(settlements.PAYMENTS, {}), accounts
        )
        cursor = await self.db[settlements.INVOICES].aggregate(pipeline, batchSize=settlements.ROWS_PER_REPLY)
        return settlements.account_ledgers([row async for row in cursor])

    @_guarded
    async def open_items(self, party_type: str, parties: list[str]) -> dict[str, list[OpenItem]]:
        """Per party (`Patient/id`, `Organization/id`), its active Claims (as patient, as insurer) and issued Invoices
        (as recipient), each with the active payments to it: one aggregate (the Claims, `$unionWith` the Invoices,
        each with its payments by `$lookup` on the allocation-target index)."""
        parties = list(dict.fromkeys(parties))
        if not parties:
            return {}
        scopes = {t: self._scoped(t, {}) for t in (settlements.CLAIMS, settlements.INVOICES, settlements.PAYMENTS)}
        pipeline = settlements.party_pipeline(party_type, scopes, parties)
        cursor = await self.db[settlements.CLAIMS].aggregate(pipeline, batchSize=settlements.ROWS_PER_REPLY)
        return settlements.open_items([row async for row in cursor])

    @_guarded
    async def history(self, resource_type: str, id: str, elements: Iterable[str] | None = None) -> list[Resource]:
        """Every version, newest first; a deleted resource's starts with its deletion (`values.deletion`). With
        `elements`, only those (and `id`) of each version."""
        kept = ("resource",) if elements is None else [f"resource.{e}" for e in ("id", *elements)]
        cursor = self.db[f"{resource_type}_history"].find(
            self._scoped(resource_type, {"id": id}),
            {"_id": 0, "deleted": 1, **dict.fromkeys(kept, 1)},
            sort=[("v", DESCENDING)],
        )
        entries = [d async for d in cursor]
        versions = [d["resource"] for d in entries]
        if entries and "deleted" in entries[0]:
            versions.insert(0, deletion(resource_type, id, entries[0]["deleted"]))
        return versions

    @_guarded
    async def deleted(self, resource_type: str, ids: list[str]) -> dict[str, str]:
        """Id -> when (an instant), for those of `ids` deleted in this view: one command.

        Only a deleted resource's newest history entry carries `deleted` (a deleted id is never written again).
        """
        query = self._scoped(resource_type, {"id": {"$in": ids}, "deleted": {"$exists": True}})
        cursor = self.db[f"{resource_type}_history"].find(query, {"_id": 0, "id": 1, "deleted": 1})
        return {d["id"]: instant(d["deleted"]) async for d in cursor}

    # -- writes: each is one conditional operation plus its history, in one transaction ----

    async def _with_history(
        self, session: AsyncClientSession, resource_type: str, resource: Resource, values: dict[str, Any]
    ) -> None:
        """A version's entry keeps the `_search` `values` of the compartment, so `history` filters as reads do."""
        entry = self._history_entry(resource_type, resource, values)
        await self.db[f"{resource_type}_history"].insert_one(entry, session=session)

    def _stored(self, resource_type: str, resource: Resource) -> Resource:
        """The document to store; FORBIDDEN when this view's compartment would not hold it."""
        doc = {
            **resource,
            "_id": self._key(resource["id"]),
            TENANT: self.tenant,
            "_search": search.index_values(resource_type, resource),
        }
        if resource_type in self.compartment and not search.in_compartment(resource_type, doc, self.patient or ""):
            fields = " or ".join(c.replace(COMPARTMENT_SELF, "id") for c in patient_compartment()[resource_type])
            message = (
                f"{resource_type}/{resource['id']} would be outside Patient/{self.patient}'s compartment: "
                f"a patient/ scope writes only resources whose {fields} is that patient"
            )
            raise errors.FinGateError(
                errors.FORBIDDEN, message, issues=[errors.outcome_issue(message, code="forbidden")]
            )
        return doc

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
        self.commits.notify()

    @contextlib.asynccontextmanager
    async def joined(
        self, session: AsyncClientSession | None, written: dict[str, str] | None = None
    ) -> AsyncIterator[AsyncClientSession]:
        """`session` when a caller's transaction is under way (a transaction Bundle), else one of its own
        (whose unconfirmed commit names `written`, see `transaction`)."""
        if session is not None:
            yield session
        else:
            async with self.transaction(written) as own:
                yield own

    @_guarded
    async def insert(
        self, resource_type: str, resource: Resource, session: AsyncClientSession | None = None
    ) -> Resource:
        """Store version 1 (the caller set `id` and `meta`); CONFLICT if the id is taken."""
        doc = self._stored(resource_type, resource)
        async with self.joined(session) as session:
            try:
                await self.db[resource_type].insert_one(doc, session=session)
            except DuplicateKeyError as exc:
                raise errors.FinGateError(errors.CONFLICT, f"{resource_type}/{resource['id']} already exists") from exc
            await self._with_history(session, resource_type, resource, doc["_search"])
        return resource

    @_guarded
    async def insert_many(self, resources: list[tuple[str, Resource]], session: AsyncClientSession) -> None:
        """Store version 1 of each (type, resource) in `session`'s transaction: a few `insert`s per collection for
        the resources, one for their history (a load's chunk); CONFLICT if an id is taken (nothing is kept).

        The documents of each batch (their `_search` values, the most of this call's own time) are made while
        the batch before it is in the database, so the two overlap; one command is in flight at a time."""
        groups: dict[str, list[Resource]] = {}
        for resource_type, resource in resources:
            groups.setdefault(resource_type, []).append(resource)
        batches = [
            (t, group[n : n + INSERT_BATCH]) for t, group in groups.items() for n in range(0, len(group), INSERT_BATCH)
        ]
        history: dict[str, list[Resource]] = {}
        in_flight: asyncio.Future[Any] | None = None
        try:
            for resource_type, batch in batches:
                docs = [self._stored(resource_type, resource) for resource in batch]
                history.setdefault(f"{resource_type}_history", []).extend(
                    self._history_entry(resource_type, resource, doc["_search"])
                    for resource, doc in zip(batch, docs, strict=True)
                )
                if in_flight is not None:
                    await in_flight
                insert = self.db[resource_type].insert_many(docs, ordered=True, session=session)
                in_flight = asyncio.ensure_future(insert)
            if in_flight is not None:
                await in_flight
            for collection, entries in history.items():
                await self.db[collection].insert_many(entries, ordered=True, session=session)
        except pymongo.errors.BulkWriteError as exc:
            if any(e.get("code") == 11000 for e in exc.details.get("writeErrors", ())):
                raise errors.FinGateError(errors.CONFLICT, "a resource of this batch already exists") from exc
            raise
        finally:
            if in_flight is not None and not in_flight.done():  # a document refused (FORBIDDEN) mid-way
                with contextlib.suppress(Exception):
                    await in_flight

    def _history_entry(self, resource_type: str, resource: Resource, values: dict[str, Any]) -> Resource:
        return {
            "_id": self._history_id(resource["id"], resource["meta"]["versionId"]),
            TENANT: self.tenant,
            "id": resource["id"],
            "v": int(resource["meta"]["versionId"]),
            "_search": search.compartment_values(resource_type, values),
            "resource": resource,
        }

    @_guarded
    async def audit_many(self, records: list[Resource], session: AsyncClientSession) -> None:
        """Append audit records inside the write's transaction: one command."""
        if records:
            await self.db[AUDIT].insert_many([{**r, TENANT: self.tenant} for r in records], session=session)

    def _expected(self, resource_type: str, id: str, version: str, status: str | None) -> dict[str, Any]:
        """The filter of a conditional write: this id, still at `version` (and `status`), in this view."""
        match: dict[str, Any] = {"_id": self._key(id), "meta.versionId": version}
        if status is not None:
            match["status"] = status
        return self._restricted(resource_type, match)

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
        match = self._expected(resource_type, resource["id"], expected_version, expected_status)
        doc = self._stored(resource_type, resource)
        async with self.joined(session) as session:
            result = await self.db[resource_type].replace_one(match, doc, session=session)
            if result.matched_count != 1:
                raise errors.FinGateError(
                    errors.CONFLICT,
                    f"{resource_type}/{resource['id']} changed since version {expected_version}: read it again and retry",
                )
            await self._with_history(session, resource_type, resource, doc["_search"])
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
        match = self._expected(resource_type, id, expected_version, expected_status)
        async with self.joined(session) as session:
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

    # -- conditional creates: one document per (tenant, type, criteria), written with the create -----

    @_guarded
    async def claim_criteria(self, resource_type: str, criteria: str, session: AsyncClientSession) -> None:
        """Write the (tenant, type, criteria) document of a conditional create in its transaction: two
        transactions creating on the same criteria both write it, so one of them conflicts (CONFLICT)
        and, searching again, finds what the other created."""
        key = f"{resource_type}?{criteria}"
        try:
            await self.db[CONDITIONAL_KEYS].update_one(
                {TENANT: self.tenant, "key": key},
                {"$inc": {"creates": 1}, "$set": {"when": datetime.now(UTC)}},
                upsert=True,
                session=session,
            )
        except DuplicateKeyError as exc:  # two first upserts at once: the other transaction holds it
            raise errors.FinGateError(
                errors.CONFLICT, f"a concurrent conditional create of {resource_type} on {criteria!r} conflicted"
            ) from exc

    # -- audit: who wrote what, one record per write, committed with it ------------------------

    @_guarded
    async def audit(self, record: Resource, session: AsyncClientSession) -> None:
        """Append an audit record (sub, when, type, id, version, operation) inside the write's transaction."""
        await self.db[AUDIT].insert_one({**record, TENANT: self.tenant}, session=session)

    def _audit_query(self, resource_type: str | None, id: str | None) -> dict[str, Any]:
        query: dict[str, Any] = {TENANT: self.tenant}
        if resource_type is not None:
            query["type"] = resource_type
        if id is not None:
            query["id"] = id
        return query

    @_guarded
    async def audit_count(self, resource_type: str | None = None, id: str | None = None) -> int:
        """How many audit records `audit_log` would list without a limit."""
        return await self.db[AUDIT].count_documents(self._audit_query(resource_type, id))

    @_guarded
    async def audit_log(self, count: int, resource_type: str | None = None, id: str | None = None) -> list[Resource]:
        """This tenant's audit records, newest first."""
        if count == 0:  # not MongoDB's `limit=0`, which is no limit
            return []
        query = self._audit_query(resource_type, id)
        cursor = self.db[AUDIT].find(query, {"_id": 0}, sort=[("when", DESCENDING)], limit=count)
        return [{**doc, "tenant": doc.pop(TENANT)} async for doc in cursor]

    # -- outbox: one event per write, committed with it (app/store/outbox.py) -----------------

    @_guarded
    async def append_event(self, record: Resource, session: AsyncClientSession) -> None:
        """Append an event to this tenant's outbox inside the write's transaction (positioned when read)."""
        await outbox.append(self.db, self.tenant, record, session)

    async def append_events(self, records: list[Resource], session: AsyncClientSession) -> None:
        """Append events, in order, inside the writes' transaction (a load's chunk): one command."""
        await outbox.append_many(self.db, self.tenant, records, session)

    @_guarded
    async def events_after(self, position: int, limit: int, types: frozenset[str] | None = None) -> list[Resource]:
        """This tenant's events past `position`, in order (only of `types` when given)."""
        return await outbox.after(self.db, self.tenant, position, limit, types)

    @_guarded
    async def last_position(self) -> int:
        return await outbox.last(self.db, self.tenant)

    # -- persisted queries: GraphQL documents by their sha256, shared by every instance ----

    @_guarded
    async def get_query(self, sha256: str) -> str | None:
        doc = await self.db[PERSISTED_QUERIES].find_one({"_id": sha256}, {"query": 1})
        return None if doc is None else doc["query"]

    @_guarded
    async def stored_queries(self, digests: list[str]) -> set[str]:
        """Those of `digests` stored already: one command."""
        found = self.db[PERSISTED_QUERIES].find({"_id": {"$in": digests}}, {"_id": 1})
        return {doc["_id"] async for doc in found}

    @_guarded
    async def put_query(self, sha256: str, query: str) -> None:
        """Idempotent: the id is the text's hash, so a stored query never changes."""
        await self.db[PERSISTED_QUERIES].update_one(
            {"_id": sha256}, {"$setOnInsert": {"query": query, "stored": datetime.now(UTC)}}, upsert=True
        )


class Commits:
    """A wake-up hint for outbox readers in this process: the next commit sets the event `next` gave.

    Only a hint: readers poll the outbox too, so writes of other instances arrive as well. A reader takes
    `next()` before it reads, so a commit between its read and its wait still wakes it.
    """

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def next(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None


PERSISTED_QUERIES = "persisted_queries"
IDEMPOTENCY_KEYS = "idempotency_keys"  # a mutation request's first response per tenant and Idempotency-Key
CONDITIONAL_KEYS = "conditional_keys"  # one per conditional create's criteria, so racing creates conflict
SERVER_KEYS = "server_keys"  # keys this server made for itself, shared by every instance
CURSOR_KEY = "cursor"
INDEXES_KEY = "indexes"  # the digest of the index list last created in full (`ensure_indexes`)


def _page_of(docs: list[Resource], total: int, offset: int, size: int, links: dict[str, str | None]) -> dict[str, Any]:
    """A Connection as FHIR GraphQL shapes it; every match is a `match` without a score."""
    edges = [{"mode": "match", "score": None, "resource": _hide(d)} for d in docs]
    return {"count": total, "offset": offset, "pagesize": size, **dict.fromkeys(PAGE_LINKS), **links, "edges": edges}


PAGE_LINKS = ("first", "previous", "next", "last")


def _links(
    resource_type: str,
    at: cursors.Cursor,
    docs: list[Resource],
    offset: int,
    before: bool,
    after: bool,
    signer: cursors.Signer,
) -> dict[str, str | None]:
    """The cursors of a page of `at`'s search at `offset`: its ends always, its neighbours when there are any."""
    place = functools.partial(search.keyset_position, resource_type, at.sort)
    return {
        "first": signer.dumps(at.at(None, False, 0)),
        "last": signer.dumps(at.at(None, True, 0)),
        "previous": signer.dumps(at.at(place(docs[0]), True, offset)) if before and docs else None,
        "next": signer.dumps(at.at(place(docs[-1]), False, offset + len(docs))) if after and docs else None,
    }


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


__all__ = ["CODEC_OPTIONS", "Store"]
