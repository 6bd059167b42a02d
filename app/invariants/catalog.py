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


def _given(value: Any) -> bool:
    """FHIRPath's `exists()` is certainly true of this JSON value: a non-empty string, an object, a list holding one
    (what fhirpathpy also counts as existing in other cases, an empty string, a `_x` sibling alone, is not claimed)."""
    if type(value) is str:
        return value != ""
    if type(value) is dict:
        return True
    return type(value) is list and any(type(v) is str and v or type(v) is dict for v in value)


def _absent(node: dict, *names: str) -> bool:
    """None of the elements (nor a primitive's `_x` sibling) is in the JSON: FHIRPath navigates to nothing."""
    return not any(n in node or "_" + n in node for n in names)


def _local_free(node: dict) -> bool:
    ref = node.get("reference")
    return _absent(node, "reference") or (type(ref) is str and not ref.startswith("#"))


@dataclass(frozen=True)
class Shortcut:
    """When `holds(node)` is true the constraint certainly holds on `node` (the JSON object it sits on) and is not
    evaluated; otherwise FHIRPath evaluates it as usual. A shortcut only ever skips, never refuses."""

    holds: Callable[[dict], bool]
    why: str


_NO_CONTAINED = Shortcut(
    lambda node: _absent(node, "contained"),
    "every path of the expression starts at `contained` (`%resource` only inside its `where()`): without it each is "
    "the empty collection, whose `empty()` is true",
)

# Evaluated by FHIRPath, except on the nodes where the expression's value is decided by what is absent or present
# (W5's load mix: these were 80 % of the invariants' time, most of it ref-1 and ref-2 on every Reference).
SHORTCUTS: dict[str, Shortcut] = {
    "ref-1": Shortcut(
        _local_free,
        "`reference.exists() implies (reference.startsWith('#').not() or ...)`: no reference, or one not starting "
        "with `#`, makes it true without the contained-resource lookup",
    ),
    "ref-2": Shortcut(
        lambda node: any(_given(node.get(k)) for k in ("reference", "identifier", "display", "extension")),
        "an `or` of four `exists()`: one of them certainly true decides it",
    ),
    "qty-3": Shortcut(
        lambda node: _absent(node, "code") or _given(node.get("system")),
        "`code.empty() or system.exists()`: no code, or a system, decides it",
    ),
    "dom-2": _NO_CONTAINED,
    "dom-3": _NO_CONTAINED,
    "dom-4": _NO_CONTAINED,
    "dom-5": _NO_CONTAINED,
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
    """The README's table of constraints checked otherwise than by FHIRPath, by FHIRPath only where a shortcut does not
    decide them, or skipped (a test keeps it in step)."""
    rows = ["| constraint | how | why |", "|---|---|---|"]
    every = served_constraints()
    for key in sorted(NATIVE, key=_order):
        rows.append(f"| `{key}` {escape(every[key].human)} | FinGate's code | {NATIVE[key].why} |")
    for key in sorted(SHORTCUTS, key=_order):
        rows.append(
            f"| `{key}` {escape(every[key].human)} | FHIRPath, where not decided first | {SHORTCUTS[key].why} |"
        )
    for key in sorted(SKIPPED, key=_order):
        rows.append(f"| `{key}` {escape(every[key].human)} | not checked | {SKIPPED[key]} |")
    return "\n".join(rows)


def _order(key: str) -> tuple[str, int]:
    stem, _, n = key.rpartition("-")
    return stem, int(n) if n.isdigit() else 0
