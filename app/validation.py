"""Checks a client's FHIR R5 JSON before anything is stored, reporting every problem with its element path."""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from fhir.resources import get_fhir_model_class
from pydantic import ValidationError

from app.errors import BAD_USER_INPUT, FinGateError, outcome_issue
from app.fhir import delta
from app.fhir.decimals import fraction_digits, plain_text, range_problem
from app.fhir.model import PRIMITIVE_SCALARS, SERVED, SERVED_RESOURCES, spec
from app.fhir.money import PAID_AMOUNTS, minor_unit
from app.fhir.references import relative_reference, typed_reference
from app.invariants import invariant_issues

MAX_DEPTH = 64  # JSON objects + arrays; MongoDB refuses documents nested deeper than 100
MAX_STRING_BYTES = 1 << 20  # one string; a document must stay far below MongoDB's 16 MB
_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)

_ANY_TARGET = frozenset({"Resource", "Any"})

# ---- primitives: R5 datatypes.html regexes (the vendored StructureDefinitions omit them)

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|[+\-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_REGEX = {
    "date": rf"{_YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?",
    "dateTime": rf"{_YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T{_TIME}{_ZONE})?)?)?",
    "instant": rf"{_YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T{_TIME}{_ZONE}",
    "time": _TIME,
    "code": r"[^\s]+( [^\s]+)*",
    "id": r"[A-Za-z0-9\-.]{1,64}",
    "oid": r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+",
    "uuid": r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "uri": r"\S*",
    "url": r"\S*",
    "canonical": r"\S*",
    "integer64": r"-?(0|[1-9][0-9]*)",
    "base64Binary": r"(\s*([0-9a-zA-Z+/=]){4}\s*)+",
    "string": r"[\s\S]*\S[\s\S]*|\s+",  # not empty
    "markdown": r"[\s\S]*\S[\s\S]*|\s+",
}
_HINT = {
    "date": "YYYY, YYYY-MM or YYYY-MM-DD",
    "dateTime": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz (a time needs a zone)",
    "instant": "YYYY-MM-DDThh:mm:ss(.sss)+zz:zz",
    "time": "hh:mm:ss",
    "code": "no leading, trailing or double whitespace",
    "id": "1-64 of A-Z a-z 0-9 - .",
    "string": "not empty",
    "markdown": "not empty",
}
# JSON type each FHIR primitive arrives as (R5 JSON: integer64 is a string).
_INTS = {"integer": _INT32, "unsignedInt": range(0, 2**31), "positiveInt": range(1, 2**31)}


def _string_check(type_code: str) -> Callable[[str], str | None]:
    pattern = re.compile(_REGEX.get(type_code, r"[\s\S]*"))
    hint = _HINT.get(type_code, f"a FHIR {type_code}")
    has_date = type_code in ("date", "dateTime", "instant")

    def check(value: str) -> str | None:
        if pattern.fullmatch(value) is None:
            return f"{_preview(value)} is not a valid {type_code} ({hint})"
        if has_date and len(value) >= 10:
            try:
                datetime.date.fromisoformat(value[:10])
            except ValueError:
                return f"{_preview(value)} is not a valid {type_code}: no such day"
        if type_code == "integer64" and int(value) not in _INT64:
            return f"{_preview(value)} is out of range for integer64"
        return None

    return check


def _int_check(type_code: str) -> Callable[[Any], str | None]:
    allowed = _INTS[type_code]

    def check(value: Any) -> str | None:
        if type(value) is not int:
            # `2.0` parsed with parse_float=Decimal is still an integer; int() of `1e999999` would take minutes.
            if isinstance(value, Decimal) and value.is_finite() and value.adjusted() < 19:
                if value == value.to_integral_value() and int(value) in allowed:
                    return None
            return f"expected a {type_code} (JSON integer), got {_json_type(value)} {_preview(value)}"
        if value not in allowed:
            return f"{value} is out of range for {type_code} ({allowed.start}..{allowed.stop - 1})"
        return None

    return check


def _bool_check(value: Any) -> str | None:
    return (
        None
        if type(value) is bool
        else f"expected a boolean (JSON true/false), got {_json_type(value)} {_preview(value)}"
    )


def _decimal_check(value: Any) -> str | None:
    # A JSON number's text is gone once parsed (parse_float=Decimal), and JSON's own number grammar
    # is FHIR's but for the digit counts, which the range checks on the value.
    if type(value) is Decimal or type(value) is int:
        return range_problem(value)
    if type(value) is float:
        # A binary float already lost the client's digits: the JSON must be parsed with parse_float=Decimal.
        return f"decimal arrived as a binary float ({value!r}); send it as a JSON number parsed exactly or as a string"
    return f"expected a decimal (JSON number), got {_json_type(value)} {_preview(value)}"


@cache
def _primitive_check(type_code: str) -> Callable[[Any], str | None]:
    if type_code == "boolean":
        return _bool_check
    if type_code == "decimal":
        return _decimal_check
    if type_code in _INTS:
        return _int_check(type_code)
    string_check = _string_check(type_code)

    def check(value: Any) -> str | None:
        if type(value) is not str:
            return f"expected a {type_code} (JSON string), got {_json_type(value)} {_preview(value)}"
        if len(value) > MAX_STRING_BYTES // 4 and len(value.encode()) > MAX_STRING_BYTES:
            return f"string of {len(value.encode())} bytes exceeds the {MAX_STRING_BYTES}-byte limit"
        return string_check(value)

    return check


# ---- the per-type shapes, built once from the spec model

_PRIMITIVE, _COMPLEX, _RESOURCE = 0, 1, 2
_NO_REF, _REFERENCE, _CODEABLE_REFERENCE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _Slot:
    """What one JSON key of one type may hold."""

    kind: int
    type_name: str  # complex type to descend into, or the primitive type code
    is_list: bool
    check: Callable[[Any], str | None] | None = None  # primitives
    codes: frozenset[str] | None = None  # required binding
    codes_text: str = ""
    targets: frozenset[str] | None = None  # None: any resource type
    ref_mode: int = _NO_REF
    choice: str | None = None  # the `x` of `x[x]` when this key is one type of a choice
    paid: bool = False  # a Money paid or allocated: held to its currency's minor unit


@dataclass(frozen=True, slots=True)
class _Shape:
    label: str  # FHIR path of the type, for messages: `Claim.item`
    slots: dict[str, _Slot]
    required: tuple[tuple[str, tuple[str, ...]], ...]  # (element, its JSON names and `_` siblings) with min >= 1


@cache
def _shapes() -> dict[str, _Shape]:
    """Every type of the spec model as a `_Shape`: the JSON key -> slot table the walk reads."""
    out: dict[str, _Shape] = {}
    for td in spec().types.values():
        slots: dict[str, _Slot] = {}
        required = []
        for el in td.elements:
            codes = frozenset(el.codes) if el.codes else None
            targets = frozenset(el.targets) if el.targets and not _ANY_TARGET & set(el.targets) else None
            names = []
            for t in el.types:
                key = el.json_name(t)
                names.append(key)
                # The resource's own `id` is an `id` (FHIRPath System.String in the snapshot).
                code = "id" if key == "id" and td.kind == "resource" else t
                choice = el.name if el.is_choice else None
                codes_text = " | ".join(sorted(codes or ()))
                if t in PRIMITIVE_SCALARS:
                    slot = _Slot(_PRIMITIVE, code, el.is_list, _primitive_check(code), codes, codes_text, choice=choice)
                elif t == "Resource":
                    slot = _Slot(_RESOURCE, t, el.is_list)
                else:
                    ref_mode = {"Reference": _REFERENCE, "CodeableReference": _CODEABLE_REFERENCE}.get(t, _NO_REF)
                    paid = t == "Money" and el.path in PAID_AMOUNTS
                    slot = _Slot(_COMPLEX, t, el.is_list, None, codes, codes_text, targets, ref_mode, choice, paid)
                slots[key] = slot
            if el.min >= 1:
                stem = el.path.rsplit(".", 1)[1]
                required.append((stem, (*names, *("_" + n for n in names))))
        out[td.name] = _Shape(td.path, slots, tuple(required))
    # A primitive's `_x` sibling is an Element (`id`, `extension`); the model never reaches that type on its own.
    element = spec()._read("Element")[0]
    out[element.name] = _Shape(
        element.path,
        {
            el.name: _Slot(_PRIMITIVE, "string", False, _primitive_check("string"))
            for el in element.elements
            if el.name == "id"
        }
        | {"extension": _Slot(_COMPLEX, "Extension", True)},
        (),
    )
    return out


_ELEMENT = _Slot(_COMPLEX, "Element", False)


# ---- the walk

Path = Any  # a resource type name, or (parent path, key) / (parent path, key, index): rendered only on error


def _render(path: Path) -> str:
    parts: list[str] = []
    while type(path) is tuple:
        parts.append(f".{path[1]}" if len(path) == 2 else f".{path[1]}[{path[2]}]")
        path = path[0]
    return path + "".join(reversed(parts))


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    return {str: "string", dict: "object", list: "array", type(None): "null"}.get(type(value), type(value).__name__)


def _preview(value: Any) -> str:
    text = str(value) if isinstance(value, Decimal) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Walk:
    """One pass: injection keys, depth, sizes, decimals, shapes, primitives, codes, reference targets."""

    def __init__(self) -> None:
        self.issues: list[dict[str, Any]] = []
        self.where: list[str] = []
        self.too_deep = False
        self.shapes = _shapes()

    def add(self, path: Path, message: str) -> None:
        expression = _render(path)
        self.issues.append(outcome_issue(f"{expression}: {message}", expression))
        self.where.append(expression)

    def obj(self, node: dict, shape: _Shape, path: Path, depth: int, is_resource: bool = False) -> None:
        if depth > MAX_DEPTH:
            return self.deep(path)
        slots = shape.slots
        choices: list[str] | None = None
        for key, value in node.items():
            slot = slots.get(key)
            if slot is None:
                self.odd_key(key, value, shape, path, depth, is_resource)
                continue
            if slot.choice is not None:
                if choices is not None and slot.choice in choices:
                    self.add(
                        (path, key), f"{slot.choice}[x] takes one type only, got a second one in '{key}': keep one"
                    )
                choices = [*(choices or ()), slot.choice]
            if slot.is_list:
                if type(value) is not list:
                    self.add(
                        (path, key), f"expected an array of {slot.type_name}, got {_json_type(value)} {_preview(value)}"
                    )
                elif depth + 1 > MAX_DEPTH:
                    self.deep((path, key))
                else:
                    # A null in a primitive array lines a value up with its `_key` extension sibling.
                    gaps = slot.kind == _PRIMITIVE and "_" + key in node
                    for i, item in enumerate(value):
                        if item is not None or not gaps:
                            self.value(item, slot, (path, key, i), depth + 2)
            elif type(value) is list:
                self.add((path, key), f"expected a single {slot.type_name}, not an array")
            else:
                self.value(value, slot, (path, key), depth + 1)
        for name, keys in shape.required:
            for k in keys:
                if k in node:
                    break
            else:
                self.add((path, name), f"required element '{name}' of {shape.label} is missing")

    def odd_key(self, key: Any, value: Any, shape: _Shape, path: Path, depth: int, is_resource: bool) -> None:
        if not self.key_ok(key, path):
            return
        if key.startswith("_") and key[1:] in shape.slots:
            slot = shape.slots[key[1:]]
            if slot.kind == _PRIMITIVE:  # a primitive's id/extension sibling: an Element, or an array of them
                self.sibling(value, slot.is_list, (path, key), depth + 1)
            else:  # not FHIR JSON; the model refuses it
                self.any(value, (path, key), depth + 1)
        elif not (is_resource and key == "resourceType"):
            hint = difflib.get_close_matches(key, list(shape.slots), n=1)
            did = f" (did you mean '{hint[0]}'?)" if hint else ""
            self.add((path, key), f"unknown element '{key}': not an element of {shape.label}{did}")

    def sibling(self, value: Any, is_list: bool, path: Path, depth: int) -> None:
        if not is_list:
            return self.value(value, _ELEMENT, path, depth)
        if type(value) is not list:
            return self.add(path, f"expected an array of Element, got {_json_type(value)} {_preview(value)}")
        for i, item in enumerate(value):
            if item is not None:  # null lines an item up with a value that has no extension
                self.value(item, _ELEMENT, (path[0], path[1], i), depth + 1)

    def value(self, value: Any, slot: _Slot, path: Path, depth: int) -> None:
        if value is None:
            self.add(path, "null is not allowed: leave the element out instead")
        elif slot.kind == _PRIMITIVE:
            problem = slot.check(value)  # type: ignore[misc]
            if problem:
                self.add(path, problem)
            elif slot.codes is not None and value not in slot.codes:
                self.add(path, f"{_preview(value)} is not one of {slot.codes_text}")
        elif type(value) is not dict:
            self.add(path, f"expected a JSON object ({slot.type_name}), got {_json_type(value)} {_preview(value)}")
        elif slot.kind == _RESOURCE:
            rt = value.get("resourceType")
            if rt in SERVED:
                self.obj(value, self.shapes[rt], path, depth, is_resource=True)
            else:
                self.any(value, path, depth)
        else:
            if slot.ref_mode:
                self.reference(value, slot, path)
            if slot.codes is not None:
                self.coded(value, slot, path)
            if slot.paid:
                self.scale(value, path)
            self.obj(value, self.shapes[slot.type_name], path, depth)

    def scale(self, money: dict, path: Path) -> None:
        """An amount paid or allocated has no more decimal places than its currency's ISO 4217 minor unit."""
        amount: Any = money.get("value")
        currency = money.get("currency")
        if type(currency) is not str or (units := minor_unit(currency)) is None or _decimal_check(amount) is not None:
            return  # no currency, one without a minor unit, or a value refused on its own
        places = fraction_digits(amount)
        if places > units:
            self.add(
                (path, "value"),
                f"{plain_text(amount)} {currency} has {places} decimal places: an amount paid or allocated keeps to "
                f"its currency's minor unit, {units} for {currency} (ISO 4217)",
            )

    def coded(self, value: dict, slot: _Slot, path: Path) -> None:
        """A required binding on a Coding or CodeableConcept: some coding must carry an allowed code."""
        codings = value.get("coding") if slot.type_name == "CodeableConcept" else [value]
        if type(codings) is list and any(type(c) is dict and c.get("code") in slot.codes for c in codings):  # type: ignore[operator]
            return
        self.add(path, f"needs a coding whose code is one of {slot.codes_text}")

    def reference(self, value: dict, slot: _Slot, path: Path) -> None:
        if slot.ref_mode == _CODEABLE_REFERENCE:
            value, path = value.get("reference"), (path, "reference")  # type: ignore[assignment]
            if type(value) is not dict:
                return
        ref = value.get("reference")
        if type(ref) is not str:
            return
        said, named = value.get("type"), typed_reference(ref)
        if type(said) is str and named is not None and said != named and said.rsplit("/", 1)[-1] != named:
            self.add(
                (path, "type"),
                f"'{said}' disagrees with the reference '{ref}', which points at a {named}: "
                f"make type {named} or leave it out",
            )
        if slot.targets is None:
            return
        # Only a relative literal reference names its type; the others are not checked against the targets.
        parsed = relative_reference(ref)
        if parsed is not None and parsed[0] not in slot.targets:
            allowed = " | ".join(sorted(slot.targets))
            self.add(
                (path, "reference"), f"'{ref}' points at a {parsed[0]}, but this element may only reference {allowed}"
            )

    def key_ok(self, key: Any, path: Path) -> bool:
        if type(key) is str and not key.startswith("$") and "." not in key and "\x00" not in key:
            return True
        self.add(
            (path, key),
            f"the key {key!r} is not allowed (keys may not start with '$' or contain '.'); FHIR element names never do",
        )
        return False

    def any(self, value: Any, path: Path, depth: int) -> None:
        """Structure the spec does not describe here: only the storage-safety checks."""
        if type(value) is dict:
            if depth > MAX_DEPTH:
                return self.deep(path)
            for key, v in value.items():
                if self.key_ok(key, path):
                    self.any(v, (path, key), depth + 1)
        elif type(value) is list:
            if depth > MAX_DEPTH:
                return self.deep(path)
            for i, v in enumerate(value):
                self.any(v, (path[0], path[1], i) if type(path) is tuple and len(path) == 2 else path, depth + 1)
        elif type(value) is str:
            if len(value) > MAX_STRING_BYTES // 4 and len(value.encode()) > MAX_STRING_BYTES:
                self.add(path, f"string of {len(value.encode())} bytes exceeds the {MAX_STRING_BYTES}-byte limit")
        elif type(value) is Decimal or type(value) is float:
            problem = _decimal_check(value)
            if problem:
                self.add(path, problem)

    def deep(self, path: Path) -> None:
        if not self.too_deep:
            self.add(path, f"nested deeper than {MAX_DEPTH} levels; flatten the document")
        self.too_deep = True


# ---- fhir.resources, as an optional second opinion

_MISSING = ("missing", "model_field_validation.missing")


def _loc_expression(resource_type: str, loc: tuple[Any, ...]) -> str:
    out = resource_type
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


# The specification page's changes to R5 (app/fhir/delta.py), as the model check needs them: per resource type,
# the elements it adds (a tree of JSON keys: the added element's key maps to None) and the ones it makes optional.
def _key_tree(paths: Sequence[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        *parents, leaf = path.split(".")[1:]
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None
        element = spec().element(path)
        if element is not None and element.types[0] in PRIMITIVE_SCALARS:
            node["_" + leaf] = None  # its primitive extension sibling
    return tree


@cache
def _page_added() -> dict[str, dict[str, Any]]:
    return {t: _key_tree(delta.added(t)) for t in SERVED_RESOURCES if delta.added(t)}


@cache
def _page_optional() -> dict[str, frozenset[tuple[str, ...]]]:
    return {
        t: frozenset(tuple(p.split(".")[1:]) for p in delta.relaxed(t)) for t in SERVED_RESOURCES if delta.relaxed(t)
    }


def _without(node: Any, tree: dict[str, Any]) -> Any:
    """`node` without the keys of `tree` (a copy along them; the rest shared)."""
    if type(node) is list:
        return [_without(item, tree) for item in node]
    if type(node) is not dict:
        return node
    return {k: v if k not in tree else _without(v, tree[k]) for k, v in node.items() if tree.get(k, {}) is not None}


def r5_view(resource_type: str, doc: dict) -> dict:
    """What fhir.resources' R5 model is shown: the resource (and its contained resources) without the elements the
    specification page adds. The walk has checked those against their declared types, with their own paths."""
    added = _page_added()
    tree = added.get(resource_type)
    if tree is not None:
        doc = _without(doc, tree)
    contained = doc.get("contained")
    if type(contained) is list and any(type(r) is dict and r.get("resourceType") in added for r in contained):
        views = [
            r5_view(r["resourceType"], r) if type(r) is dict and r.get("resourceType") in SERVED else r
            for r in contained
        ]
        doc = {**doc, "contained": views}
    return doc


def _optional_on_page(resource_type: str, doc: dict, loc: tuple[Any, ...]) -> bool:
    """A `missing` error at an element the specification page makes optional (`amount`), also in `contained`."""
    if len(loc) > 2 and loc[0] == "contained" and type(loc[1]) is int:
        contained = doc.get("contained")
        inner = contained[loc[1]] if type(contained) is list and loc[1] < len(contained) else None
        if type(inner) is dict and type(inner.get("resourceType")) is str:
            return _optional_on_page(inner["resourceType"], inner, loc[2:])
        return False
    return tuple(p for p in loc if type(p) is not int) in _page_optional().get(resource_type, ())


# fhir.resources looks the class up by importing its module each time: a third of a millisecond per resource.
_model_class = cache(get_fhir_model_class)


def model_issues(resource_type: str, doc: dict, already: Sequence[str] = ()) -> list[dict[str, Any]]:
    """fhir.resources' R5 model verdict as issues, minus those at (or under) an expression in `already`.

    The model is R5's; FinGate's PaymentReconciliation is the specification page's. The model sees the resource
    without the page's added elements (`r5_view`), and its `missing` verdict on an element the page makes optional
    is dropped: every other verdict stands, at the path the client wrote.
    """
    try:
        _model_class(resource_type).model_validate(r5_view(resource_type, doc))
        return []
    except ValidationError as e:
        errors = e.errors()
    except RecursionError:
        return [outcome_issue(f"{resource_type}: nested too deep to check", resource_type)]
    covered = tuple(already)
    issues = []
    for err in errors:
        expr = _loc_expression(resource_type, err["loc"])
        if any(expr == c or expr.startswith((c + ".", c + "[")) for c in covered):
            continue
        if err["type"] in _MISSING and _optional_on_page(resource_type, doc, err["loc"]):
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in _MISSING:
            msg = "required element is missing"
        elif "input" in err and not isinstance(err["input"], dict | list):
            msg = f"{_preview(err['input'])}: {msg}"
        issues.append(outcome_issue(f"{expr}: {msg}", expr))
        covered += (expr,)
    return issues


# ---- entry point


def validate(resource_type: str, resource: dict, *, model_check: bool = True, invariants: bool = True) -> dict:
    """The resource to store (the client's JSON with `resourceType` set), or BAD_USER_INPUT listing every problem.

    Three passes: a spec-driven walk (required codes, reference targets, injection keys, sizes,
    decimal digits; things fhir.resources does not check), the fhir.resources R5 model, the
    product's validation contract, and, on a document both accept, the R5 invariants (FHIRPath
    expressions written for well-formed data). The model costs ~3 ms per 10-item Claim (a Python
    validator per nested object); `model_check=False` and `invariants=False` are for measurements only.
    """
    if resource_type not in SERVED:
        served = ", ".join(SERVED_RESOURCES)
        raise _bad(
            [
                outcome_issue(
                    f"{resource_type} is not a resource type this server serves (served: {served})", resource_type
                )
            ]
        )
    if type(resource) is not dict:
        raise _bad(
            [outcome_issue(f"{resource_type}: expected a JSON object, got {_json_type(resource)}", resource_type)]
        )
    given = resource.get("resourceType", resource_type)
    if given != resource_type:
        raise _bad(
            [
                outcome_issue(
                    f"{resource_type}.resourceType: {_preview(given)} does not match {resource_type}: send a {resource_type} here",
                    f"{resource_type}.resourceType",
                )
            ]
        )
    doc = {"resourceType": resource_type, **resource}
    walk = _Walk()
    walk.obj(doc, walk.shapes[resource_type], resource_type, 1, is_resource=True)
    issues = walk.issues
    if model_check and not walk.too_deep:  # the model recurses in Python per level: never hand it what the walk refused
        issues += model_issues(resource_type, doc, walk.where)
    if invariants and not issues:
        issues = invariant_issues(resource_type, doc)
    if issues:
        raise _bad(issues)
    return doc


def _bad(issues: list[dict[str, Any]]) -> FinGateError:
    more = f" (and {len(issues) - 1} more problem{'s' if len(issues) > 2 else ''})" if len(issues) > 1 else ""
    return FinGateError(BAD_USER_INPUT, issues[0]["diagnostics"] + more, issues=issues)
