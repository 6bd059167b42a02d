"""Applies the R4 -> R5 mapping table (app.payers.mapping) to one R4 resource: the R5 JSON and what was dropped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.payers.mapping import CODES, CONVERT, DROP, ROWS, TYPES, Row

NOTE_TYPE_SYSTEM = "http://hl7.org/fhir/note-type"
_PEOPLE = ("Patient/", "RelatedPerson/")  # a payor that is a person makes the Coverage self-pay

# parent R4 path -> element name (a choice without its `[x]`) -> row
_CHILDREN: dict[str, dict[str, Row]] = {}
for _row in ROWS:
    _parent, _, _name = _row.r4.rpartition(".")
    _CHILDREN.setdefault(_parent, {})[_name.removesuffix("[x]")] = _row


class ConversionError(ValueError):
    """The resource holds elements R4 does not define for it (so it is not R4, or not this type)."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(f"not R4 elements: {', '.join(paths)}")
        self.paths = paths


@dataclass
class Converted:
    resource: dict[str, Any]
    dropped: list[str] = field(default_factory=list)  # the R4 paths whose values had no place in R5


def _find(parent: str, key: str) -> tuple[Row, str] | None:
    """The row of `key` under `parent`, and a choice element's type suffix (`valueMoney` -> `Money`)."""
    children = _CHILDREN.get(parent, {})
    row = children.get(key)
    if row is not None and not row.r4.endswith("[x]"):
        return row, ""
    for stem, row in children.items():
        if row.r4.endswith("[x]") and key.startswith(stem) and key[len(stem) : len(stem) + 1].isupper():
            return row, key[len(stem) :]
    return None


def _r5_name(row: Row, suffix: str) -> str:
    name = (row.r5 or "").rpartition(".")[2]
    return name.removesuffix("[x]") + suffix if name.endswith("[x]") else name


class _Walk:
    def __init__(self) -> None:
        self.dropped: list[str] = []
        self.unknown: list[str] = []

    def element(self, path: str, node: dict[str, Any], is_resource: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if is_resource and key == "resourceType":
                out[key] = value
                continue
            companion = key.startswith("_")  # a primitive's id and extensions, beside it
            found = _find(path, key[1:] if companion else key)
            if found is None:
                self.unknown.append(f"{path}.{key}")
                continue
            row, suffix = found
            if row.rule == DROP or (companion and row.rule == CONVERT):
                self.dropped.append(row.r4)
                continue
            if row.rule == CONVERT:
                _FUNCTIONS[row.fn](self, row, suffix, value, node, out)
                continue
            if row.rule == CODES and not companion:
                value = [row.codes.get(v, v) for v in value] if isinstance(value, list) else row.codes.get(value, value)
            out[("_" if companion else "") + _r5_name(row, suffix)] = value if companion else self.value(row, value)
        return out

    def value(self, row: Row, value: Any) -> Any:
        """A backbone element's children go through their own rows; anything else is copied as it is."""
        children = row.via or row.r4
        if children not in _CHILDREN:
            return value
        if isinstance(value, list):
            return [self.element(children, v) if isinstance(v, dict) else v for v in value]
        return self.element(children, value) if isinstance(value, dict) else value

    def resource(self, r4: dict[str, Any]) -> dict[str, Any]:
        return self.element(str(r4.get("resourceType")), r4, is_resource=True)


# ---- the CONVERT rows' functions: (walk, row, choice suffix, R4 value, the R4 parent, the R5 parent being built)

Fn = Callable[[_Walk, Row, str, Any, dict[str, Any], dict[str, Any]], None]


def _meta(walk: _Walk, row: Row, suffix: str, value: Any, r4: dict[str, Any], out: dict[str, Any]) -> None:
    kept = {k: v for k, v in value.items() if k in ("id", "extension", "tag", "security")}
    if set(value) - set(kept):
        walk.dropped.append(row.r4)
    if kept:
        out["meta"] = kept


def _contained(walk: _Walk, row: Row, suffix: str, value: Any, r4: dict[str, Any], out: dict[str, Any]) -> None:
    kept = [walk.resource(r) for r in value if isinstance(r, dict) and r.get("resourceType") in TYPES]
    if len(kept) < len(value):
        walk.dropped.append(row.r4)
    if kept:
        out["contained"] = kept


def _sized(attachment: Any) -> Any:
    if isinstance(attachment, dict) and isinstance(attachment.get("size"), int):
        return {**attachment, "size": str(attachment["size"])}
    return attachment


def _attachment(walk: _Walk, row: Row, suffix: str, value: Any, r4: dict[str, Any], out: dict[str, Any]) -> None:
    if suffix in ("", "Attachment"):
        value = [_sized(v) for v in value] if isinstance(value, list) else _sized(value)
    out[_r5_name(row, suffix)] = value


def _identifier(walk: _Walk, row: Row, suffix: str, value: Any, r4: dict[str, Any], out: dict[str, Any]) -> None:
    out[_r5_name(row, suffix)] = {"value": value}


def _identifier_list(walk: _Walk, row: Row, suffix: str, value: Any, r4: dict[str, Any], out: dict[str, Any]) -> None:
    out[_r5_name(row, suffix)] = [{"value": value}]


def _is_person(reference: dict[str, Any]) -> bool:
    ref = reference.get("reference")
    return reference.get("type") in ("Patient", "RelatedPerson") or (isinstance(ref, str) and ref.startswith(_PEOPLE))


def _payor(walk: _Walk, row: Row, suffix: str, value: Any, r4: dict[str, Any], out: dict[str, Any]) -> None:
    payors = [p for p in value if isinstance(p, dict)]
    insurer = next((p for p in payors if not _is_person(p)), None)
    out["kind"] = "self-pay" if any(_is_person(p) for p in payors) else "insurance"
    if insurer is not None:
        out["insurer"] = insurer
    others = [{"party": p} for p in payors if p is not insurer]
    if others:
        out["paymentBy"] = others


def _body_site(walk: _Walk, row: Row, suffix: str, value: Any, r4: dict[str, Any], out: dict[str, Any]) -> None:
    entry: dict[str, Any] = {"site": [{"concept": value}]}
    if r4.get("subSite"):
        entry["subSite"] = r4["subSite"]
    out["bodySite"] = [entry]


def _sub_site(walk: _Walk, row: Row, suffix: str, value: Any, r4: dict[str, Any], out: dict[str, Any]) -> None:
    if "bodySite" not in r4:  # R5's bodySite.site is required: a sub-site alone has no place
        walk.dropped.append(row.r4)


def _quantity(walk: _Walk, row: Row, suffix: str, value: Any, r4: dict[str, Any], out: dict[str, Any]) -> None:
    out[_r5_name(row, suffix)] = {"value": value}


def _note_type(walk: _Walk, row: Row, suffix: str, value: Any, r4: dict[str, Any], out: dict[str, Any]) -> None:
    out[_r5_name(row, suffix)] = {"coding": [{"system": NOTE_TYPE_SYSTEM, "code": value}]}


_FUNCTIONS: dict[str, Fn] = {
    "meta": _meta,
    "contained": _contained,
    "attachment": _attachment,
    "identifier": _identifier,
    "identifier_list": _identifier_list,
    "payor": _payor,
    "body_site": _body_site,
    "sub_site": _sub_site,
    "quantity": _quantity,
    "note_type": _note_type,
}


def convert(r4: dict[str, Any]) -> Converted:
    """The R5 form of an R4 Patient, Coverage or ExplanationOfBenefit (parsed with `Decimal` for its numbers)."""
    if r4.get("resourceType") not in TYPES:
        raise ConversionError([f"resourceType {r4.get('resourceType')!r} (converted: {', '.join(TYPES)})"])
    walk = _Walk()
    resource = walk.resource(r4)
    if walk.unknown:
        raise ConversionError(walk.unknown)
    return Converted(resource, sorted(set(walk.dropped)))
