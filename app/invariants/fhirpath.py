"""FHIRPath for the invariants: fhirpathpy, compiled once per expression, plus the functions it lacks."""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from typing import Any

from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.nodes import FP_DateTime, ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser import parse

from app.fhir.references import relative_reference

Truth = bool | None  # FHIRPath's three-valued logic: None is the empty collection
Compiled = Callable[[Any, dict[str, Any]], Truth]

_MODEL = models["r5"]
_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?)?)?)?(Z|[+-]\d{2}:\d{2})?")


def _value(x: Any) -> Any:
    return x.asStr if isinstance(x, FP_DateTime) else x


def _has_value(inputs: list[Any]) -> list[bool]:
    """FHIRPath `hasValue()`: a single primitive that carries a value (not only extensions)."""
    return [len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], dict | list)]


def _date_boundary(text: str, high: bool) -> FP_DateTime | None:
    """The first (or last) millisecond a partial date/dateTime can mean, in its own zone when it has one."""
    m = _DATE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, _, zone = m.groups()
    y, mo = int(year), int(month or (12 if high else 1))
    d = int(day or (calendar.monthrange(y, mo)[1] if high else 1))
    hh, mm, ss = (int(v) if v else (top if high else 0) for v, top in ((hour, 23), (minute, 59), (second, 59)))
    ss = min(ss, 59)  # a leap second orders as the minute's last
    ms = m.group(7)[1:4].ljust(3, "9" if high else "0") if m.group(7) else ("999" if high else "000")
    return FP_DateTime(f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{ms}{zone or ''}")


def _decimal_boundary(value: Any, high: bool) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    d = Decimal(value)
    half = Decimal(5).scaleb(d.as_tuple().exponent - 1)  # type: ignore[operator]
    return d + half if high else d - half


class _Quantity(dict):
    """A Quantity at a boundary, ordered by value when the units agree (fhirpathpy cannot order Quantities)."""

    def _unit(self) -> tuple[Any, ...]:
        return (self.get("system"), self.get("code"), self.get("unit"))

    def __le__(self, other: Any) -> bool:
        return isinstance(other, _Quantity) and self._unit() == other._unit() and self["value"] <= other["value"]

    def __ge__(self, other: Any) -> bool:
        return isinstance(other, _Quantity) and self._unit() == other._unit() and self["value"] >= other["value"]


def _boundary(high: bool) -> Callable[[list[Any]], list[Any]]:
    """FHIRPath `lowBoundary()` / `highBoundary()` on dates, dateTimes, decimals and Quantities."""

    def fn(inputs: list[Any]) -> list[Any]:
        if len(inputs) != 1:
            return []
        x = _value(inputs[0])
        if isinstance(x, str):
            b = _date_boundary(x, high)
            return [] if b is None else [b]
        if isinstance(x, dict):  # a Quantity: the same quantity at its value's boundary
            v = _decimal_boundary(x.get("value"), high)
            return [] if v is None else [_Quantity({**x, "value": v})]
        v = _decimal_boundary(x, high)
        return [] if v is None else [v]

    return fn


def _comparable(inputs: list[Any], other: list[Any]) -> list[bool]:
    """FHIRPath `comparable()` on Quantities: the same unit (FinGate converts no units)."""
    if len(inputs) != 1 or len(other) != 1 or not isinstance(inputs[0], dict) or not isinstance(other[0], dict):
        return []
    a, b = inputs[0], other[0]
    return [(a.get("system"), a.get("code"), a.get("unit")) == (b.get("system"), b.get("code"), b.get("unit"))]


def _resolve(inputs: list[Any]) -> list[Any]:
    """FHIRPath `resolve()` as far as a literal says: `Type/id` resolves to a stub of that type, nothing else."""
    out = []
    for x in inputs:
        text = x.get("reference") if isinstance(x, dict) else x
        parsed = relative_reference(text) if isinstance(text, str) else None
        if parsed is not None:
            out.append(ResourceNode.create_node({"resourceType": parsed[0], "id": parsed[1]}))
    return out


_FUNCTIONS: dict[str, dict[str, Any]] = {
    "hasValue": {"fn": _has_value, "arity": {0: []}},
    "lowBoundary": {"fn": _boundary(high=False), "arity": {0: []}},
    "highBoundary": {"fn": _boundary(high=True), "arity": {0: []}},
    "comparable": {"fn": _comparable, "arity": {1: ["AnyAtRoot"]}},
    "resolve": {"fn": _resolve, "arity": {0: []}},
}
FUNCTIONS = frozenset(_FUNCTIONS)
_OPTIONS = {"userInvocationTable": _FUNCTIONS, "traceFn": lambda *_: None}  # `trace()` in ref-1 must not print


def _leaf(ast: dict) -> Compiled:
    parsed = {"children": [ast]}

    def truth(node: Any, context: dict[str, Any]) -> Truth:
        result = apply_parsed_path(node, parsed, context, _MODEL, _OPTIONS)
        if len(result) != 1:
            return None
        return result[0] if type(result[0]) is bool else True  # a single non-boolean item counts as true

    return truth


def _any(operands: list[Compiled]) -> Compiled:
    def truth(node: Any, context: dict[str, Any]) -> Truth:
        unknown = False
        for operand in operands:
            t = operand(node, context)
            if t:
                return True
            unknown = unknown or t is None
        return None if unknown else False

    return truth


def _all(operands: list[Compiled]) -> Compiled:
    def truth(node: Any, context: dict[str, Any]) -> Truth:
        unknown = False
        for operand in operands:
            t = operand(node, context)
            if t is False:
                return False
            unknown = unknown or t is None
        return None if unknown else True

    return truth


def _implies(given: Compiled, then: Compiled) -> Compiled:
    def truth(node: Any, context: dict[str, Any]) -> Truth:
        g = given(node, context)
        if g is False:
            return True
        t = then(node, context)
        return t if g else (True if t else None)

    return truth


def _logic(ast: dict) -> Compiled:
    """The expression with its outer `or` / `and` / `implies` evaluated operand by operand, stopping once decided.

    fhirpathpy evaluates both sides of every operator; ref-1, on every Reference, would evaluate its
    contained-resource lookup for each. The leaves are fhirpathpy's; FinGate only orders the connectives.
    """
    kind, op, children = ast.get("type"), ast.get("terminalNodeText"), ast.get("children", [])
    if kind == "TermExpression" and children and children[0].get("type") == "ParenthesizedTerm":
        return _logic(children[0]["children"][0])
    if kind == "OrExpression" and op == ["or"]:
        return _any([_logic(c) for c in children])
    if kind == "AndExpression" and op == ["and"]:
        return _all([_logic(c) for c in children])
    if kind == "ImpliesExpression":
        return _implies(_logic(children[0]), _logic(children[1]))
    return _leaf(ast)


@cache
def compiled(expression: str) -> Compiled:
    """The expression parsed once (fhirpathpy's ANTLR parser is the slow part); call it per node."""
    return _logic(parse(expression)["children"][0])


def holds(expression: str, node: Any, type_path: str, resource: dict, root: dict) -> bool:
    """Whether the constraint holds on `node` (of FHIR type/path `type_path`): anything but false holds."""
    context = {"resource": resource, "rootResource": root}
    return compiled(expression)(ResourceNode.create_node(node, type_path), context) is not False
