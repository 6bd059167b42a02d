"""Applies the status tables and cross-resource rules of `app.rules.tables` to creates, updates and deletes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, Protocol

from app import outbound
from app.billing import Amounts, add
from app.errors import BAD_USER_INPUT, STATUS_RULE, FinGateError, outcome_issue
from app.fhir.model import spec
from app.fhir.references import by_type, local_reference
from app.rules.balances import check_balances
from app.rules.tables import (
    AMOUNT_RULES,
    ANSWER_RULES,
    IGNORED_ELEMENTS,
    IN_FORCE,
    LIFECYCLES,
    REFERENCE_RULES,
    REFERRER_RULES,
    RESOURCE_LIFECYCLE,
    STATUS_ELEMENTS,
    AmountRule,
    AnswerRule,
    Lifecycle,
    ReferenceRule,
    ReferrerRule,
    Status,
)


class Reads(Protocol):
    """What the cross-resource checks may read: every referenced resource of a write in one batch."""

    async def get_many(self, ids_by_type: Mapping[str, list[str]]) -> dict[tuple[str, str], dict]:
        """`{(type, id): resource}` of those found, each with at least its `status` (one store find per type)."""
        ...

    async def search(self, resource_type: str, params: dict[str, str]) -> list[dict]: ...

    async def referrers(
        self, resource_type: str, codes: list[str], ref: str, statuses: tuple[str, ...], count: int
    ) -> list[dict]:
        """Up to `count` resources of `resource_type` in `statuses` whose reference parameter, any of `codes`, is `ref`."""
        ...


def _status_text(status: Status) -> str:
    return "(no status)" if status is None else f"'{status}'"


def _codes_text(codes: tuple[str, ...] | list[str]) -> str:
    return " | ".join(codes) if codes else "none (final)"


def _refuse(
    rule: str,
    message: str,
    expression: str | None,
    current: Status,
    allowed: tuple[str, ...],
    more_issues: list[dict[str, Any]] | None = None,
) -> FinGateError:
    issue = outcome_issue(f"[{rule}] {message}", expression, code="business-rule")
    return FinGateError(
        STATUS_RULE,
        message,
        issues=[issue, *(more_issues or [])],
        extensions={"rule": rule, "currentStatus": current, "allowed": list(allowed)},
    )


def lifecycle(resource_type: str) -> Lifecycle | None:
    """The lifecycle table of a served type, or None when none is enforced."""
    name = RESOURCE_LIFECYCLE.get(resource_type)
    return LIFECYCLES[name] if name else None


def check_create(resource_type: str, new: dict) -> None:
    """Refuse a create whose status is not one the type may start with."""
    lc = lifecycle(resource_type)
    if lc is None:
        return
    status = new.get("status")
    if status in lc.initial:
        return
    starts = tuple(c for c in lc.codes if c in lc.initial)
    raise _refuse(
        f"{lc.value_set}.create",
        f"a new {resource_type} cannot have status {_status_text(status)}: create it as {_codes_text(starts)}",
        f"{resource_type}.status",
        status,
        starts,
    )


def _transition_elements(resource_type: str) -> frozenset[str]:
    names = {e.name for e in spec().resource(resource_type).elements}
    return IGNORED_ELEMENTS | {n for n in STATUS_ELEMENTS if n in names}


_TRANSITION_ELEMENTS: dict[str, frozenset[str]] = {}


def _changed(resource_type: str, old: dict, new: dict, ignored: frozenset[str]) -> list[str]:
    keys = dict.fromkeys([*old, *new])
    return [k for k in keys if k not in ignored and k != "resourceType" and old.get(k) != new.get(k)]


def check_update(resource_type: str, old: dict, new: dict) -> None:
    """Refuse a status change outside the table, and content changes where the status freezes content."""
    lc = lifecycle(resource_type)
    if lc is None:
        return
    before, after = old.get("status"), new.get("status")
    allowed = lc.next(before)
    if before != after and after not in allowed:
        raise _refuse(
            f"{lc.value_set}.transition",
            f"{resource_type} status cannot change from {_status_text(before)} to {_status_text(after)}; "
            f"from {_status_text(before)} it may move to: {_codes_text(allowed)}",
            f"{resource_type}.status",
            before,
            allowed,
        )
    if before in lc.editable or after in lc.amend_into:
        return
    ignored = _TRANSITION_ELEMENTS.get(resource_type)
    if ignored is None:
        ignored = _TRANSITION_ELEMENTS[resource_type] = _transition_elements(resource_type)
    changed = _changed(resource_type, old, new, ignored)
    if not changed:
        return
    editable = tuple(c for c in lc.codes if c in lc.editable)
    fix = (
        f"only the status may change (to: {_codes_text(allowed)})"
        if allowed
        else "the resource is final and can no longer change"
    )
    amend = (
        f"; content changes when moving to {_codes_text(tuple(lc.amend_into & set(allowed)))}"
        if lc.amend_into & set(allowed)
        else ""
    )
    where = ", ".join(f"{resource_type}.{k}" for k in changed)
    message = (
        f"the content of a {resource_type} in status {_status_text(before)} is frozen ({fix}{amend}); "
        f"it is editable only while {_codes_text(editable) if editable else 'never'}. Changed: {where}"
    )
    rule = f"{lc.value_set}.frozen"
    extra = [
        outcome_issue(f"[{rule}] {resource_type}.{k} changed", f"{resource_type}.{k}", code="business-rule")
        for k in changed[1:]
    ]
    raise _refuse(rule, message, f"{resource_type}.{changed[0]}", before, allowed, extra)


def check_delete(resource_type: str, old: dict) -> None:
    """Refuse deleting a resource that is past its draft-like statuses: financial records are never erased."""
    lc = lifecycle(resource_type)
    if lc is None:
        return
    status = old.get("status")
    if status in lc.deletable:
        return
    allowed = lc.next(status)
    deletable = tuple(c for c in lc.codes if c in lc.deletable)
    instead = f"move it to {_codes_text(allowed)} instead" if allowed else "it stays as it is"
    raise _refuse(
        f"{lc.value_set}.delete",
        f"a {resource_type} in status {_status_text(status)} cannot be deleted (financial records are never erased; "
        f"deletable only while {_codes_text(deletable) if deletable else 'never'}): {instead}",
        f"{resource_type}.status",
        status,
        allowed,
    )


def _references_at(resource: dict, resource_type: str, path: str) -> Iterator[tuple[str, Any]]:
    """`(expression, value)` for every value at a dotted path, walking through lists."""
    level: list[tuple[str, Any]] = [(resource_type, resource)]
    for part in path.split("."):
        nxt: list[tuple[str, Any]] = []
        for expr, node in level:
            value = node.get(part) if isinstance(node, dict) else None
            if isinstance(value, list):
                nxt.extend((f"{expr}.{part}[{i}]", v) for i, v in enumerate(value))
            elif value is not None:
                nxt.append((f"{expr}.{part}", value))
        level = nxt
    return iter(level)


# (rule, expression, reference text, target type, target id): one reference a rule must find.
_Wanted = tuple[ReferenceRule, str, str, str, str]


def _rechecked(into: frozenset[str], new: dict, old: dict | None) -> bool:
    """Every reference is checked again when the referrer enters one of `into` (a draft payment activated)."""
    return old is None or (old.get("status") != new.get("status") and new.get("status") in into)


def _wanted(rule: ReferenceRule, new: dict, old: dict | None) -> Iterator[_Wanted]:
    known = (
        set()
        if old is None or _rechecked(rule.recheck_into, new, old)
        else {v.get("reference") for _, v in _references_at(old, rule.resource_type, rule.path) if isinstance(v, dict)}
    )
    for expr, value in _references_at(new, rule.resource_type, rule.path):
        target = local_reference(value)
        # An unchanged reference was checked when it was written; re-checking would block e.g.
        # cancelling a ClaimResponse whose Claim was cancelled since.
        if target is None or value["reference"] in known:
            continue
        if rule.target_types is not None and target[0] not in rule.target_types:
            continue  # a wrong target type is validation's (BAD_USER_INPUT) business
        yield rule, expr, value["reference"], *target


def _reference_error(wanted: _Wanted, resource: dict | None) -> FinGateError | None:
    rule, expr, ref, target_type, _ = wanted
    wanted_statuses = rule.statuses_for(target_type)
    statuses = wanted_statuses or ()
    if resource is None:
        message = f"{expr} points at {ref}, which does not exist on this server: {rule.fix}"
        return _refuse(rule.rule, message, expr, None, statuses)
    if wanted_statuses is not None and resource.get("status") not in wanted_statuses:
        status = resource.get("status")
        message = f"{expr} points at {ref} whose status is {_status_text(status)}; it must be {_codes_text(statuses)}: {rule.fix}"
        return _refuse(rule.rule, message, expr, status, statuses)
    return None


# (rule, expression of the answer, the answer's (type, id), the target's (type, id)): one pair to match.
_Pair = tuple[AnswerRule, str, tuple[str, str], tuple[str, str]]


def _pairs(rule: AnswerRule, new: dict, old: dict | None) -> Iterator[_Pair]:
    """The items whose answer and target are both on this server, new or changed (or re-checked on activation)."""

    def pair(item: Any) -> tuple[Any, Any]:
        return (item.get(rule.response) or {}).get("reference"), (item.get(rule.target) or {}).get("reference")

    known = (
        set()
        if old is None or _rechecked(frozenset({"active"}), new, old)
        else {pair(i) for _, i in _references_at(old, rule.resource_type, rule.path) if isinstance(i, dict)}
    )
    for expr, item in _references_at(new, rule.resource_type, rule.path):
        if not isinstance(item, dict) or pair(item) in known:
            continue
        answer, target = local_reference(item.get(rule.response)), local_reference(item.get(rule.target))
        if answer is not None and target is not None:
            yield rule, f"{expr}.{rule.response}", answer, target


def _pair_error(pair: _Pair, answer: dict | None) -> FinGateError | None:
    """Only a definite mismatch: the answer names another resource (a missing answer is the reference rules')."""
    rule, expr, (atype, aid), (ttype, tid) = pair
    answered = local_reference(answer.get(rule.via)) if answer else None
    if answered is None or answered == (ttype, tid):
        return None
    message = (
        f"{expr} is {atype}/{aid}, which answers {answered[0]}/{answered[1]}, not this allocation's "
        f"{rule.target} {ttype}/{tid}: {rule.fix}"
    )
    return _refuse(rule.rule, message, expr, None, ())


def _rule_targets(resource_type: str, new: dict, old: dict | None) -> tuple[list[_Wanted], list[_Pair]]:
    wanted = [w for r in REFERENCE_RULES if r.resource_type == resource_type for w in _wanted(r, new, old)]
    pairs = [p for r in ANSWER_RULES if r.resource_type == resource_type for p in _pairs(r, new, old)]
    return wanted, pairs


def _read_keys(wanted: list[_Wanted], pairs: list[_Pair]) -> list[tuple[str, str]]:
    return [*((w[3], w[4]) for w in wanted), *(p[2] for p in pairs)]


def references_read(resource_type: str, new: dict, old: dict | None) -> list[tuple[str, str]]:
    """The (type, id) of every resource the reference and answer rules read for this write (`Reads.get_many`):
    what a bulk load reads at once for its whole chunk."""
    return _read_keys(*_rule_targets(resource_type, new, old))


async def _check_reference_rules(resource_type: str, new: dict, old: dict | None, reads: Reads) -> list[FinGateError]:
    """Every reference and answer rule of the type, with one batched read of all the resources they name."""
    wanted, pairs = _rule_targets(resource_type, new, old)
    if not wanted and not pairs:
        return []
    found = await reads.get_many(by_type(_read_keys(wanted, pairs)))
    errors = [
        *(_reference_error(w, found.get((w[3], w[4]))) for w in wanted),
        *(_pair_error(p, found.get(p[2])) for p in pairs),
    ]
    return [e for e in errors if e is not None]


async def _check_referrer_rule(rule: ReferrerRule, new: dict, old: dict | None, reads: Reads) -> list[FinGateError]:
    after = new.get("status")
    if old is None or old.get("status") == after or after not in rule.into:
        return []
    id = new.get("id") or old.get("id")  # the update's body may leave the id to the mutation argument
    if not id:
        return []
    ref = f"{rule.resource_type}/{id}"
    params = {k: v.format(ref=ref) for k, v in rule.search.items()}
    blockers = await reads.search(rule.search_type, params)
    if not blockers:
        return []
    ids = ", ".join(f"{rule.search_type}/{b.get('id')}" for b in blockers)
    before = old.get("status")
    message = (
        f"{ref} cannot move to '{after}': {ids} ({', '.join(f'{k}={v}' for k, v in params.items())}) "
        f"still allocate to it; {rule.fix}"
    )
    lc = lifecycle(rule.resource_type)
    allowed = tuple(s for s in (lc.next(before) if lc else ()) if s not in rule.into)
    return [_refuse(rule.rule, message, f"{rule.resource_type}.status", before, allowed)]


ALL, DEFERRED, FINAL = "all", "deferred", "final"  # when `check_references` runs (see there)


async def check_references(resource_type: str, new: dict, old: dict | None, reads: Reads, part: str = ALL) -> None:
    """Apply every cross-resource rule of `resource_type`; `old` is None on create.

    A missing or wrong-status target is STATUS_RULE, not BAD_USER_INPUT: the document is valid FHIR
    and the same request succeeds once the other resource is in place.

    `part`: ALL, for one write, with `reads` showing the state before it; a transaction of several writes
    (app.bundles) defers them (DEFERRED: nothing checked at each write) and checks each resource it wrote
    once, FINAL, with `reads` showing the state after every write (`new` as it ends, `old` as it began).
    """
    if part == DEFERRED:
        return
    # One after the other: the reads share the write's transaction, and a session runs one command at a time.
    errors = await _check_reference_rules(resource_type, new, old, reads)
    for rule in REFERRER_RULES:
        if rule.resource_type == resource_type:
            errors += await _check_referrer_rule(rule, new, old, reads)
    errors += await check_balances(resource_type, new, old, reads, final=part == FINAL)
    if not errors:
        return
    first = errors[0]
    if len(errors) == 1:
        raise first
    issues = [i for e in errors for i in (e.issues or [])]
    raise FinGateError(
        STATUS_RULE,
        f"{first.message} (and {len(errors) - 1} more)",
        issues=issues,
        extensions=first.extra,
    )


def _amount_issues(rule: AmountRule, new: dict) -> list[dict[str, Any]]:
    total = new.get(rule.total)
    if not isinstance(total, dict) or total.get("value") is None:
        return []
    currency = total.get("currency")
    issues = []
    allocated: Amounts = {}
    for expr, money in _references_at(new, rule.resource_type, rule.parts):
        if not isinstance(money, dict) or money.get("value") is None:
            continue
        other = money.get("currency")
        if currency is not None and other is not None and other != currency:
            message = f"[{rule.rule}] {expr} is in {other}, but the payment's {rule.total} is in {currency}: {rule.fix}"
            issues.append(outcome_issue(message, f"{expr}.currency", code="business-rule"))
        key = other or currency  # an allocation without a currency is in the payment's
        allocated = add(
            allocated, {key: Decimal(money["value"])}
        )  # exact: Python's default context rounds at 28 digits
    for other, sum_ in allocated.items():
        if other == currency and sum_ > total["value"]:
            where = f"{rule.resource_type}.{rule.parts}"
            shown = f"{sum_} {currency}" if currency else str(sum_)
            message = f"[{rule.rule}] the {where} values add up to {shown}, more than the {rule.total} {total['value']}: {rule.fix}"
            issues.append(outcome_issue(message, where, code="business-rule"))
    return issues


def _amounts_written(rule: AmountRule, new: dict, old: dict | None) -> bool:
    """A stored record is never refused for its past: only written or changed amounts are judged."""
    elements = (rule.total, rule.parts.split(".")[0])
    return old is None or any(old.get(e) != new.get(e) for e in elements)


def check_document(resource_type: str, new: dict, old: dict | None) -> None:
    """Refuse a document whose amounts contradict each other, or a rest-hook Subscription whose endpoint
    cannot be delivered to (BAD_USER_INPUT: it is wrong in itself)."""
    if resource_type == "Subscription" and (new.get("channelType") or {}).get("code") == "rest-hook":
        problem = outbound.endpoint_problem(str(new.get("endpoint") or ""))
        if problem:
            raise FinGateError(BAD_USER_INPUT, problem, issues=[outcome_issue(problem, "Subscription.endpoint")])
    rules = [r for r in AMOUNT_RULES if r.resource_type == resource_type and _amounts_written(r, new, old)]
    issues = [i for r in rules for i in _amount_issues(r, new)]
    if issues:
        message = issues[0]["diagnostics"] + (f" (and {len(issues) - 1} more)" if len(issues) > 1 else "")
        raise FinGateError(BAD_USER_INPUT, message, issues=issues)


def _referring_params(referrer: str, target_type: str) -> list[str]:
    """The reference search parameters of `referrer` that can point at a `target_type` (R5's and FinGate's)."""
    params = spec().search_params.get(referrer, {})
    return [c for c, p in params.items() if p.type == "reference" and (not p.targets or target_type in p.targets)]


DELETE_RULE = "delete-referenced"
_NAMED = 3  # referrers named per referring type (one more is read, to say there are more)


async def check_delete_references(resource_type: str, old: dict, reads: Reads) -> None:
    """Refuse deleting a resource that a financial record in force references (one query per referring type)."""
    ref = f"{resource_type}/{old['id']}"
    named = []
    for referrer, statuses in IN_FORCE.items():
        codes = _referring_params(referrer, resource_type)
        found = await reads.referrers(referrer, codes, ref, statuses, _NAMED + 1) if codes else []
        if found:
            names = ", ".join(f"{referrer}/{r.get('id')} ({r.get('status')})" for r in found[:_NAMED])
            named.append(names + (" and more" if len(found) > _NAMED else ""))
    if not named:
        return
    message = (
        f"{ref} cannot be deleted: financial records in force reference it: {'; '.join(named)}. "
        "Cancel them (or point them elsewhere) first, or keep it"
    )
    rule = f"{resource_type}.{DELETE_RULE}"
    status = old.get("status")
    lc = lifecycle(resource_type)
    raise _refuse(rule, message, resource_type, status, lc.next(status) if lc else ())
