"""The specification page's differences from R5, applied to the R5 StructureDefinitions the model reads.

FinGate's contract for PaymentReconciliation is its specification page (the FHIR current build), which
adds four elements to R5 5.0.0 and makes `amount` optional. `schema/paymentreconciliation-specification-delta.json`
lists them; here they become snapshot elements of the definition, so the model, the GraphQL schema, the
validation walk and the invariants all see one PaymentReconciliation, the page's.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"
DELTA_FILE = _SCHEMA_DIR / "paymentreconciliation-specification-delta.json"
NOTE = "specification page, FHIR current build"


@cache
def _delta() -> dict[str, Any]:
    return json.loads(DELTA_FILE.read_text())  # type: ignore[no-any-return]


@cache
def _every_element() -> tuple[dict[str, Any], ...]:
    """The constraints R5 puts on every element (`ele-1`), from `Element`'s own definition."""
    sd = json.loads((_SCHEMA_DIR / "definitions" / "StructureDefinition-Element.json").read_text())
    return tuple(sd["snapshot"]["element"][0].get("constraint", ()))


def _resource(path: str) -> str:
    return path.split(".", 1)[0]


def added(resource_type: str) -> tuple[str, ...]:
    """The paths of the elements the page adds to `resource_type` (`PaymentReconciliation.statusReason`)."""
    return tuple(e["path"] for e in _delta()["added"] if _resource(e["path"]) == resource_type)


def relaxed(resource_type: str) -> tuple[str, ...]:
    """The paths R5 requires and the page makes optional (`PaymentReconciliation.amount`)."""
    return tuple(
        c["path"]
        for c in _delta()["changed"]
        if _resource(c["path"]) == resource_type and c["R5"]["min"] >= 1 and c["specification"]["min"] == 0
    )


def note(path: str) -> str | None:
    """What a description says of an element the page adds or changes; None for R5's own."""
    for e in _delta()["added"]:
        if e["path"] == path:
            return f"({NOTE}; not in R5 5.0.0)"
    for c in _delta()["changed"]:
        if c["path"] == path:
            r5, page = c["R5"], c["specification"]
            return f"({NOTE}: {page['min']}..{page['max']}; R5 5.0.0: {r5['min']}..{r5['max']})"
    return None


def _snapshot_element(entry: dict[str, Any]) -> dict[str, Any]:
    path = entry["path"]
    return {
        "id": path,
        "path": path,
        "short": entry["short"],
        "min": entry["min"],
        "max": entry["max"],
        "type": [{"code": entry["type"]}],
        "isModifier": False,
        "isSummary": False,
        "base": path,
        "constraint": list(_every_element()),
    }


def _subtree_end(elements: list[dict[str, Any]], index: int) -> int:
    """The index just past the element at `index` and its descendants."""
    prefix = elements[index]["path"] + "."
    end = index + 1
    while end < len(elements) and elements[end]["path"].startswith(prefix):
        end += 1
    return end


def apply(sd: dict[str, Any]) -> dict[str, Any]:
    """`sd` as the page defines it: its added elements in their place, its changed cardinalities.

    Fails loudly when the definitions no longer are what the delta was written against (an element it
    adds already there, an anchor gone, an R5 cardinality it changes different): the delta then needs
    re-reading against the new definitions, not silent application.
    """
    resource_type = sd.get("type")
    additions = [e for e in _delta()["added"] if _resource(e["path"]) == resource_type]
    changes = [c for c in _delta()["changed"] if _resource(c["path"]) == resource_type]
    if not additions and not changes:
        return sd
    elements = [dict(e) for e in sd["snapshot"]["element"]]
    index = {e["path"]: i for i, e in enumerate(elements)}
    for change in changes:
        if change["path"] not in index:
            raise ValueError(f"{DELTA_FILE.name}: {change['path']} is not in the R5 definition")
        el = elements[index[change["path"]]]
        if (el["min"], el["max"]) != (change["R5"]["min"], change["R5"]["max"]):
            raise ValueError(
                f"{DELTA_FILE.name}: {change['path']} is {el['min']}..{el['max']} in R5, not {change['R5']}"
            )
        el["min"], el["max"] = change["specification"]["min"], change["specification"]["max"]
    for entry in additions:
        paths = [e["path"] for e in elements]
        if entry["path"] in paths:
            raise ValueError(f"{DELTA_FILE.name}: {entry['path']} is already in the definition")
        anchor = entry.get("after") or entry["before"]
        if anchor not in paths:
            raise ValueError(
                f"{DELTA_FILE.name}: {entry['path']} is placed at {anchor}, which is not in the definition"
            )
        at = paths.index(anchor)
        elements.insert(_subtree_end(elements, at) if "after" in entry else at, _snapshot_element(entry))
    return {**sd, "snapshot": {**sd["snapshot"], "element": elements}}
