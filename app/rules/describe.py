"""Renders the status tables as Markdown for the README, from the same data the engine applies."""

from __future__ import annotations

from app.rules.tables import (
    AMOUNT_RULES,
    ANSWER_RULES,
    BALANCE_RULES,
    IN_FORCE,
    LIFECYCLES,
    REFERENCE_RULES,
    REFERRER_RULES,
    RESOURCE_LIFECYCLE,
    Lifecycle,
    Status,
)


def _s(status: Status) -> str:
    return "*(no status)*" if status is None else f"`{status}`"


def _list(statuses: list[Status]) -> str:
    return ", ".join(_s(s) for s in statuses) or "—"


def _ordered(lc: Lifecycle, statuses: frozenset[Status]) -> list[Status]:
    return [s for s in (None, *lc.codes) if s in statuses]


def _lifecycle_table(lc: Lifecycle) -> list[str]:
    types = ", ".join(t for t, v in RESOURCE_LIFECYCLE.items() if v == lc.value_set)
    rows = [
        f"### `{lc.value_set}` — {types}",
        "",
        f"Source: {lc.source}.",
        "",
        "| status | may move to | content editable | may be created | may be deleted |",
        "|---|---|---|---|---|",
    ]
    for status in _ordered(lc, frozenset((*lc.codes, *lc.transitions, *lc.initial))):
        moves = _list(list(lc.next(status))) if lc.next(status) else "final"
        editable = (
            "yes"
            if status in lc.editable
            else (
                "by moving to " + _list(_ordered(lc, lc.amend_into)) if lc.amend_into & set(lc.next(status)) else "no"
            )
        )
        rows.append(
            f"| {_s(status)} | {moves} | {editable} | {'yes' if status in lc.initial else 'no'} | {'yes' if status in lc.deletable else 'no'} |"
        )
    return rows


# What each balance rule kind requires, and when it is checked (README; sums as in "Billing views").
_BALANCE_KINDS = {
    "within-total": (
        "Σ active allocation.amount to it ≤ `{element}`, per currency, unless the tenant allows overpayment",
        "an active PaymentReconciliation's allocations to it rise (created, changed, activated), or its `{element}` changes",
    ),
    "balanced-when-settled": (
        "`balanced` only when billing.balance is zero in every currency; then its payments are fixed",
        "it moves to balanced, or an active PaymentReconciliation's allocations to it change (cancelling included)",
    ),
}


def describe_rules() -> str:
    """The lifecycle and cross-resource rules as Markdown tables (deterministic, for the README)."""
    out = ["## Status lifecycle", ""]
    for lc in LIFECYCLES.values():
        out += [*_lifecycle_table(lc), ""]
    free = ", ".join(t for t, v in RESOURCE_LIFECYCLE.items() if v is None)
    out += [f"No lifecycle enforced (any status, any change, delete allowed): {free}.", ""]
    out += [
        "## Cross-resource rules",
        "",
        "| rule | resource | element | must point at | in status | checked when |",
        "|---|---|---|---|---|---|",
    ]
    for r in REFERENCE_RULES:
        targets = ", ".join(r.target_types or r.by_type) or "any served type"
        statuses = _statuses(r.statuses)
        if r.by_type:
            statuses = "; ".join(f"{t}: {_statuses(s)}" for t, s in r.by_type.items())
        into = " \\| ".join(sorted(r.recheck_into))
        out.append(
            f"| `{r.rule}` | {r.resource_type} | `{r.path}` | an existing {targets} | {statuses} | "
            f"the reference is new or changed and is a relative `Type/id`, or the {r.resource_type} enters {into} |"
        )
    for a in ANSWER_RULES:
        out.append(
            f"| `{a.rule}` | {a.resource_type} | `{a.path}.{a.response}` | a resource whose `{a.via}` is the same "
            f"{a.path}'s `{a.target}` | any | both are relative `Type/id` and the pair is new or changed, or the "
            f"{a.resource_type} enters active |"
        )
    for rr in REFERRER_RULES:
        params = ", ".join(f"{k}={v}" for k, v in rr.search.items())
        into = " \\| ".join(sorted(rr.into))
        out.append(
            f"| `{rr.rule}` | {rr.resource_type} | `status` | no {rr.search_type} with {params} | — | "
            f"the status moves to {into} |"
        )
    for b in BALANCE_RULES:
        requires, when = (text.format(element=b.element) for text in _BALANCE_KINDS[b.kind])
        out.append(f"| `{b.rule}` | {b.resource_type} | `{b.element}` | {requires} | — | {when} |")
    for m in AMOUNT_RULES:
        out.append(
            f"| `{m.rule}` | {m.resource_type} | `{m.parts}` | the currency of `{m.total}`, adding up to at most "
            f"`{m.total}.value` (`BAD_USER_INPUT`) | — | `{m.total}` or `{m.parts.split('.')[0]}` is written or changed, "
            f"and `{m.total}` has a value (without one there is nothing to add up to) |"
        )
    out += [
        "",
        "### Deletes of referenced resources",
        "",
        "A delete (of any type, after its own lifecycle allows it) is refused with `<Type>.delete-referenced` while "
        "a financial record in force references it through one of its reference search parameters:",
        "",
        "| referring type | in force while |",
        "|---|---|",
        *(f"| {t} | {_statuses(s)} |" for t, s in IN_FORCE.items()),
    ]
    return "\n".join(out) + "\n"


def _statuses(statuses: tuple[str, ...] | None) -> str:
    return " \\| ".join(f"`{s}`" for s in statuses) if statuses else "any"
