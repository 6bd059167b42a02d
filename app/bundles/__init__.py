"""Transaction and batch Bundles: FHIR entries (POST, PUT, PATCH, DELETE) through the one write path; a transaction all or nothing."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app import errors, rules
from app.fhir.model import SERVED
from app.fhir.values import Resource
from app.store import Store
from app.writes import Writer, new_id, racing, search_criteria

# Referenced before referencing, so a Bundle's creates meet what they point at (Organizations and Patients
# before Claims, Claims before ClaimResponses, both before the PaymentReconciliations that settle them).
LOAD_ORDER: tuple[str, ...] = (
    "Organization",
    "Location",
    "Practitioner",
    "Patient",
    "RelatedPerson",
    "PractitionerRole",
    "Encounter",
    "InsurancePlan",
    "Coverage",
    "Account",
    "Contract",
    "Task",
    "ChargeItem",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "Claim",
    "ClaimResponse",
    "ExplanationOfBenefit",
    "Invoice",
    "PaymentNotice",
    "PaymentReconciliation",
)
RANK = {t: i for i, t in enumerate(LOAD_ORDER)}

POST, PUT, PATCH, DELETE = "POST", "PUT", "PATCH", "DELETE"
# FHIR's transaction processing order (http.html#trules): deletes, then creates, then updates and patches.
_PHASE = {DELETE: 0, POST: 1, PUT: 2, PATCH: 2}
# The scope each method needs (a PUT that creates needs `create` as well: `Writer.put`'s caller checks it).
ACTIONS = {POST: "create", PUT: "update", PATCH: "update", DELETE: "delete"}
STATUS = {
    "created": "201 Created",
    "updated": "200 OK",
    "unchanged": "200 OK",
    "matched": "200 OK",
    "deleted": "204 No Content",
}
URN = "urn:uuid:"
_ETAG = re.compile(r'^(?:W/)?"([^"]+)"$')

WriterFor = Callable[[str, str], Writer]
"""(resource type, action) -> the Writer that may do it (FORBIDDEN when the caller's scopes do not allow it)."""


@dataclass
class Entry:
    """One Bundle entry: `request.method`, `request.url`, `request.ifMatch`, `request.ifNoneExist`, `fullUrl`,
    `resource` (for PATCH, the JSON Patch operations)."""

    method: str
    url: str
    resource: Any = None
    full_url: str | None = None
    if_match: str | None = None
    if_none_exist: str | None = None


@dataclass
class Outcome:
    """What one entry did: `action` created, updated, unchanged, matched (a conditional create's match) or
    deleted, with the resource as it now is (as it was, for a delete); or, in a batch, the `error`."""

    index: int
    full_url: str | None = None
    action: str | None = None
    resource_type: str | None = None
    id: str | None = None
    version: str | None = None
    resource: Resource | None = None
    error: errors.FinGateError | None = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return _ERROR_STATUS.get(self.error.code, "400 Bad Request")
        return STATUS[self.action or "updated"]

    @property
    def location(self) -> str | None:
        if self.id is None or self.action == "deleted":
            return None
        return f"{self.resource_type}/{self.id}/_history/{self.version}"


_ERROR_STATUS = {
    errors.NOT_FOUND: "404 Not Found",
    errors.CONFLICT: "409 Conflict",
    errors.FORBIDDEN: "403 Forbidden",
    errors.PRECONDITION_FAILED: "412 Precondition Failed",
    errors.STATUS_RULE: "422 Unprocessable Entity",
    errors.UNAVAILABLE: "503 Service Unavailable",
}


@dataclass
class _Planned:
    index: int
    entry: Entry
    resource_type: str
    id: str | None = None  # PUT, PATCH, DELETE: the target; POST: the id it will get
    matched: Resource | None = None  # a conditional create's (or update's) existing match
    resource: Any = None
    criteria: str | None = None  # a conditional create's `ifNoneExist`, or a conditional update's `Type?criteria`

    @property
    def conditional(self) -> bool:
        return self.criteria is not None


@dataclass
class _Touched:
    """A resource a transaction writes: as it was before (None: new), as it is after (None: deleted)."""

    before: Resource | None
    after: Resource | None
    index: int
    writer: Writer = field(repr=False)


def _entry_expression(index: int, expression: str) -> str:
    """An issue's expression within the Bundle: the entry's own elements get its path; a resource's stay."""
    if expression == "ifNoneExist":
        expression = "request.ifNoneExist"
    elif expression.startswith("patch"):
        expression = "resource" + expression[len("patch") :]
    if expression.startswith(("request.", "resource", "fullUrl")):
        return f"Bundle.entry[{index}].{expression}"
    return expression


def _at(index: int, exc: errors.FinGateError) -> errors.FinGateError:
    """`exc` as entry `index`'s: the message, the OperationOutcome's expressions and `extensions.entry` say which."""
    issues = [
        {**issue, "expression": [_entry_expression(index, e) for e in issue["expression"]]}
        if issue.get("expression")
        else issue
        for issue in exc.issues or []
    ]
    return errors.FinGateError(
        exc.code, f"entry[{index}]: {exc.message}", issues=issues or None, extensions={**exc.extra, "entry": index}
    )


def _bad(message: str, element: str) -> errors.FinGateError:
    return errors.bad_input(message, element)


def _version(if_match: str | None) -> str | None:
    """`ifMatch` as a version: `1`, or FHIR's weak ETag `W/"1"`."""
    if if_match is None:
        return None
    found = _ETAG.match(if_match.strip())
    return found.group(1) if found else if_match.strip()


def rewrite(node: Any, ids: dict[str, str]) -> Any:
    """Replace `urn:uuid:` references by the `Type/id` of the entry whose fullUrl they name."""
    if isinstance(node, dict):
        out = {k: rewrite(v, ids) for k, v in node.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in ids:
            out["reference"] = ids[ref]
        return out
    if isinstance(node, list):
        return [rewrite(v, ids) for v in node]
    return node


def _target(url: str, ids: dict[str, str]) -> tuple[str, str]:
    """The `Type/id` of a PUT, PATCH or DELETE url (a `urn:uuid:` of another entry's fullUrl included)."""
    url = ids.get(url, url)
    parts = url.strip("/").split("/")
    if len(parts) == 2 and parts[1].startswith(URN):
        named = ids.get(parts[1])
        if named is None or named.split("/")[0] != parts[0]:
            raise _bad(f"request.url {url!r} names no {parts[0]} entry of this Bundle by its fullUrl", "request.url")
        parts = named.split("/")
    if url.startswith(URN):
        raise _bad(f"request.url {url!r} is the fullUrl of no entry of this Bundle", "request.url")
    if len(parts) != 2 or not parts[1] or "?" in url:
        raise _bad(
            f"request.url must be Type/id here (conditional deletes are not served; a PUT may take Type?criteria),"
            f" got {url!r}",
            "request.url",
        )
    return parts[0], parts[1]


def _plan(index: int, entry: Entry) -> _Planned:
    try:
        return _planned(index, entry)
    except errors.FinGateError as exc:
        raise _at(index, exc) from None


def _planned(index: int, entry: Entry) -> _Planned:
    method = entry.method.upper()
    if method not in _PHASE:
        raise _bad(f"request.method must be POST, PUT, PATCH or DELETE, got {entry.method!r}", "request.method")
    entry.method = method
    url = entry.url.strip().strip("/")
    criteria = entry.if_none_exist
    if method == POST:
        resource_type = url.split("?", 1)[0]
    elif method == PUT and "?" in url and not url.startswith(URN):  # a conditional update: Type?criteria
        resource_type, criteria = url.split("?", 1)
        if "/" in resource_type or not criteria:
            raise _bad(f"a conditional update's request.url is Type?criteria, got {entry.url!r}", "request.url")
    else:
        resource_type = url.split("/", 1)[0] if not url.startswith(URN) else ""
    resource = entry.resource
    if method in (POST, PUT):
        if not isinstance(resource, dict):
            raise _bad(f"a {method} entry needs a resource (a JSON object)", "resource")
        given = resource.get("resourceType")
        resource_type = resource_type or str(given)
        if given not in (None, resource_type):
            raise _bad(f"resource.resourceType {given!r} does not match request.url {entry.url!r}", "resource")
        resource = {"resourceType": resource_type, **resource}
    if method == PATCH and not isinstance(resource, list):
        raise _bad("a PATCH entry's resource is the JSON Patch: a list of operations", "resource")
    if entry.if_none_exist is not None and method != POST:
        raise _bad("ifNoneExist belongs to a POST (conditional create)", "request.ifNoneExist")
    if resource_type and resource_type not in SERVED:
        raise _bad(f"{resource_type!r} is not a resource type FinGate serves", "request.url")
    return _Planned(index, entry, resource_type, resource=resource, criteria=criteria)


def _created_or_matched_id(p: _Planned) -> str:
    """A POST's id (its conditional match's, else a new one), or a conditional update's target: its match (the
    resource may name no other id), else a new resource, with the resource's id if it gives one."""
    if p.entry.method == POST:
        return str(p.matched["id"]) if p.matched is not None else new_id()
    given = p.resource.get("id") if isinstance(p.resource, dict) else None
    if p.matched is not None:
        if given not in (None, p.matched["id"]):
            raise _at(
                p.index,
                _bad(f"resource.id {given!r} is not the id of what {p.entry.url!r} matches", "resource.id"),
            )
        return str(p.matched["id"])
    return str(given) if given else new_id()


def _ids(planned: Sequence[_Planned]) -> dict[str, str]:
    """fullUrl (`urn:uuid:`) -> `Type/id` of every entry that names its resource, POSTs getting their ids now."""
    ids: dict[str, str] = {}
    for p in planned:
        if p.entry.method == POST or (p.entry.method == PUT and p.conditional):
            p.id = _created_or_matched_id(p)
        elif p.entry.method == PUT and isinstance(p.resource, dict) and p.resource.get("id"):
            p.id = str(p.resource["id"])
        full_url = p.entry.full_url
        if full_url and full_url.startswith(URN) and p.id and p.resource_type:
            ids[full_url] = f"{p.resource_type}/{p.id}"
    return ids


async def transaction(store: Store, writer_for: WriterFor, entries: Sequence[Entry]) -> list[Outcome]:
    """Every entry or none, in one database transaction, in FHIR's order (deletes, creates, then updates and
    patches; creates in reference order). Each write is validated and held to the lifecycle as it is made; the
    cross-resource rules, balances included, are checked once per resource written, against the state after
    every entry (a Claim created and activated, a ClaimResponse to it, a payment settling it, in one Bundle).
    The first failure is the error, naming its entry (`extensions.entry`); nothing is stored."""
    planned = [_plan(i, e) for i, e in enumerate(entries)]
    order = sorted(
        planned,
        key=lambda p: (
            _PHASE[p.entry.method],
            RANK.get(p.resource_type, len(RANK)) if p.entry.method == POST else 0,
            p.index,
        ),
    )
    outcomes: dict[int, Outcome] = {}
    touched: dict[tuple[str, str], _Touched] = {}
    async with store.transaction() as tx:
        for p in planned:  # conditional creates are decided first: their urn:uuid may name what already exists
            await _decide(p, writer_for, tx)
        ids = _ids(planned)
        for p in order:
            try:
                await _apply(p, ids, writer_for, tx, outcomes, touched)
            except errors.FinGateError as exc:
                raise _at(p.index, exc) from None
        await _check_final(touched, tx)
    return [outcomes[i] for i in range(len(planned))]


async def _check_final(touched: dict[tuple[str, str], _Touched], tx: Any) -> None:
    """The cross-resource rules of every resource written, each from its state before the transaction to its
    state after it, reading the database as every entry left it."""
    before = {f"{t}/{id}": w.before.get("status") for (t, id), w in touched.items() if w.before is not None}
    for (rtype, _), t in touched.items():
        reads = t.writer.reads.within(tx, before)
        try:
            if t.after is None and t.before is not None:
                await rules.check_delete_references(rtype, t.before, reads)
            elif t.after is not None and t.after is not t.before:
                await rules.check_references(rtype, t.after, t.before, reads, rules.FINAL)
        except errors.FinGateError as exc:
            raise _at(t.index, exc) from None


async def _apply(
    p: _Planned,
    ids: dict[str, str],
    writer_for: WriterFor,
    tx: Any,
    outcomes: dict[int, Outcome],
    touched: dict[tuple[str, str], _Touched],
) -> None:
    entry = p.entry
    method = entry.method
    if method != POST and not p.conditional:
        p.resource_type, p.id = _target(entry.url.strip().strip("/"), ids)
        if p.resource_type not in SERVED:
            raise _bad(f"{p.resource_type!r} is not a resource type FinGate serves", "request.url")
    writer = writer_for(p.resource_type, ACTIONS[method])
    key = (p.resource_type, str(p.id))
    if key not in touched:
        before = None if method == POST else await writer.store.get(p.resource_type, str(p.id), tx)
        touched[key] = _Touched(before, before, p.index, writer)
    resource = rewrite(p.resource, ids)
    version = _version(entry.if_match)
    stored: Resource
    if method == POST and p.matched is not None:
        action, stored = "matched", p.matched
    elif method == POST:
        if p.conditional:
            await _claim(writer, p, tx)
        resource = {**resource, "id": p.id}
        stored = await writer.create(p.resource_type, resource, keep_id=True, session=tx, part=rules.DEFERRED)
        action = "created"
    elif method == PUT:
        if resource.get("id") not in (None, p.id):
            raise _bad(f"resource.id {resource.get('id')!r} does not match request.url {entry.url!r}", "resource.id")
        if touched[key].before is None and touched[key].after is None:
            writer_for(p.resource_type, "create")
            if p.conditional:  # a conditional update that creates: as a conditional create, once however raced
                await _claim(writer, p, tx)
        action, stored = await writer.put(
            p.resource_type, {**resource, "id": p.id}, version, session=tx, part=rules.DEFERRED
        )
    elif method == PATCH:
        current = touched[key].after
        stored = await writer.patch(p.resource_type, str(p.id), resource, version, session=tx, part=rules.DEFERRED)
        same = current is not None and stored["meta"]["versionId"] == current["meta"]["versionId"]
        action = "unchanged" if same else "updated"
    else:
        stored = await writer.delete(p.resource_type, str(p.id), version, session=tx, part=rules.DEFERRED)
        action = "deleted"
    touched[key].after = None if action == "deleted" else stored
    touched[key].index = p.index
    outcomes[p.index] = Outcome(
        p.index, entry.full_url, action, p.resource_type, stored["id"], stored["meta"]["versionId"], stored
    )


async def _claim(writer: Writer, p: _Planned, tx: Any) -> None:
    """The criteria document of a conditional write that creates (app.store `claim_criteria`): of two racing
    ones, one commits and the other starts again and finds the winner's resource."""
    assert p.criteria is not None
    _, canonical = search_criteria(p.resource_type, p.criteria)
    await writer.store.claim_criteria(p.resource_type, canonical, tx)


async def batch(store: Store, writer_for: WriterFor, entries: Sequence[Entry]) -> list[Outcome]:
    """Each entry on its own, in the order given, as a transaction of one entry (the same checks); a failure is
    that entry's outcome. A conditional create that loses a race starts again, as `TCreate`'s does."""
    outcomes: dict[int, Outcome] = {}
    planned: list[_Planned] = []
    for i, e in enumerate(entries):
        try:
            planned.append(_plan(i, e))
        except errors.FinGateError as exc:
            outcomes[i] = Outcome(i, e.full_url, error=exc)  # already the entry's (`_plan`)
    ids = _ids([p for p in planned if not p.conditional])
    for p in planned:
        try:
            outcomes[p.index] = await _alone(store, p, ids, writer_for)
        except errors.FinGateError as exc:  # an entry's, or its commit's (a conflict, an outage)
            outcomes[p.index] = Outcome(
                p.index, p.entry.full_url, error=exc if "entry" in exc.extra else _at(p.index, exc)
            )
        found = outcomes[p.index]
        if found.error is None and p.entry.full_url and p.entry.full_url.startswith(URN):
            ids[p.entry.full_url] = f"{found.resource_type}/{found.id}"
    return [outcomes[i] for i in range(len(entries))]


async def _decide(p: _Planned, writer_for: WriterFor, tx: Any) -> None:
    """A conditional create's or update's match, read in `tx`: it decides whether the entry creates (none) or
    what it updates (one); several are PRECONDITION_FAILED."""
    if p.criteria is not None:
        try:
            p.matched = await writer_for(p.resource_type, "read").find_match(p.resource_type, p.criteria, tx)
        except errors.FinGateError as exc:
            raise _at(p.index, exc) from None


async def _alone(store: Store, p: _Planned, ids: dict[str, str], writer_for: WriterFor) -> Outcome:
    async def attempt() -> Outcome:
        outcomes: dict[int, Outcome] = {}
        async with store.transaction() as tx:
            await _decide(p, writer_for, tx)
            if p.conditional:
                p.id = _created_or_matched_id(p)
            touched: dict[tuple[str, str], _Touched] = {}
            try:
                await _apply(p, ids, writer_for, tx, outcomes, touched)
            except errors.FinGateError as exc:
                raise _at(p.index, exc) from None
            await _check_final(touched, tx)
        return outcomes[p.index]

    if not p.conditional:
        return await attempt()
    async for retrying in racing():  # a conditional write that lost a race starts again, as TCreate does
        with retrying:
            outcome = await attempt()
    return outcome


__all__ = ["LOAD_ORDER", "RANK", "Entry", "Outcome", "WriterFor", "batch", "rewrite", "transaction"]
