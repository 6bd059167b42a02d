"""The per-request context resolvers receive as `info.context`: the only door to data."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from strawberry.dataloader import DataLoader

from app import billing, errors
from app.auth import AUDIT_TYPE, CREATE, DELETE, READ, UPDATE, Principal
from app.fhir.references import local_version
from app.fhir.values import Resource, instant
from app.graphql.limits import DEFAULT_COUNT, MAX_COUNT
from app.graphql.projection import ALWAYS
from app.store import Store
from app.writes import Writer

_CONTAINED = "__contained__"  # never a GraphQL field name, so it cannot leak into a response
_INSIDE = "__inside__"  # marks a contained resource: nothing outside its container can point at it
# What a type's billing view reads besides the resource itself (the caller must be allowed to read it).
_VIEW_READS = {
    "Account": ("Invoice", "PaymentReconciliation"),
    "Claim": ("PaymentReconciliation", "ClaimResponse"),
    "Invoice": ("PaymentReconciliation",),
}


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
    ) -> None:
        self.principal = principal
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

    async def _load_resources(self, keys: list[tuple[str, str]]) -> list[Resource | None]:
        await self._fetch(keys)
        found = self._found
        return [found[key] for key in keys]

    async def _fetch(self, keys: list[tuple[str, str]]) -> None:
        """Reads, in one command, those of `keys` not read yet in this request (absent ones are kept as None)."""
        found = self._found
        by_type: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            if key not in found:
                by_type[key[0]].append(key[1])
        if not by_type:
            return
        read = await self.store.get_by_type(by_type, projections=self._projections(by_type))
        for resource in read.values():
            if "contained" in resource:
                _link_contained(resource)
        found.update(read)
        for rtype, ids in by_type.items():
            for id in ids:
                found.setdefault((rtype, id), None)

    def _projections(self, types: Iterable[str]) -> dict[str, frozenset[str] | None] | None:
        """The elements to read of each of `types`: what the operation selects of it (only `ALWAYS` when it selects
        nothing of it: a reference to it is resolved for its type alone); None: whole resources."""
        selected = self.selected
        if selected is None:
            return None
        return {t: selected.get(t, ALWAYS) for t in types}

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
            found = await self.store.referencing(rtype, code, targets[shape], _params(params), sort, limits[shape])
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
        await self._fetch([key for key in keys if key is not None])
        found = self._found
        # No key: a contained target (linked when the resource was read), or a reference outside this server.
        return [found[key] if key is not None else r.get(_CONTAINED) for r, key in zip(references, keys, strict=True)]

    async def billing(self, resource: Resource) -> dict[str, Any]:
        """FinGate's billing view of a resource (app.billing), its settlement batched with the level's others."""
        return (await self.billing_many([resource]))[0]

    async def billing_many(self, resources: list[Resource]) -> list[dict[str, Any]]:
        """`billing` of each resource, in one await: what the compiled path runs for a whole level."""
        types = [r.get("resourceType") for r in resources]
        for needed in {n for t in types for n in _VIEW_READS.get(str(t), ())}:
            self._allow(needed, READ)
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
            self._allow(needed, READ)
        if resource.get(_INSIDE):
            return billing.party_view([], as_of)
        items = await self._open_items.load(f"{resource.get('resourceType')}/{resource.get('id')}")
        return billing.party_view(items, as_of)

    def _note(self, path: Any, returned: int, total: int | None) -> None:
        """Record a list that stopped before all its matches (or answered `_count: 0`) for `extensions.truncated`."""
        self.truncated.append(
            (path, {"returned": returned, **({"more": True} if total == _MORE else {"total": total})})
        )

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
            self._note(path, 0, await self.store.count(resource_type, params))
            return []
        projection = self._projections((resource_type,))
        found = await self.store.search(
            resource_type, params, n + 1, skip, sort, elements=projection and projection[resource_type]
        )
        if len(found) > n:
            found = found[:n]
            self._note(path, n, _MORE)
        return _link_all(found)

    async def connection(
        self, resource_type: str, params: dict[str, Any], count: int | None, cursor: str | None, sort: str | None
    ) -> dict[str, Any]:
        self._allow(resource_type, READ)
        size = None if count is None else check_count(count, paging=PAGE_A_SEARCH)  # alone, the cursor's page size
        page = await self.store.page(resource_type, params, size, cursor, sort, DEFAULT_COUNT)
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
            self._note(path, len(found), total)
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
        versions = await self.store.history(resource_type, id)
        if not versions:
            raise errors.not_found(resource_type, id)
        return _link_all(versions)

    async def create(self, resource_type: str, resource: Resource) -> Resource:
        self._allow(resource_type, CREATE)
        return _link_contained(await self._writer(CREATE).create(resource_type, resource))

    async def update(self, resource_type: str, id: str, resource: Resource, if_match: str | None) -> Resource:
        self._allow(resource_type, UPDATE)
        return _link_contained(await self._writer(UPDATE).update(resource_type, id, resource, if_match))

    async def delete(self, resource_type: str, id: str) -> Resource:
        self._allow(resource_type, DELETE)
        return _link_contained(await self._writer(DELETE).delete(resource_type, id))

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
            self._note(path, 0, await self.store.audit_count(resource_type, id))
            return []
        records = await self.store.audit_log(n + 1, resource_type, id)
        if len(records) > n:
            records = records[:n]
            self._note(path, n, _MORE)
        for record in records:
            record["when"] = instant(record["when"])
        return records
