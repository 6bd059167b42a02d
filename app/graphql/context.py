"""The per-request context resolvers receive as `info.context`: the only door to data."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from strawberry.dataloader import DataLoader

from app import billing, bundles, errors, events
from app.auth import AUDIT_TYPE, CREATE, DELETE, READ, UPDATE, Principal
from app.fhir.references import local_version
from app.fhir.values import Resource, instant
from app.graphql.bundles import outcome as bundle_outcome
from app.graphql.limits import DEFAULT_COUNT, MAX_COUNT
from app.graphql.projection import ALWAYS
from app.hooks import notification
from app.payments import OUTCOMES
from app.store import HISTORY_PATH, Store
from app.store.deliveries import Deliveries
from app.writes import Writer

_CONTAINED = "__contained__"  # never a GraphQL field name, so it cannot leak into a response
_INSIDE = "__inside__"  # marks a contained resource: nothing outside its container can point at it
# What a type's billing view reads besides the resource itself (the caller must be allowed to read it, see
# `_allow_view`).
_VIEW_READS = {
    "Account": ("Invoice", "PaymentReconciliation"),
    "Claim": ("PaymentReconciliation", "ClaimResponse"),
    "Invoice": ("PaymentReconciliation",),
}


PAYMENT = "PaymentReconciliation"
PAGE_A_SEARCH = "page with _offset or a Connection's _cursor"
PAGE_A_REVERSE = "page with _offset, or with this resource's XConnection(_reference: ...) and its _cursor"


def check_count(count: int | None, default: int = DEFAULT_COUNT, paging: str = PAGE_A_SEARCH) -> int:
    if count is None:
        return default
    if count < 0 or count > MAX_COUNT:
        raise errors.bad_input(f"_count must be between 0 and {MAX_COUNT}, got {count}: {paging}", expression="_count")
    return count


_MORE = -1  # a noted list's total when more match than it returned, uncounted
# In place of a reverse-list shape's sort: the shape counts its matches (`_count: 0`) instead of reading rows.
_HOW_MANY: Any = object()


def _params(frozen: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {code: v if isinstance(v, str) else list(v) for code, v in frozen}


def check_offset(offset: int | None) -> int:
    if offset is None:
        return 0
    if offset < 0:
        raise errors.bad_input(f"_offset must be 0 or more, got {offset}")
    return offset


def _link_contained(resource: Resource) -> Resource:
    """Let `#id` references inside a resource find their contained targets."""
    contained = {c.get("id"): c for c in resource.get("contained") or () if isinstance(c, dict)}
    if not contained:
        return resource
    for c in contained.values():
        c[_INSIDE] = True

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref.startswith("#"):
                node[_CONTAINED] = contained.get(ref[1:])
            for value in node.values():
                if isinstance(value, dict | list):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for key, value in resource.items():
        if key != "contained":
            walk(value)
    return resource


def _link_all(resources: list[Resource]) -> list[Resource]:
    for r in resources:
        if "contained" in r:
            _link_contained(r)
    return resources


class Context:
    """One request's view of the data: batched reads and the write path.

    The door: every read and write is the caller's tenant's (the store is scoped to it here) and
    is checked against the caller's scopes; what only `patient/` scopes grant goes through a store
    view limited to the patient's compartment (`_view`). There is no Context without a Principal:
    the HTTP layer passes a verified one, or `auth.anonymous` when auth is off.
    """

    def __init__(
        self,
        store: Store,
        request_id: str,
        principal: Principal,
        limits: Any = None,
        client_request_id: str | None = None,
        allow_overpayment: bool = False,
        project: bool = True,
        webhook_secret: str | None = None,
    ) -> None:
        self.principal = principal
        self.webhook_secret = webhook_secret  # FINGATE_WEBHOOK_SECRET: each Subscription's is derived from it
        # Read only what the operation selects (app.graphql.projection sets `selected` before it runs);
        # None: whole resources (a mutation, or `project` off: FINGATE_PROJECTION=false).
        self.project = project
        self.selected: Mapping[str, frozenset[str] | None] | None = None
        self.allow_overpayment = allow_overpayment  # the tenant's setting (FINGATE_ALLOW_OVERPAYMENT)
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.tenant = store.for_tenant(principal.tenant)
        self.store = self._view(self.tenant, READ)
        self.limits = limits  # app.graphql.limits.Limits, read by the QueryLimits extension
        self._resources: DataLoader[tuple[str, str], Resource | None] = DataLoader(self._load_resources)
        self._found: dict[tuple[str, str], Resource | None] = {}  # every resource read, for both paths
        self._reverse: DataLoader[tuple[Any, ...], tuple[list[Resource], int | None]] = DataLoader(self._load_reverse)
        self._reverse_pages: DataLoader[tuple[str, str, str | None, int, str], dict[str, Any]] = DataLoader(
            self._load_reverse_pages
        )
        # Lists that stopped before all their matches: (the field's `info.path`, its note), for `extensions.truncated`.
        self.truncated: list[tuple[Any, dict[str, Any]]] = []
        self._deleted: DataLoader[tuple[str, str], str | None] = DataLoader(self._load_deleted)
        self._settlements: DataLoader[str, billing.Settlement] = DataLoader(self._load_settlements)
        self._ledgers: DataLoader[str, billing.AccountLedger] = DataLoader(self._load_ledgers)
        self._open_items: DataLoader[str, list[Any]] = DataLoader(self._load_open_items)

    def _view(self, store: Store, action: str) -> Store:
        """`store` limited, for each type only `patient/` scopes grant `action` on, to the patient's compartment."""
        types = self.principal.compartment_types(action)
        return store.in_compartment(self.principal.patient or "", types) if types else store

    def _writer(self, action: str) -> Writer:
        """The write path for `action`, audited as this caller's: its rule checks read the whole tenant,
        its writes stay in the view `action` has."""
        return Writer(
            self._view(self.tenant, action),
            self.principal.sub,
            self.request_id,
            self.client_request_id,
            allow_overpayment=self.allow_overpayment,
        )

    # -- batch functions: one database command per execution level -----------------------

    def bind(self, principal: Principal, limits: Any) -> None:
        """Become the context of `principal` (a WebSocket's, once its `connection_init` token is verified)."""
        Context.__init__(
            self, self.tenant, self.request_id, principal, limits, self.client_request_id, self.allow_overpayment
        )

    def forget(self) -> None:
        """Drop what was read so far: a subscription's next event reads the data as it is then.
        Loads under way keep the caches they started with (see `_fetch`)."""
        self._resources = DataLoader(self._load_resources)
        self._found = {}
        self.truncated = []

    async def _load_resources(self, keys: list[tuple[str, str]]) -> list[Resource | None]:
        found = await self._fetch(keys)
        return [found[key] for key in keys]

    async def _fetch(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Resource | None]:
        """Reads, in one find per type (sent together), those of `keys` not read yet in this request (absent ones kept as None);
        the cache that now holds them all."""
        found = self._found
        by_type: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            if key not in found:
                by_type[key[0]].append(key[1])
        if not by_type:
            return found
        read = await self.store.get_by_type(by_type, projections=self._projections(by_type))
        for resource in read.values():
            if "contained" in resource:
                _link_contained(resource)
        found.update(read)
        for rtype, ids in by_type.items():
            for id in ids:
                found.setdefault((rtype, id), None)
        return found

    def _projections(self, types: Iterable[str]) -> dict[str, frozenset[str] | None] | None:
        """The elements to read of each of `types`: what the operation selects of it (only `ALWAYS` when it selects
        nothing of it: a reference to it is resolved for its type alone); None: whole resources."""
        return None if self.selected is None else {t: self._elements(t) for t in types}

    def _elements(self, resource_type: str) -> frozenset[str] | None:
        """The elements to read of `resource_type` (see `_projections`); None: the whole resource."""
        return None if self.selected is None else self.selected.get(resource_type, ALWAYS)

    async def _load_reverse(self, keys: list[tuple[Any, ...]]) -> list[tuple[list[Resource], int | None]]:
        """One `referencing` command per list shape, at its deepest `_offset + _count` plus one (the row that tells
        more exist); each list is then cut to its own. `_count: 0` lists are counted instead, one command per shape.
        Each key gets (its resources, None), or (its page, _MORE) when more match, or ([], the total)."""
        targets: dict[tuple[Any, ...], list[str]] = defaultdict(list)
        limits: dict[tuple[Any, ...], int] = defaultdict(int)
        for rtype, code, params, sort, offset, count, target in keys:
            shape = (rtype, code, params, sort if count else _HOW_MANY)
            targets[shape].append(target)
            limits[shape] = max(limits[shape], offset + count + 1)

        async def run(shape: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            rtype, code, params, sort = shape
            if sort is _HOW_MANY:
                return shape, await self.store.referencing_counts(rtype, code, targets[shape], _params(params))
            found = await self.store.referencing(
                rtype, code, targets[shape], _params(params), sort, limits[shape], self._elements(rtype)
            )
            for resources in found.values():
                _link_all(resources)
            return shape, found

        results = dict(await asyncio.gather(*(run(shape) for shape in targets)))
        out: list[tuple[list[Resource], int | None]] = []
        for rtype, code, params, sort, offset, count, target in keys:
            if not count:
                out.append(([], results[(rtype, code, params, _HOW_MANY)].get(target, 0)))
                continue
            found = results[(rtype, code, params, sort)].get(target, [])
            out.append((found[offset : offset + count], _MORE if len(found) > offset + count else None))
        return out

    async def _load_reverse_pages(self, keys: list[tuple[str, str, str | None, int, str]]) -> list[dict[str, Any]]:
        """The first page of each reverse Connection of a level: one command per (type, parameter, sort, size)."""
        targets: dict[tuple[str, str, str | None, int], list[str]] = defaultdict(list)
        for rtype, code, sort, count, target in keys:
            targets[(rtype, code, sort, count)].append(target)

        async def run(shape: tuple[str, str, str | None, int]) -> dict[tuple[Any, ...], dict[str, Any]]:
            pages = await self.store.reverse_pages(*shape[:2], targets[shape], *shape[2:])
            for page in pages.values():
                _link_all([edge["resource"] for edge in page["edges"]])
            return {(*shape, target): page for target, page in pages.items()}

        found: dict[tuple[Any, ...], dict[str, Any]] = {}
        for pages in await asyncio.gather(*(run(shape) for shape in targets)):
            found.update(pages)
        return [found[key] for key in keys]

    async def _load_deleted(self, keys: list[tuple[str, str]]) -> list[str | None]:
        """When each missing (type, id) was deleted, None if never: a command per type, for a whole level."""
        by_type: dict[str, list[str]] = defaultdict(list)
        for rtype, id in keys:
            by_type[rtype].append(id)
        found = await asyncio.gather(*(self.store.deleted(rtype, ids) for rtype, ids in by_type.items()))
        when = {(rtype, id): at for rtype, deleted in zip(by_type, found, strict=True) for id, at in deleted.items()}
        return [when.get(key) for key in keys]

    async def _load_settlements(self, targets: list[str]) -> list[billing.Settlement]:
        """Every settlement a level's billing views need, in one command."""
        responses = any(t.startswith("Claim/") for t in targets)
        found = await self.store.settlements(targets, responses)
        return [found.get(t, billing.NO_SETTLEMENT) for t in targets]

    async def _load_ledgers(self, accounts: list[str]) -> list[billing.AccountLedger]:
        """Every Account ledger a level's billing views need, in one command."""
        found = await self.store.account_ledgers(accounts)
        return [found.get(a, billing.NO_LEDGER) for a in accounts]

    async def _load_open_items(self, parties: list[str]) -> list[list[Any]]:
        """Every party's open items a level's views need: one command per party type."""
        by_type: dict[str, list[str]] = defaultdict(list)
        for party in parties:
            by_type[party.split("/", 1)[0]].append(party)
        found: dict[str, list[Any]] = {}
        for party_type, wanted in by_type.items():
            found.update(await self.store.open_items(party_type, wanted))
        return [found.get(p, []) for p in parties]

    # -- what resolvers call (see app/graphql/build.py) --------------------------------

    def _allow_view(self, viewed: str, needed: str) -> None:
        """A billing view of a `viewed` resource reads `needed` too: the caller must be allowed to read it, but
        for payments in a patient's view of their own resources. PaymentReconciliation is in no compartment, so
        a `patient/` scope never reads one; what was paid on the patient's own Claims and Invoices is theirs to
        see (as R5's Account.balance would be): the sums and the list of payments to them, not the payments."""
        if needed == PAYMENT and viewed in self.principal.compartment_types(READ):
            return
        self._allow(needed, READ)

    def _allow(self, resource_type: str, action: str) -> None:
        if not self.principal.can(resource_type, action):
            raise errors.forbidden(resource_type, action)

    async def read(self, resource_type: str, id: str) -> Resource | None:
        self._allow(resource_type, READ)
        if "/" in id:  # FHIR ids hold none; `x/_history/v` is how the reads below ask for a version
            return None
        return await self._resources.load((resource_type, id))

    async def resolve(self, reference: Resource) -> Resource | None:
        if _CONTAINED in reference:
            return reference[_CONTAINED]  # type: ignore[no-any-return]
        parsed = local_version(reference)
        if parsed is None:
            return None
        self._allow(parsed[0], READ)
        return await self._resources.load(parsed)

    async def resolve_many(self, references: list[Resource]) -> list[Resource | None]:
        """`resolve` of each reference, in one await: what the compiled path runs for a whole level."""
        keys = [None if _CONTAINED in r else local_version(r) for r in references]
        for resource_type in {key[0] for key in keys if key is not None}:
            self._allow(resource_type, READ)
        found = await self._fetch([key for key in keys if key is not None])
        # No key: a contained target (linked when the resource was read), or a reference outside this server.
        return [found[key] if key is not None else r.get(_CONTAINED) for r, key in zip(references, keys, strict=True)]

    async def version(self, resource_type: str, id: str, version: str) -> Resource | None:
        """One version of a resource (an event's), from its history; None outside this caller's view."""
        self._allow(resource_type, READ)
        return await self._resources.load((resource_type, f"{id}{HISTORY_PATH}{version}"))

    async def changes(self, resource_type: str, after: str | None, params: dict[str, Any], keep: Any = None) -> Any:
        """The tenant's events of `resource_type` past position `after` (none: from now), forever: only those
        `keep(event)` accepts, whose version this caller may read (its compartment), and, with search `params`,
        whose resource matches them when the event is delivered (a delete then matches nothing)."""
        self._allow(resource_type, READ)
        start = events.parse_position(after)
        if params:  # a bad search is refused now, not at the first event
            await self.store.count(resource_type, {**params, "_id": "-"})
        async for event in events.follow(self.tenant, start, frozenset({resource_type})):
            if keep is not None and not keep(event):
                continue
            if not await self._sees(resource_type, event, params):
                continue
            self.forget()
            yield events.public(event)

    async def position(self) -> int:
        """The tenant's last event position, for a caller that may read something."""
        if not self.principal.reads_anything:
            raise errors.FinGateError(errors.FORBIDDEN, "the change position needs a read scope")
        return await self.tenant.last_position()

    async def _sees(self, resource_type: str, event: Resource, params: dict[str, Any]) -> bool:
        id = event["id"]
        if resource_type in self.store.compartment:
            found = await self.store.get_by_type({resource_type: [f"{id}{HISTORY_PATH}{event['versionId']}"]})
            if not found:
                return False
        if not params:
            return True
        if event["interaction"] == "delete":
            return False
        given = params.get("_id")
        ids = [*(given if isinstance(given, list) else [given] if given else []), id]  # a list ANDs
        return await self.store.count(resource_type, {**params, "_id": ids}) > 0

    async def hook_status(self, id: str) -> dict[str, Any] | None:
        """A Subscription's delivery state; NOT_FOUND unless the caller can read the Subscription."""
        await self._subscription(id)
        return await Deliveries(self.tenant).state(self.principal.tenant, id)

    async def hook_attempts(self, id: str, count: int | None, path: Any = None) -> list[dict[str, Any]]:
        """A Subscription's delivery attempts, newest first; cut and noted as `search` is."""
        await self._subscription(id)
        deliveries, n = Deliveries(self.tenant), check_count(count)
        if n == 0:
            self.note(path, 0, await deliveries.attempt_count(self.principal.tenant, id))
            return []
        found = self._first(path, await deliveries.attempts(self.principal.tenant, id, n + 1), n)
        return [{**a, "when": instant(a["when"])} for a in found]

    async def hook_secret(self, id: str) -> str | None:
        """The secret a rest-hook Subscription's notifications are signed with (for its receiver): the caller must be
        allowed to update the Subscription; None when this server sends no rest-hooks."""
        self._allow("Subscription", UPDATE)
        await self._subscription(id)
        if self.webhook_secret is None:
            return None
        return notification.subscription_secret(self.webhook_secret, self.principal.tenant, id)

    async def _subscription(self, id: str) -> None:
        if await self.read("Subscription", id) is None:
            raise errors.not_found("Subscription", id)

    async def billing(self, resource: Resource) -> dict[str, Any]:
        """FinGate's billing view of a resource (app.billing), its settlement batched with the level's others."""
        return (await self.billing_many([resource]))[0]

    async def billing_many(self, resources: list[Resource]) -> list[dict[str, Any]]:
        """`billing` of each resource, in one await: what the compiled path runs for a whole level."""
        types = [r.get("resourceType") for r in resources]
        for t in set(types):
            for needed in _VIEW_READS.get(str(t), ()):
                self._allow_view(str(t), needed)
        # Contained resources have nothing of their own: nothing outside their container can point at them.
        targets = [
            f"{t}/{r.get('id')}" if t in _VIEW_READS and not r.get(_INSIDE) else None
            for t, r in zip(types, resources, strict=True)
        ]
        accounts = [t for t in targets if t is not None and t.startswith("Account/")]
        settled = [t for t in targets if t is not None and not t.startswith("Account/")]
        ledgers, settlements = await asyncio.gather(
            self._ledgers.load_many(accounts), self._settlements.load_many(settled)
        )
        found: dict[str, Any] = {
            **dict(zip(accounts, ledgers, strict=True)),
            **dict(zip(settled, settlements, strict=True)),
        }
        return [
            billing.view(str(t), r, found.get(target, billing.NO_SETTLEMENT) if target else billing.NO_SETTLEMENT)
            for t, r, target in zip(types, resources, targets, strict=True)
        ]

    async def party_billing(self, resource: Resource, as_of: date) -> dict[str, Any]:
        """A Patient's or Organization's outstanding and aging view; the level's parties read together."""
        for needed in ("Claim", "Invoice", "PaymentReconciliation"):
            self._allow_view(str(resource.get("resourceType")), needed)
        if resource.get(_INSIDE):
            return billing.party_view([], as_of)
        items = await self._open_items.load(f"{resource.get('resourceType')}/{resource.get('id')}")
        return billing.party_view(items, as_of)

    def note(self, path: Any, returned: int, total: int | None) -> None:
        """Record a list that stopped before all its matches (or answered `_count: 0`) for `extensions.truncated`."""
        self.truncated.append(
            (path, {"returned": returned, **({"more": True} if total == _MORE else {"total": total})})
        )

    def _first(self, path: Any, found: list[Any], n: int) -> list[Any]:
        """The first `n` of `found` (read as n + 1); when there were more, noted as cut."""
        if len(found) > n:
            self.note(path, n, _MORE)
        return found[:n]

    async def search(
        self,
        resource_type: str,
        params: dict[str, Any],
        count: int | None,
        offset: int | None,
        sort: str | None,
        path: Any = None,
    ) -> list[Resource]:
        """A List: one row past `_count` is read to tell whether more match (noted for `extensions.truncated`);
        `_count: 0` reads no rows and counts the matches instead (FHIR's "how many")."""
        self._allow(resource_type, READ)
        n, skip = check_count(count, paging=PAGE_A_SEARCH), check_offset(offset)
        if n == 0:
            self.note(path, 0, await self.store.count(resource_type, params))
            return []
        found = await self.store.search(
            resource_type, params, n + 1, skip, sort, elements=self._elements(resource_type)
        )
        found = self._first(path, found, n)
        return _link_all(found)

    async def connection(
        self, resource_type: str, params: dict[str, Any], count: int | None, cursor: str | None, sort: str | None
    ) -> dict[str, Any]:
        self._allow(resource_type, READ)
        size = None if count is None else check_count(count, paging=PAGE_A_SEARCH)  # alone, the cursor's page size
        page = await self.store.page(
            resource_type, params, size, cursor, sort, DEFAULT_COUNT, self._elements(resource_type)
        )
        _link_all([edge["resource"] for edge in page["edges"]])
        return page

    async def reverse(
        self,
        resource_type: str,
        param: str,
        target: str,
        params: dict[str, Any],
        count: int | None,
        offset: int | None,
        sort: str | None,
        path: Any = None,
    ) -> list[Resource]:
        """A reverse list: cut and noted as `search` is, its rows read with the level's other lists."""
        self._allow(resource_type, READ)
        count, offset = check_count(count, paging=PAGE_A_REVERSE), check_offset(offset)
        if offset + count > MAX_COUNT:
            raise errors.bad_input(
                f"_offset + _count must be at most {MAX_COUNT} on a reverse list, got {offset + count}: "
                f"page deeper with {resource_type}Connection(_reference: ...)",
                expression="_offset",
            )
        frozen = tuple(sorted((code, v if isinstance(v, str) else tuple(v)) for code, v in params.items()))
        found, total = await self._reverse.load((resource_type, param, frozen, sort, offset, count, target))
        if total is not None:
            self.note(path, len(found), total)
        return found

    async def reverse_connection(
        self, resource_type: str, param: str, target: str, count: int | None, cursor: str | None, sort: str | None
    ) -> dict[str, Any]:
        """The Connection of the `resource_type`s whose `param` points at `target`: the search `{param: target}`.
        Its first page is read with the level's others; a cursor pages that one search (and is checked to be it)."""
        self._allow(resource_type, READ)
        if cursor is not None:
            return await self.connection(resource_type, {param: target}, count, cursor, sort)
        return await self._reverse_pages.load((resource_type, param, sort or None, check_count(count), target))

    async def not_found(self, resource_type: str, id: str) -> errors.FinGateError:
        """The NOT_FOUND for a `read` that found nothing: it says so when the resource was deleted."""
        return errors.not_found(resource_type, id, await self._deleted.load((resource_type, id)))

    async def history(self, resource_type: str, id: str) -> list[Resource]:
        self._allow(resource_type, READ)
        versions = await self.store.history(resource_type, id, self._elements(resource_type))
        if not versions:
            raise errors.not_found(resource_type, id)
        return _link_all(versions)

    async def create(self, resource_type: str, resource: Resource, if_none_exist: str | None = None) -> Resource:
        self._allow(resource_type, CREATE)
        if if_none_exist is None:
            return _link_contained(await self._writer(CREATE).create(resource_type, resource))
        self._allow(resource_type, READ)  # a match is returned: the caller must be allowed to read it
        _, stored = await self._writer(CREATE).create_if_none_exist(resource_type, resource, if_none_exist)
        return _link_contained(stored)

    async def patch(self, resource_type: str, id: str, patch: Any, if_match: str | None) -> Resource:
        self._allow(resource_type, UPDATE)
        return _link_contained(await self._writer(UPDATE).patch(resource_type, id, patch, if_match))

    def _writer_for(self, resource_type: str, action: str) -> Writer:
        """A Bundle entry's writer, once the caller's scopes allow `action` on `resource_type`."""
        self._allow(resource_type, action)
        return self._writer(action)

    async def bundle(self, kind: str, entries: list[bundles.Entry]) -> list[dict[str, Any]]:
        """`transaction` or `batch` (app.bundles): each entry's outcome, as `BundleEntryOutcome` reads it."""
        if kind == "transaction":
            outcomes = await bundles.transaction(self.tenant, self._writer_for, entries)
        else:
            outcomes = await bundles.batch(self.tenant, self._writer_for, entries)
        for o in outcomes:
            if o.resource is not None:
                _link_contained(o.resource)
        return [bundle_outcome(o) for o in outcomes]

    async def update(self, resource_type: str, id: str, resource: Resource, if_match: str | None) -> Resource:
        self._allow(resource_type, UPDATE)
        return _link_contained(await self._writer(UPDATE).update(resource_type, id, resource, if_match))

    async def delete(self, resource_type: str, id: str) -> Resource:
        self._allow(resource_type, DELETE)
        return _link_contained(await self._writer(DELETE).delete(resource_type, id))

    async def payment_events(
        self,
        count: int | None,
        offset: int | None,
        outcome: str | None,
        event_type: str | None,
        event_id: str | None,
        path: Any = None,
    ) -> list[dict[str, Any]]:
        """The tenant's received payment-processor events, newest first; the audit log's admin scope. Cut and
        noted as `search` is."""
        if not self.principal.audit:
            message = f"payment events need the audit log's admin scope: system/{AUDIT_TYPE}.r (or system/*.r)"
            raise errors.FinGateError(
                errors.FORBIDDEN, message, issues=[errors.outcome_issue(message, code="forbidden")]
            )
        if outcome is not None and outcome not in OUTCOMES:
            raise errors.bad_input(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}", "outcome")
        n, skip = check_count(count, paging="use _offset"), check_offset(offset)
        events = self.tenant.received_events()
        if n == 0:
            self.note(path, 0, await events.count(outcome, event_type, event_id))
            return []
        records = await events.page(n + 1, skip, outcome, event_type, event_id)
        records = self._first(path, records, n)
        for record in records:
            record["receivedAt"] = instant(record["receivedAt"])
        return records

    async def audit_log(
        self, count: int | None, resource_type: str | None, id: str | None, path: Any = None
    ) -> list[dict[str, Any]]:
        """The tenant's audit records, newest first; needs a `system/AuditEvent.r` (or `system/*.r`) scope.
        Cut and noted as `search` is."""
        if not self.principal.audit:
            raise errors.FinGateError(
                errors.FORBIDDEN,
                f"the audit log needs a system/{AUDIT_TYPE}.r (or .read) scope",
                issues=[errors.outcome_issue(f"the audit log needs a system/{AUDIT_TYPE}.r scope", code="forbidden")],
            )
        n = check_count(count, paging="narrow it by type and id")
        if n == 0:
            self.note(path, 0, await self.store.audit_count(resource_type, id))
            return []
        records = await self.store.audit_log(n + 1, resource_type, id)
        records = self._first(path, records, n)
        for record in records:
            record["when"] = instant(record["when"])
        return records
