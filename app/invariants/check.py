"""One walk of a resource that evaluates every invariant on every instance it applies to."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

from app.errors import INTERNAL, FinGateError, outcome_issue
from app.fhir.model import PRIMITIVE_SCALARS, SERVED, Constraint, spec
from app.invariants.catalog import NATIVE, SHORTCUTS, SKIPPED
from app.invariants.fhirpath import holds

log = logging.getLogger("fingate.invariants")


@dataclass(frozen=True, slots=True)
class _Child:
    key: str  # JSON name
    is_list: bool
    type_name: str  # the FHIR type code: a primitive's, a complex type to descend into, or "Resource" (contained)
    primitive: bool
    constraints: tuple[Constraint, ...]  # the element's own (org-3 on Organization.contact, txt-1 on Narrative.div)


@dataclass(frozen=True, slots=True)
class _Plan:
    path: str  # the type's FHIR path: what its nodes are to FHIRPath (`Period`, `Claim.item`)
    constraints: tuple[Constraint, ...]  # on every node of the type
    children: tuple[_Child, ...]


def _checked(constraints: Any) -> tuple[Constraint, ...]:
    return tuple(c for c in constraints if c.severity == "error" and c.key not in SKIPPED)


@cache
def _plans() -> dict[str, _Plan]:
    out = {}
    for td in spec().types.values():
        children = []
        for el in td.elements:
            for t in el.types:
                children.append(
                    _Child(el.json_name(t), el.is_list, t, t in PRIMITIVE_SCALARS, _checked(el.constraints))
                )
        out[td.name] = _Plan(td.path, _checked(td.constraints), tuple(children))
    return out


class _Walk:
    def __init__(self, root: dict) -> None:
        self.root = root
        self.plans = _plans()
        self.issues: list[dict[str, Any]] = []

    def node(self, value: Any, type_name: str, own: tuple[Constraint, ...], where: str, resource: dict) -> None:
        plan = self.plans[type_name]
        seen: set[str] = set()
        for c in (*plan.constraints, *own):
            if c.key not in seen:
                seen.add(c.key)
                self.check(c, value, plan.path, where, resource)
        for child in plan.children:
            v = value.get(child.key)
            if v is None:
                continue
            items = enumerate(v) if child.is_list and type(v) is list else ((None, v),)
            for i, item in items:
                at = f"{where}.{child.key}" if i is None else f"{where}.{child.key}[{i}]"
                if child.primitive:
                    for c in child.constraints:
                        self.check(c, item, child.type_name, at, resource)
                elif type(item) is not dict:
                    continue
                elif child.type_name == "Resource":
                    rtype = item.get("resourceType")
                    if rtype in SERVED:
                        self.node(item, rtype, (), at, item)
                else:
                    self.node(item, child.type_name, child.constraints, at, resource)

    def check(self, c: Constraint, value: Any, path: str, where: str, resource: dict) -> None:
        native = NATIVE.get(c.key)
        if native is not None:
            problem = native.check(value)
            if problem is None:
                return
            message = f"{where}: {c.key}: {c.human} ({problem})"
        elif (shortcut := SHORTCUTS.get(c.key)) is not None and type(value) is dict and shortcut.holds(value):
            return
        elif self.holds(c, value, path, where, resource):
            return
        else:
            message = f"{where}: {c.key}: {c.human}"
        details = {"coding": [{"system": c.source, "code": c.key}], "text": c.human}
        self.issues.append(outcome_issue(message, where, code="invariant", details=details))

    def holds(self, c: Constraint, value: Any, path: str, where: str, resource: dict) -> bool:
        try:
            return holds(c.expression, value, path, resource, self.root)
        except Exception as exc:  # a FHIRPath library gap, not the client's fault: refuse rather than store unchecked
            log.exception("invariant %s could not be evaluated at %s", c.key, where)
            raise FinGateError(
                INTERNAL,
                f"{where}: invariant {c.key} could not be evaluated ({type(exc).__name__}); nothing was stored",
            ) from exc


def invariant_issues(resource_type: str, doc: dict) -> list[dict[str, Any]]:
    """An OperationOutcome issue per invariant the resource breaks, at the element it breaks it on."""
    walk = _Walk(doc)
    walk.node(doc, resource_type, (), resource_type, doc)
    return walk.issues
