"""The items of a repeating FHIR element a client asked for: by property value, by FHIRPath, by position."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models

from app import errors

MAX_COUNT = 1000  # as a search's `_count`: an element list is never longer than its resource, but a bound is a bound
MAX_FHIRPATH = 1000  # characters: an expression is compiled once per distinct text, so its text is bounded
FHIRPATH, OFFSET, COUNT = "fhirpath", "_offset", "_count"
RESERVED = frozenset({FHIRPATH, OFFSET, COUNT})

_MODEL = models["r5"]


def _text(value: Any) -> str | None:
    """A primitive's FHIR JSON text (`true`, `12`, `100.10`, `official`); None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | Decimal):
        return str(value)
    return None


def _tokens(value: dict[str, Any]) -> set[str]:
    """What a complex value is matched by: a Coding's (or a CodeableConcept's codings') `code` and
    `system|code`, a Reference's `reference`, an Identifier's `value` and `system|value`."""
    out: set[str] = set()
    for name in ("code", "value"):
        item = value.get(name)
        if isinstance(item, str):
            out.update((item, f"{value.get('system') or ''}|{item}"))
    if isinstance(value.get("reference"), str):
        out.add(value["reference"])
    for coding in value.get("coding") or ():
        if isinstance(coding, dict):
            out |= _tokens(coding)
    concept = value.get("concept")  # a CodeableReference: its concept, or its reference
    if isinstance(concept, dict):
        out |= _tokens(concept)
    if isinstance(value.get("reference"), dict):
        out |= _tokens(value["reference"])
    return out


def matches(value: Any, wanted: str) -> bool:
    """Whether a property value equals the argument: a primitive by its text (a decimal by its number), a
    repeating property when any item does, a complex value by `_tokens`."""
    if isinstance(value, list):
        return any(matches(item, wanted) for item in value)
    if isinstance(value, dict):
        return wanted in _tokens(value)
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        try:
            return Decimal(wanted) == value
        except (InvalidOperation, ValueError):
            return False
    return _text(value) == wanted


@lru_cache(maxsize=256)
def _fhirpath(expression: str) -> Any:
    if len(expression) > MAX_FHIRPATH:
        raise errors.bad_input(f"fhirpath: at most {MAX_FHIRPATH} characters", expression=FHIRPATH)
    try:
        return compile_fhirpath(expression, _MODEL)
    except Exception as failed:  # fhirpathpy's parser raises its own exception types
        raise errors.bad_input(f"fhirpath: {expression!r} is not FHIRPath ({failed})", expression=FHIRPATH) from None


def evaluate(expression: str, item: Any) -> list[Any]:
    """The FHIRPath expression's result on one item (the item is the expression's context)."""
    function = _fhirpath(expression)
    try:
        return list(function(item, {}))
    except errors.FinGateError:
        raise
    except Exception as failed:
        raise errors.bad_input(f"fhirpath: {expression!r} failed on an item ({failed})", expression=FHIRPATH) from None


def label(expression: str, item: Any) -> str:
    """An item's text under a FHIRPath expression (its results' texts, joined), as @slice names a slice."""
    return "".join(_text(x) or str(x) for x in evaluate(expression, item))


def _bound(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if value < 0 or (name == COUNT and value > MAX_COUNT):
        highest = f" and at most {MAX_COUNT}" if name == COUNT else ""
        raise errors.bad_input(f"{name} must be at least 0{highest}; got {value}", expression=name)
    return int(value)


def select(items: Any, arguments: Mapping[str, Any], first: bool = False) -> Any:
    """The items kept: every property argument equal (`matches`), `fhirpath` true on the item, then `_offset`
    items skipped and at most `_count` (one when `first`). Anything not a list is returned as it is."""
    offset, count = _bound(OFFSET, arguments.get(OFFSET)), _bound(COUNT, arguments.get(COUNT))
    if not isinstance(items, list):
        return items
    wanted = [(name, value) for name, value in arguments.items() if name not in RESERVED and value is not None]
    expression = arguments.get(FHIRPATH)
    kept = [
        item
        for item in items
        if all(isinstance(item, dict) and matches(item.get(name), value) for name, value in wanted)
        and (expression is None or evaluate(expression, item) == [True])
    ]
    start = offset or 0
    stop = None if count is None else start + count
    if first:
        stop = start + 1 if stop is None else min(stop, start + 1)
    return kept[start:stop]
