"""Create, update and delete: validate, apply the status rules, then one conditional store write."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jsonpatch
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_random_exponential

from app import errors, rules, validation
from app.fhir.decimals import plain
from app.fhir.values import Resource, now_instant
from app.store import Store, outbox
from app.store.search import compile_filter
from app.store.settlements import Settlement

DEFAULT_RULE_SEARCH_COUNT = 100
_SERVER_META = ("versionId", "lastUpdated")  # what the server sets on every version
_NUMBERS = (int, Decimal)
_AMOUNT_FIELDS = ("status", "total", "totalNet", "totalGross")  # what the balance rules read of a target


def _written(operation: str, resource_type: str, resource: Resource) -> dict[str, str]:
    """What a write would store, for an UNKNOWN_OUTCOME to name if its commit goes unconfirmed."""
    return {
        "operation": operation,
        "resourceType": resource_type,
        "id": resource["id"],
        "version": resource["meta"]["versionId"],
    }


def new_id() -> str:
    return uuid.uuid4().hex


def _with_meta(resource: Resource, version: int) -> Resource:
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = now_instant()
    return {**resource, "meta": meta}


def _same(a: Any, b: Any) -> bool:
    """The same FHIR JSON: numbers by their digits as shown (`1E+2` is `100`, `1.50` is not `1.5`),
    booleans never equal to numbers; key order does not matter."""
    if type(a) is dict:
        return type(b) is dict and a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if type(a) is list:
        return type(b) is list and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) in _NUMBERS and type(b) in _NUMBERS:
        return _digits(a) == _digits(b)
    return type(a) is type(b) and a == b


def _digits(number: int | Decimal) -> Any:
    """Sign, digits and exponent as plain notation shows them (no string built: the input may be `1e999999`)."""
    return plain(Decimal(number) if type(number) is int else number).as_tuple()  # type: ignore[arg-type]


def _content(resource: Resource) -> Resource:
    """What a client wrote: the resource without the server's `meta` fields (tags, profiles, security stay)."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in _SERVER_META}
    return {**{k: v for k, v in resource.items() if k != "meta"}, **({"meta": meta} if meta else {})}


def unchanged(old: Resource, new: Resource) -> bool:
    """`new` says what `old` says, apart from its version and time: writing it would make an empty version."""
    return _same(_content(old), _content(new))


class _RuleReads:
    """What the cross-resource rules may read: current resources, by ids (one command) or search; settlements.

    Bound to a write's transaction (`within`), the reads see its snapshot and every resource read by id is
    also guarded (written): a racing writer of that resource conflicts, so a rule cannot be decided on a
    state that another transaction is changing (a Claim cancelled while a payment allocating it activates).
    """

    FIELDS = ("status", "request")  # what the rules look at: statuses, and what a response answers

    def __init__(
        self,
        store: Store,
        allow_overpayment: bool = False,
        session: Any = None,
        statuses_before: Mapping[str, str | None] | None = None,
    ) -> None:
        self.store = store
        self.allow_overpayment = allow_overpayment
        self.session = session
        # `Type/id` -> status before a transaction wrote it: what the balance rules compare with, read after it.
        self.statuses_before = dict(statuses_before or {})

    def within(self, session: Any, statuses_before: Mapping[str, str | None] | None = None) -> _RuleReads:
        return _RuleReads(self.store, self.allow_overpayment, session, statuses_before)

    async def get_many(self, ids_by_type: Mapping[str, list[str]]) -> dict[tuple[str, str], Resource]:
        found = await self.store.get_by_type(dict(ids_by_type), fields=self.FIELDS, session=self.session)
        if self.session is not None and found:
            await self.store.guard(found, self.session)
        return found

    async def search(self, resource_type: str, params: dict[str, str]) -> list[Resource]:
        return await self.store.search(resource_type, params, count=DEFAULT_RULE_SEARCH_COUNT, session=self.session)

    async def referrers(
        self, resource_type: str, codes: list[str], ref: str, statuses: tuple[str, ...], count: int
    ) -> list[Resource]:
        return await self.store.referrers(resource_type, codes, ref, statuses, count, session=self.session)

    async def amounts(self, ids_by_type: Mapping[str, list[str]]) -> dict[tuple[str, str], Resource]:
        return await self.store.get_by_type(dict(ids_by_type), fields=_AMOUNT_FIELDS, session=self.session)

    async def settlements(self, targets: list[str]) -> dict[str, Settlement]:
        # In the write's transaction: what it (and, in a transaction Bundle, every entry) has written counts.
        return await self.store.settlements(targets, responses=False, session=self.session)


class Writer:
    """The one write path, shared by the GraphQL mutations and `fingate load`.

    Every write commits with its audit record (`actor` is the JWT `sub`) in one transaction.
    """

    def __init__(
        self,
        store: Store,
        actor: str = "system",
        request_id: str | None = None,
        client_request_id: str | None = None,
        allow_overpayment: bool = False,
    ) -> None:
        self.store = store
        # The rules guard the whole tenant's integrity: they read all of it, whatever compartment `store` is.
        self.reads = _RuleReads(store.for_tenant(store.tenant), allow_overpayment)
        self.actor = actor
        self.request_id = request_id
        self.client_request_id = client_request_id

    async def _audit(
        self, session: Any, operation: str, resource_type: str, resource: Resource, previous: Resource | None = None
    ) -> None:
        """The write's audit record and outbox event, in its transaction: no write without them, nor they without it."""
        await self.store.audit(self._audit_record(operation, resource_type, resource), session)
        await self.store.append_event(self._event(operation, resource_type, resource, previous), session)

    def _event(self, operation: str, resource_type: str, resource: Resource, previous: Resource | None) -> Resource:
        before = None if previous is None else previous.get("status")
        after = None if operation == "delete" else resource.get("status")
        return outbox.event(
            operation, resource_type, resource["id"], resource["meta"]["versionId"], before, after, self.request_id
        )

    def _audit_record(self, operation: str, resource_type: str, resource: Resource) -> Resource:
        record = {
            "sub": self.actor,
            "when": datetime.now(UTC),
            "operation": operation,
            "type": resource_type,
            "id": resource["id"],
            "version": resource["meta"]["versionId"],
            "requestId": self.request_id,  # this server's; the client's own, if it sent one, beside it
        }
        if self.client_request_id:
            record["clientRequestId"] = self.client_request_id
        return record

    async def create(
        self,
        resource_type: str,
        resource: Resource,
        *,
        keep_id: bool = False,
        session: Any = None,
        reads: Any = None,
        part: str = rules.ALL,
    ) -> Resource:
        """Store a new resource as version 1; the server assigns the id unless `keep_id` (loads).

        `session` joins an outer transaction (a transaction Bundle); `reads` then also sees its pending entries,
        and `part` says which cross-resource rules run here (app.bundles runs the others after every entry).
        """
        resource = validation.validate(resource_type, resource)
        rules.check_create(resource_type, resource)
        rules.check_document(resource_type, resource, None)
        if not (keep_id and resource.get("id")):
            resource["id"] = new_id()
        resource = _with_meta(resource, 1)
        async with self.store.joined(session, _written("create", resource_type, resource)) as tx:
            await rules.check_references(resource_type, resource, None, reads or self.reads.within(tx), part)
            stored = await self.store.insert(resource_type, resource, tx)
            await self._audit(tx, "create", resource_type, stored)
        return stored

    async def create_if_none_exist(
        self,
        resource_type: str,
        resource: Resource,
        criteria: str,
        *,
        session: Any = None,
        reads: Any = None,
        part: str = rules.ALL,
    ) -> tuple[bool, Resource]:
        """FHIR's conditional create: (True, created) when nothing matches `criteria` (a search string),
        (False, the match) unchanged when one does, PRECONDITION_FAILED when several do.

        The search, a write of the criteria's own document (`Store.claim_criteria`) and the create share one
        transaction, so of two racing creates on the same criteria one conflicts; on its own (no `session`)
        the loser starts again, finds the winner's resource and returns it.
        """
        _, canonical = search_criteria(resource_type, criteria)

        async def attempt() -> tuple[bool, Resource]:
            async with self.store.joined(session) as tx:
                found = await self.find_match(resource_type, criteria, tx)
                if found is not None:
                    return False, found
                await self.store.claim_criteria(resource_type, canonical, tx)
                return True, await self.create(resource_type, dict(resource), session=tx, reads=reads, part=part)

        if session is not None:  # inside a caller's transaction: its CONFLICT is the caller's to report
            return await attempt()
        async for retrying in racing():
            with retrying:
                outcome = await attempt()
        return outcome

    async def find_match(self, resource_type: str, criteria: str, session: Any = None) -> Resource | None:
        """The one resource in this view matching `criteria` (ifNoneExist), None; PRECONDITION_FAILED for several."""
        params, _ = search_criteria(resource_type, criteria)
        found = await self.store.search(resource_type, params, count=2, session=session)
        if len(found) > 1:
            raise multiple_matches(resource_type, criteria)
        return found[0] if found else None

    @staticmethod
    def prepare(entries: list[tuple[str, Resource]]) -> list[Resource | errors.FinGateError]:
        """What `create_many` checks of each (type, resource) before its transaction, in order: validation, the
        status a new resource may start in, the document's own amounts; each as the resource to store (a copy) or
        its error. It reads nothing, so it may run any time before (a load checks its next chunk while one is written)."""
        out: list[Resource | errors.FinGateError] = []
        for resource_type, resource in entries:
            try:
                checked = validation.validate(resource_type, resource)
                rules.check_create(resource_type, checked)
                rules.check_document(resource_type, checked, None)
            except errors.FinGateError as exc:
                out.append(exc)
                continue
            out.append(checked)
        return out

    async def create_many(
        self,
        entries: list[tuple[str, Resource]],
        reads: Callable[[Any, dict[tuple[str, str], Resource], list[tuple[str, Resource]]], Awaitable[Any]],
        prepared: list[Resource | errors.FinGateError] | None = None,
    ) -> list[Resource | errors.FinGateError]:
        """`create(..., keep_id=True)` of each (type, resource), committed together in ONE transaction (a load's
        chunk). Each is validated and checked by the same rules, in order: `reads(tx, pending, valid)` gives the
        rules' reads, which must also see `pending`, the entries accepted before (`valid`: the entries that passed
        validation, whose rule reads it may make at once). One refused is returned as its error
        and left out; the others are stored with their history and audit records, a command per collection.
        An error of the transaction itself (a taken id, a conflict, an outage) is raised: nothing was stored.
        `prepared`: `prepare(entries)`, when the caller has it already (worked out while another chunk was written)."""
        out: list[Resource | errors.FinGateError] = []
        for checked in self.prepare(entries) if prepared is None else prepared:
            if isinstance(checked, errors.FinGateError):
                out.append(checked)
                continue
            if not checked.get("id"):
                checked["id"] = new_id()
            out.append(_with_meta(checked, 1))
        if all(isinstance(r, errors.FinGateError) for r in out):
            return out
        pending: dict[tuple[str, str], Resource] = {}
        async with self.store.transaction({"operation": "create", "resources": str(len(out))}) as tx:
            valid = [(t, r) for (t, _), r in zip(entries, out, strict=True) if not isinstance(r, errors.FinGateError)]
            rule_reads = await reads(tx, pending, valid)
            kept = []
            for n, ((resource_type, _), result) in enumerate(list(zip(entries, out, strict=True))):
                if isinstance(result, errors.FinGateError):
                    continue
                try:
                    await rules.check_references(resource_type, result, None, rule_reads)
                except errors.FinGateError as exc:
                    out[n] = exc
                    continue
                pending[(resource_type, result["id"])] = result
                kept.append((resource_type, result))
            if kept:
                await self.store.insert_many(kept, tx)
                await self.store.audit_many([self._audit_record("create", t, r) for t, r in kept], tx)
                await self.store.append_events([self._event("create", t, r, None) for t, r in kept], tx)
        return out

    async def update(
        self,
        resource_type: str,
        id: str,
        resource: Resource,
        if_match: str | None = None,
        *,
        session: Any = None,
        reads: Any = None,
        part: str = rules.ALL,
    ) -> Resource:
        old = await self._current(resource_type, id, session)
        return await self._update(resource_type, old, resource, if_match, session=session, reads=reads, part=part)

    async def patch(
        self,
        resource_type: str,
        id: str,
        operations: Any,
        if_match: str | None = None,
        *,
        session: Any = None,
        reads: Any = None,
        part: str = rules.ALL,
    ) -> Resource:
        """Apply a JSON Patch (RFC 6902, the `jsonpatch` library) to the current version, then write the result
        exactly as an update: validated, rule-checked, versioned, audited (or unchanged: no version)."""
        old = await self._current(resource_type, id, session)
        self._check_version(resource_type, old, if_match)
        patched = apply_patch(resource_type, old, operations)
        return await self._update(resource_type, old, patched, if_match, session=session, reads=reads, part=part)

    @staticmethod
    def _check_version(resource_type: str, old: Resource, if_match: str | None) -> None:
        version = old["meta"]["versionId"]
        if if_match is not None and if_match != version:
            raise errors.FinGateError(
                errors.CONFLICT,
                f"{resource_type}/{old['id']} is at version {version}, not {if_match}: read it again and retry",
                extensions={"currentVersion": version},
            )

    async def _update(
        self,
        resource_type: str,
        old: Resource,
        resource: Resource,
        if_match: str | None,
        *,
        session: Any,
        reads: Any,
        part: str = rules.ALL,
    ) -> Resource:
        id = old["id"]
        version = old["meta"]["versionId"]
        self._check_version(resource_type, old, if_match)
        if resource.get("id") not in (None, id):
            raise errors.bad_input(
                f"id {resource['id']!r} in the resource does not match the id argument {id!r}", f"{resource_type}.id"
            )
        resource = validation.validate(resource_type, {**resource, "id": id})
        if unchanged(old, resource):  # nothing to version, nothing to audit: the current version stands
            return old
        rules.check_update(resource_type, old, resource)
        rules.check_document(resource_type, resource, old)
        new = _with_meta(resource, int(version) + 1)
        async with self.store.joined(session, _written("update", resource_type, new)) as tx:
            await rules.check_references(resource_type, resource, old, reads or self.reads.within(tx), part)
            stored = await self.store.replace(resource_type, new, version, old.get("status"), tx)
            await self._audit(tx, "update", resource_type, stored, old)
        return stored

    async def delete(
        self,
        resource_type: str,
        id: str,
        if_match: str | None = None,
        *,
        session: Any = None,
        reads: Any = None,
        part: str = rules.ALL,
    ) -> Resource:
        """Remove a draft (its history stays); with `part` DEFERRED the check that nothing in force references it
        is left to the caller (app.bundles runs it after every entry)."""
        old = await self._current(resource_type, id, session)
        self._check_version(resource_type, old, if_match)
        rules.check_delete(resource_type, old)
        async with self.store.joined(session, _written("delete", resource_type, old)) as tx:
            if part != rules.DEFERRED:
                await rules.check_delete_references(resource_type, old, reads or self.reads.within(tx))
            await self.store.delete(resource_type, id, old["meta"]["versionId"], old.get("status"), tx)
            await self._audit(tx, "delete", resource_type, old, old)
        return old

    async def put(
        self,
        resource_type: str,
        resource: Resource,
        if_match: str | None = None,
        *,
        session: Any = None,
        reads: Any = None,
        part: str = rules.ALL,
    ) -> tuple[str, Resource]:
        """Update-as-create (FHIR PUT, loads): keep the resource's id; ('created'|'updated'|'unchanged', stored).
        `if_match` on an id that does not exist is a CONFLICT (there is no such version)."""
        id = resource.get("id")
        old = await self.store.get(resource_type, id, session) if id else None
        if old is None:
            if if_match is not None:
                raise errors.FinGateError(
                    errors.CONFLICT, f"{resource_type}/{id} does not exist, so it is not at version {if_match}"
                )
            created = await self.create(resource_type, resource, keep_id=True, session=session, reads=reads, part=part)
            return "created", created
        self._check_version(resource_type, old, if_match)
        # Identical to what is stored (which was valid when stored): nothing to validate or write.
        if unchanged(old, {"resourceType": resource_type, **resource}):
            return "unchanged", old
        stored = await self._update(resource_type, old, resource, None, session=session, reads=reads, part=part)
        return ("unchanged" if stored is old else "updated"), stored

    async def _current(self, resource_type: str, id: str, session: Any = None) -> Resource:
        old = await self.store.get(resource_type, id, session)
        if old is None:
            deleted = await self.store.deleted(resource_type, [id])
            raise errors.not_found(resource_type, id, deleted.get(id))
        return old


CONDITIONAL_RETRY_SECONDS = 10.0  # how long a conditional create that lost a race starts again


def _lost_race(exc: BaseException) -> bool:
    return isinstance(exc, errors.FinGateError) and exc.code == errors.CONFLICT


def racing() -> AsyncRetrying:
    """Retries of a conditional create that lost a race (a CONFLICT): each starts again, finds the winner's
    resource and returns it. The losers are spread out so the winner commits before they search again."""
    return AsyncRetrying(
        retry=retry_if_exception(_lost_race),
        stop=stop_after_delay(CONDITIONAL_RETRY_SECONDS),
        wait=wait_random_exponential(multiplier=0.01, max=0.2),
        reraise=True,
    )


_PROTECTED = ("/id", "/meta", "/resourceType")  # what a patch may not touch: the server's


def multiple_matches(resource_type: str, criteria: str) -> errors.FinGateError:
    message = (
        f"ifNoneExist {criteria!r} matches more than one {resource_type}: "
        "make the criteria select one (an identifier), or create without it"
    )
    return errors.FinGateError(
        errors.PRECONDITION_FAILED,
        message,
        issues=[errors.outcome_issue(message, "ifNoneExist", code="multiple-matches")],
    )


def search_criteria(resource_type: str, criteria: str) -> tuple[dict[str, Any], str]:
    """A FHIR search string (`identifier=http://x|123&status=active`) as search params (a repeated parameter
    ANDs, as in `TList`), checked against `resource_type`'s parameters, and its canonical text."""
    text = criteria.strip()
    if text.startswith(f"{resource_type}?"):
        text = text[len(resource_type) + 1 :]
    text = text.removeprefix("?")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        pairs = []
    if not pairs:
        raise errors.bad_input(
            f"ifNoneExist must be a search string such as 'identifier=http://example.org|123', got {criteria!r}",
            "ifNoneExist",
        )
    params: dict[str, Any] = {}
    for code, value in pairs:
        params.setdefault(code, []).append(value)
    try:
        compile_filter(resource_type, {k: v for k, v in params.items() if k != "_filter" and ":" not in k})
    except errors.FinGateError as exc:
        raise errors.bad_input(f"ifNoneExist: {exc.message}", "ifNoneExist") from None
    return params, urlencode(sorted(pairs))


def apply_patch(resource_type: str, current: Resource, operations: Any) -> Resource:
    """`operations` (a JSON Patch) applied to `current`, op by op so a failure names its index; `id`, `meta`
    and `resourceType` are the server's and may not be patched."""
    if not isinstance(operations, list) or not operations:
        raise errors.bad_input("patch must be a non-empty JSON Patch: a list of operations (RFC 6902)", "patch")
    doc = current
    for i, op in enumerate(operations):
        where = f"patch[{i}]"
        if not isinstance(op, dict):
            raise errors.bad_input(f"{where} is not a JSON Patch operation object", where)
        for pointer in (op.get("path"), op.get("from")):
            if isinstance(pointer, str) and any(pointer == p or pointer.startswith(p + "/") for p in _PROTECTED):
                raise errors.bad_input(
                    f"{where} ({op.get('op')} {pointer}): id, meta and resourceType are set by the server and"
                    " cannot be patched",
                    where,
                )
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise errors.bad_input(f"{where}: test failed: {exc}", where) from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, TypeError) as exc:
            raise errors.bad_input(
                f"{where} ({op.get('op')} {op.get('path')}) cannot be applied: {exc}", where
            ) from None
    if not isinstance(doc, dict) or doc.get("resourceType") != resource_type:
        raise errors.bad_input(f"patch must leave a {resource_type} resource", "patch")
    return doc
