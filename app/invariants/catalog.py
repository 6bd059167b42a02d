"""Which R5 constraint is checked how: by FHIRPath (fhirpathpy), by FinGate's own code, or skipped, and why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from html import escape
from typing import Any

from app.fhir.model import Constraint, spec
from app.invariants import narrative


def _has_content(value: Any) -> str | None:
    if type(value) is dict and not value.keys() - {"id"}:
        return "the element is empty: leave it out, or give it a value or children"
    return None


def _narrative(check: Callable[[str], str | None]) -> Callable[[Any], str | None]:
    return lambda value: check(value) if type(value) is str else None


@dataclass(frozen=True)
class Native:
    """A constraint FinGate checks in Python: what it returns is the problem, None when the constraint holds."""

    check: Callable[[Any], str | None]
    why: str


# Checked in Python instead of FHIRPath (the expression is not evaluable as written, or would cost per element).
NATIVE: dict[str, Native] = {
    "ele-1": Native(
        _has_content,
        "on every element (~1,800 paths): one FHIRPath evaluation per element would cost more than the rest of "
        "validation; an empty object (or one with only `id`) is refused in Python, empty strings and nulls by the walk",
    ),
    "txt-1": Native(
        _narrative(narrative.basic_html),
        "`htmlChecks()` is not FHIRPath any library implements: an allowlist of R5's basic HTML elements and "
        "attributes, no script URLs (`app/invariants/narrative.py`)",
    ),
    "txt-2": Native(
        _narrative(narrative.has_text),
        "`htmlChecks()` again: the narrative must hold some non-whitespace text (or an image)",
    ),
}

# Constraints of error severity FinGate does not check, each with the reason (listed in the README).
SKIPPED: dict[str, str] = {}


@cache
def served_constraints() -> dict[str, Constraint]:
    """Every error-severity constraint of the types the served resources reach, by key."""
    found: dict[str, Constraint] = {}
    for td in spec().types.values():
        for c in (*td.constraints, *(c for el in td.elements for c in el.constraints)):
            if c.severity == "error":
                found.setdefault(c.key, c)
    return found


def evaluated() -> dict[str, Constraint]:
    """The constraints fhirpathpy evaluates."""
    return {k: c for k, c in served_constraints().items() if k not in NATIVE and k not in SKIPPED}


def describe() -> str:
    """The README's table of constraints checked otherwise than by FHIRPath, or skipped (a test keeps it in step)."""
    rows = ["| constraint | how | why |", "|---|---|---|"]
    every = served_constraints()
    for key in sorted(NATIVE, key=_order):
        rows.append(f"| `{key}` {escape(every[key].human)} | FinGate's code | {NATIVE[key].why} |")
    for key in sorted(SKIPPED, key=_order):
        rows.append(f"| `{key}` {escape(every[key].human)} | not checked | {SKIPPED[key]} |")
    return "\n".join(rows)


def _order(key: str) -> tuple[str, int]:
    stem, _, n = key.rpartition("-")
    return stem, int(n) if n.isdigit() else 0
