"""FHIR search as data: `_search` index values computed at write time, and Mongo filters, sorts and cursors over them."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, DecimalException, localcontext
from functools import cache
from typing import Any

from bson.decimal128 import Decimal128

from app.errors import FinGateError, bad_input
from app.fhir.model import COMPARTMENT_SELF, compartment_only_params, patient_compartment, spec

SEARCH = "_search"
Entry = Any  # one index value: a dict for token/date/quantity, a string otherwise
Converter = Callable[[Any], list[Entry]]

# -- values -------------------------------------------------------------------------------

_MIN = datetime(1, 1, 1, tzinfo=UTC)
_MAX = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)  # BSON dates keep milliseconds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
DATE_FORMS = "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.fff]][Z|+hh:mm|-hh:mm] (no timezone means UTC)"
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_HISTORY = re.compile(r"/_history/[^/]+$")
_ISO4217 = "urn:iso:std:iso:4217"
_STEP_MS, _STEP_S, _STEP_MIN, _STEP_DAY = (
    timedelta(milliseconds=1),
    timedelta(seconds=1),
    timedelta(minutes=1),
    timedelta(days=1),
)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# Enough digits that arithmetic on 34-digit Decimal128 values is exact; the Decimal128 conversion traps the rest.
_EXACT = 80


def normalize(text: str) -> str:
    """FHIR string matching: case-folded, accents (combining marks) removed."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _add_months(d: datetime, months: int) -> datetime:
    y, m = divmod(d.month - 1 + months, 12)
    return d.replace(year=d.year + y, month=m + 1)


def parse_date(text: str) -> tuple[datetime, datetime]:
    """The implicit range [lo, hi) of a FHIR date/dateTime/instant, in UTC; ValueError if not one."""
    m = _DATE.fullmatch(text)
    if m is None:
        raise ValueError(text)
    g = m.groupdict()
    offset = timedelta(0)
    if g["tz"] and g["tz"] != "Z":
        offset = timedelta(hours=int(g["tz"][1:3]), minutes=int(g["tz"][4:6])) * (1 if g["tz"][0] == "+" else -1)
    fraction = (g["f"] or "")[:3]
    lo = datetime(
        int(g["y"]), int(g["m"] or 1), int(g["d"] or 1), int(g["H"] or 0), int(g["M"] or 0), int(g["S"] or 0),
        int(fraction.ljust(3, "0")) * 1000, tzinfo=UTC,
    ) - offset  # fmt: skip
    try:
        if g["d"]:
            hi = lo + (_STEP_MS if g["f"] else _STEP_S if g["S"] else _STEP_MIN if g["M"] else _STEP_DAY)
        else:
            hi = _add_months(lo, 1 if g["m"] else 12)
    except (OverflowError, ValueError):
        hi = _MAX
    return lo, min(hi, _MAX)


def _date_range(value: Any) -> list[Entry]:
    if isinstance(value, datetime):
        lo = value if value.tzinfo else value.replace(tzinfo=UTC)
        return [{"lo": lo, "hi": lo + timedelta(milliseconds=1)}]
    try:
        lo, hi = parse_date(value)
    except (ValueError, TypeError, OverflowError):
        return []  # an unparseable stored value is simply not searchable
    return [{"lo": lo, "hi": hi}]


def _period(value: Any) -> list[Entry]:
    if not isinstance(value, dict) or not (value.get("start") or value.get("end")):
        return []
    start = _date_range(value["start"]) if value.get("start") else [{"lo": _MIN}]
    end = _date_range(value["end"]) if value.get("end") else [{"hi": _MAX}]
    if not start or not end:
        return []
    return [{"lo": start[0]["lo"], "hi": end[0]["hi"]}]


def to_decimal128(value: Decimal) -> Decimal128:
    """Exactly, or DecimalException (more than 34 digits, out of range)."""
    return Decimal128(value)


def _token(system: Any, code: Any) -> list[Entry]:
    return [{"s": system, "c": code}] if isinstance(code, str) and code else []


def _code(value: Any) -> list[Entry]:
    return _token(None, value)


def _coding(value: Any) -> list[Entry]:
    return _token(value.get("system"), value.get("code")) if isinstance(value, dict) else []


def _codeable_concept(value: Any) -> list[Entry]:
    if not isinstance(value, dict):
        return []
    return [e for coding in value.get("coding") or () for e in _coding(coding)]


def _identifier(value: Any) -> list[Entry]:
    return _token(value.get("system"), value.get("value")) if isinstance(value, dict) else []


def _boolean(value: Any) -> list[Entry]:
    return _token(None, "true" if value else "false") if isinstance(value, bool) else []


def _contact_point(value: Any) -> list[Entry]:
    return _token(None, value.get("value")) if isinstance(value, dict) else []


def _string(value: Any) -> list[Entry]:
    return [normalize(value)] if isinstance(value, str) and value else []


def _parts(*names: str) -> Converter:
    def convert(value: Any) -> list[Entry]:
        if not isinstance(value, dict):
            return []
        out: list[Entry] = []
        for name in names:
            part = value.get(name)
            for item in part if isinstance(part, list) else [part]:
                out.extend(_string(item))
        return out

    return convert


def _reference(value: Any) -> list[Entry]:
    ref = value.get("reference") if isinstance(value, dict) else None
    return [_HISTORY.sub("", ref)] if isinstance(ref, str) and ref else []


def _uri(value: Any) -> list[Entry]:
    return [value] if isinstance(value, str) and value else []


def _amount(value: Any, system: Any, code: Any) -> list[Entry]:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        try:
            return [{"v": to_decimal128(Decimal(value)), "s": system, "c": code}]
        except DecimalException:
            return []
    return []


def _money(value: Any) -> list[Entry]:
    if not isinstance(value, dict):
        return []
    currency = value.get("currency")
    return _amount(value.get("value"), _ISO4217 if currency else None, currency)


def _quantity(value: Any) -> list[Entry]:
    if not isinstance(value, dict):
        return []
    return _amount(value.get("value"), value.get("system"), value.get("code") or value.get("unit"))


def _number(value: Any) -> list[Entry]:
    return _amount(value, None, None)


def _timing(value: Any) -> list[Entry]:
    """A Timing's dates: each `event`, and `repeat.boundsPeriod`."""
    if not isinstance(value, dict):
        return []
    events = [e for when in value.get("event") or () for e in _date_range(when)]
    repeat = value.get("repeat")
    return events + (_period(repeat.get("boundsPeriod")) if isinstance(repeat, dict) else [])


_STRINGISH: dict[str, Converter] = dict.fromkeys(
    ("string", "markdown", "code", "id", "uri", "url", "canonical"), _string
)
_URIS: dict[str, Converter] = dict.fromkeys(("uri", "url", "canonical", "oid", "uuid"), _uri)
_NUMBERS: dict[str, Converter] = {
    "decimal": _number,
    "integer": _number,
    "positiveInt": _number,
    "unsignedInt": _number,
}

# Search parameter type -> FHIR type of the element -> its index entries.
CONVERTERS: dict[str, dict[str, Converter]] = {
    "token": {
        **dict.fromkeys(("code", "string", "id", "uri", "url", "canonical", "oid", "uuid"), _code),
        "boolean": _boolean,
        "Coding": _coding,
        "CodeableConcept": _codeable_concept,
        "Identifier": _identifier,
        "ContactPoint": _contact_point,
    },
    "string": {
        **_STRINGISH,
        "HumanName": _parts("text", "family", "given", "prefix", "suffix"),
        "Address": _parts("text", "line", "city", "district", "state", "postalCode", "country"),
    },
    "date": {
        "date": _date_range,
        "dateTime": _date_range,
        "instant": _date_range,
        "Period": _period,
        "Timing": _timing,
    },
    "reference": {"Reference": _reference, "canonical": _uri, "uri": _uri},
    "quantity": {
        "Money": _money,
        **dict.fromkeys(("Quantity", "Duration", "Age", "Distance", "Count", "SimpleQuantity"), _quantity),
        **_NUMBERS,
    },
    "number": _NUMBERS,
    "uri": _URIS,
}


def _raw(value: Any) -> list[Entry]:
    return [value] if isinstance(value, str) and value else []


def _raw_parts(*names: str) -> Converter:
    def convert(value: Any) -> list[Entry]:
        if not isinstance(value, dict):
            return []
        parts = [value.get(name) for name in names]
        return [item for part in parts for item in (part if isinstance(part, list) else [part]) if _raw(item)]

    return convert


def _display(value: Any) -> list[Entry]:
    return _string(value.get("display")) if isinstance(value, dict) else []


def _concept_text(value: Any) -> list[Entry]:
    if not isinstance(value, dict):
        return []
    return [*_string(value.get("text")), *(e for coding in value.get("coding") or () for e in _display(coding))]


def _identifier_text(value: Any) -> list[Entry]:
    return _concept_text(value.get("type")) if isinstance(value, dict) else []


def _reference_identifier(value: Any) -> list[Entry]:
    return _identifier(value.get("identifier")) if isinstance(value, dict) else []


# (search parameter type, modifier) -> FHIR type -> the entries of `_search.<code>:<modifier>`, for the modifiers
# the main index cannot answer: `:exact` (the text as written), `:text` (a code's display), `:identifier`.
MODIFIED: dict[tuple[str, str], dict[str, Converter]] = {
    ("string", "exact"): {
        **dict.fromkeys(_STRINGISH, _raw),
        "HumanName": _raw_parts("text", "family", "given", "prefix", "suffix"),
        "Address": _raw_parts("text", "line", "city", "district", "state", "postalCode", "country"),
    },
    ("token", "text"): {"Coding": _display, "CodeableConcept": _concept_text, "Identifier": _identifier_text},
    ("reference", "identifier"): {"Reference": _reference_identifier},
}


def _min_str(entries: list[Entry]) -> Any:
    return min(entries)


# Search parameter type -> the single sort value of a resource's entries (FHIR: the lowest, for keyset paging).
SORT_VALUE: dict[str, Callable[[list[Entry]], Any]] = {
    "token": lambda es: min(e["c"] for e in es),
    "string": _min_str,
    "reference": _min_str,
    "uri": _min_str,
    "date": lambda es: min(e["lo"] for e in es),
    "quantity": lambda es: min((e["v"] for e in es), key=Decimal128.to_decimal),
    "number": lambda es: min((e["v"] for e in es), key=Decimal128.to_decimal),
}

# -- parameters, compiled once per resource type ---------------------------------------------

_EXPRESSION = re.compile(
    r"(?P<root>[A-Za-z]+)(?P<path>(?:\.[A-Za-z]+)*)(?:\.ofType\((?P<of>[A-Za-z]+)\))?"
    r"(?:\.where\(resolve\(\) is (?P<type>[A-Za-z]+)\)|\.where\((?P<field>[a-z]+)='(?P<literal>[^']*)'\))?"
)
# `Patient.deceased.exists() and Patient.deceased != false`: a token `true` or `false` for every resource
_EXISTS = re.compile(r"(?P<path>[A-Za-z]+(?:\.[A-Za-z]+)+)\.exists\(\) and (?P=path) != false")


@dataclass(frozen=True)
class Param:
    """One search parameter of one resource type, ready to index and query."""

    code: str
    type: str  # token | string | date | reference | quantity | number | uri | id
    key: str  # the `_search.<code>` list (`_id` for `_id`)
    sort_key: str
    targets: tuple[str, ...]
    extractors: tuple[Callable[[dict[str, Any]], list[Entry]], ...]
    # modifier -> the extractors of its own index values (`_search.<code>:<modifier>`), see MODIFIED
    modified: tuple[tuple[str, tuple[Callable[[dict[str, Any]], list[Entry]], ...]], ...] = ()
    # (code, code system) a `code` element implies (its required binding's): indexed without a system,
    # matched by `system|code` all the same
    implicit: frozenset[tuple[str, str]] = frozenset()


def _walker(steps: list[tuple[str, ...]], convert: Converter) -> Callable[[dict[str, Any]], list[Entry]]:
    def extract(resource: dict[str, Any]) -> list[Entry]:
        values: list[Any] = [resource]
        for keys in steps:
            found: list[Any] = []
            for value in values:
                if isinstance(value, dict):
                    for k in keys:
                        child = value.get(k)
                        if isinstance(child, list):
                            found.extend(child)
                        elif child is not None:
                            found.append(child)
            values = found
        return [e for v in values for e in convert(v)]

    return extract


def _reference_type(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    refs = _reference(value)
    parts = refs[0].split("/") if refs else []
    return parts[-2] if len(parts) >= 2 else value.get("type")


def _only(target: str, convert: Converter) -> Converter:
    """`.where(resolve() is Patient)`: the references whose type we can tell is `target`."""
    return lambda value: convert(value) if _reference_type(value) == target else []


def _where(field: str, literal: str, convert: Converter) -> Converter:
    """`.where(system='email')`: the values whose `field` is `literal`."""
    return lambda value: convert(value) if isinstance(value, dict) and value.get(field) == literal else []


Extractor = Callable[[dict[str, Any]], list[Entry]]


def _steps(resource_type: str, code: str, root: str, dotted: str) -> tuple[list[tuple[str, ...]], Any]:
    """The JSON keys of each step of `root.dotted` (a choice step has one per type), and the last element."""
    path = root.replace("Resource", resource_type)
    steps: list[tuple[str, ...]] = []
    el = None
    for name in dotted.split("."):
        path += "." + name
        el = spec().element(path)
        if el is None:
            raise RuntimeError(f"{resource_type}.{code}: no element {path}")
        steps.append(tuple(dict.fromkeys(el.json_name(t) for t in el.types)))
    return steps, el


def _exists_not_false(walk: Extractor) -> Extractor:
    return lambda resource: _boolean(any(walk(resource)))


def _extractors(
    resource_type: str, code: str, ptype: str, expression: str, converters: dict[str, Converter] | None = None
) -> tuple[list[Extractor], set[tuple[str, str]]]:
    """The functions reading a parameter's index entries, and the (code, system) pairs its `code` elements imply
    (`converters`: a modifier's own, which skip the FHIR types they lack).

    FHIRPath forms: `T.a.b`, a `|` union of them, `.ofType(X)` of a choice, `.where(resolve() is X)` of a
    reference, `.where(field='literal')`, optionally in parentheses; and `T.a.exists() and T.a != false`.
    """
    out: list[Extractor] = []
    implicit: set[tuple[str, str]] = set()
    for part in expression.split("|"):
        part = part.strip()
        if part.startswith("(") and part.endswith(")"):
            part = part[1:-1].strip()
        exists = _EXISTS.fullmatch(part)
        if exists is not None and ptype == "token" and exists["path"].startswith(resource_type + "."):
            if converters is not None:  # a modifier's own values come from elements, not from this test
                continue
            root, _, dotted = exists["path"].partition(".")
            steps, _ = _steps(resource_type, code, root, dotted)
            out.append(_exists_not_false(_walker(steps, lambda v: [v is not False])))
            continue
        m = _EXPRESSION.fullmatch(part)
        if m is None or m["root"] not in (resource_type, "Resource"):
            raise RuntimeError(f"{resource_type}.{code}: unsupported FHIRPath {part!r}")
        steps, el = _steps(resource_type, code, m["root"], m["path"].lstrip("."))
        types = [t for t in el.types if m["of"] in (None, t)]
        if not types:
            raise RuntimeError(f"{resource_type}.{code}: {el.path} has no type {m['of']}")
        if ptype == "token" and "code" in types:
            implicit.update(el.systems)
        for fhir_type in types:
            convert = (converters if converters is not None else CONVERTERS[ptype]).get(fhir_type)
            if convert is None and converters is not None:
                continue
            if convert is None:
                raise RuntimeError(f"{resource_type}.{code}: no {ptype} index for FHIR type {fhir_type}")
            if m["type"]:
                convert = _only(m["type"], convert)
            if m["field"]:
                convert = _where(m["field"], m["literal"], convert)
            out.append(_walker([*steps[:-1], (el.json_name(fhir_type),)], convert))
    return out, implicit


def _param(resource_type: str, code: str, ptype: str, expression: str, targets: tuple[str, ...] = ()) -> Param:
    extractors, implicit = _extractors(resource_type, code, ptype, expression)
    return Param(
        code=code,
        type=ptype,
        key=f"{SEARCH}.{code}",
        sort_key=f"{SEARCH}.{code}_sort",
        targets=targets,
        extractors=tuple(extractors),
        implicit=frozenset(implicit),
        modified=tuple(
            (modifier, tuple(_extractors(resource_type, code, ptype, expression, table)[0]))
            for (kind, modifier), table in MODIFIED.items()
            if kind == ptype
        ),
    )


@cache
def search_params(resource_type: str) -> dict[str, Param]:
    """Every search parameter of a served type by code: its R5 ones plus `_id` and `_lastUpdated`."""
    if resource_type not in spec().search_params:
        raise bad_input(f"{resource_type} is not a served resource type")
    out = {
        "_id": Param("_id", "id", "_id", "_id", (), ()),
        "_lastUpdated": _param(resource_type, "_lastUpdated", "date", "Resource.meta.lastUpdated"),
    }
    for code, p in spec().search_params[resource_type].items():
        out[code] = _param(resource_type, code, p.type, p.expression, p.targets)
    return out


@cache
def indexed_params(resource_type: str) -> dict[str, Param]:
    """What a stored document's `_search` holds: the search parameters and the compartment-only ones."""
    extra = {
        p.code: _param(resource_type, p.code, p.type, p.expression)
        for p in compartment_only_params(resource_type)
        if p.code not in search_params(resource_type)
    }
    return {**search_params(resource_type), **extra}


def _lookup(resource_type: str, code: Any, what: str = "search parameter") -> Param:
    """The parameter of an R5 code (the GraphQL layer has already turned argument names into codes)."""
    p = search_params(resource_type).get(code) if isinstance(code, str) else None
    if p is None:
        known = ", ".join(search_params(resource_type))
        raise bad_input(f"Unknown {what} {code!r} for {resource_type}; known: {known}", expression=str(code))
    return p


# -- writes -----------------------------------------------------------------------------------


def _dedupe(entries: list[Entry]) -> list[Entry]:
    if len(entries) < 2:
        return entries
    return list({repr(e): e for e in entries}.values())


def index_values(resource_type: str, resource: dict[str, Any]) -> dict[str, Any]:
    """The hidden `_search` sub-document of a resource about to be stored."""
    out: dict[str, Any] = {}
    for p in indexed_params(resource_type).values():
        entries = _dedupe([e for extract in p.extractors for e in extract(resource)])
        if entries:
            out[p.code] = entries
            out[f"{p.code}_sort"] = SORT_VALUE[p.type](entries)
        for modifier, extractors in p.modified:
            more = _dedupe([e for extract in extractors for e in extract(resource)])
            if more:
                out[f"{p.code}:{modifier}"] = more
    return out


# -- queries ----------------------------------------------------------------------------------


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` not escaped by a backslash; escapes stay for `_unescape`."""
    parts, current, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def _prefixed(value: str) -> tuple[str, str]:
    if value[:2] in PREFIXES and len(value) > 2 and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


def _id_query(p: Param, value: str) -> dict[str, Any]:
    # The resource's own `id`: `_id` is tenant-scoped (`<tenant>/<id>`, see app.store).
    return {"id": _unescape(value)}


def _token_query(p: Param, value: str) -> dict[str, Any]:
    parts = [_unescape(x) for x in _split(value, "|")]
    if len(parts) == 1:
        return {f"{p.key}.c": parts[0]}
    if len(parts) > 2 or parts == ["", ""]:
        raise bad_input(
            f"{p.code}: {value!r} is not a token; use code, system|code, |code or system|", expression=p.code
        )
    system, code = parts
    if not code:
        implied = sorted(c for c, s in p.implicit if s == system)
        explicit = {f"{p.key}.s": system}
        if not implied:
            return explicit
        return {"$or": [explicit, {p.key: {"$elemMatch": {"s": None, "c": {"$in": implied}}}}]}
    if (code, system) in p.implicit:  # a `code` element's value is stored without its (implied) system
        return {p.key: {"$elemMatch": {"s": {"$in": [system, None]}, "c": code}}}
    return {p.key: {"$elemMatch": {"s": system or None, "c": code}}}


def _upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with `prefix` (code-point order = BSON's)."""
    chars = list(prefix)
    while chars and chars[-1] == "\U0010ffff":
        chars.pop()
    if not chars:
        return None
    nxt = ord(chars[-1]) + 1
    chars[-1] = chr(0xE000 if nxt == 0xD800 else nxt)
    return "".join(chars)


def _string_query(p: Param, value: str) -> dict[str, Any]:
    prefix = normalize(_unescape(value))
    bounds: dict[str, Any] = {"$gte": prefix}
    upper = _upper_bound(prefix)
    if upper is not None:
        bounds["$lt"] = upper
    return {p.key: {"$elemMatch": bounds}}


def _reference_query(p: Param, value: str) -> dict[str, Any]:
    ref = _HISTORY.sub("", _unescape(value))
    if "://" in ref or ref.startswith(("urn:", "#")):
        return {p.key: ref}
    parts = ref.split("/")
    if len(parts) == 1:
        return {p.key: {"$in": [f"{t}/{ref}" for t in p.targets]}}
    if len(parts) != 2 or not all(parts):
        raise bad_input(
            f"{p.code}: {value!r} is not a reference; use Type/id, id or an absolute URL", expression=p.code
        )
    if p.targets and parts[0] not in p.targets:
        raise bad_input(f"{p.code}: {value!r} can never match; it points at {', '.join(p.targets)}", expression=p.code)
    return {p.key: ref}


def _uri_query(p: Param, value: str) -> dict[str, Any]:
    return {p.key: _unescape(value)}


def _bad_date(p: Param, value: str) -> FinGateError:
    return bad_input(
        f"{p.code}: {value!r} is not a date; use {DATE_FORMS}, optionally prefixed by {', '.join(PREFIXES)}",
        expression=p.code,
    )


def _approximately(lo: datetime, hi: datetime) -> tuple[datetime, datetime]:
    """`ap`: the value's range widened by 10% of its distance from now (FHIR's suggestion), at least a day."""
    now = datetime.now(UTC)
    gap = max(abs(now - lo), abs(now - hi)) / 10
    gap = max(gap, timedelta(days=1))
    return (lo - gap if lo - _MIN > gap else _MIN), (hi + gap if _MAX - hi > gap else _MAX)


def _eq(lo: datetime, hi: datetime) -> dict[str, Any]:
    return {"lo": {"$gte": lo}, "hi": {"$lte": hi}}


def _ap(lo: datetime, hi: datetime) -> list[dict[str, Any]]:
    alo, ahi = _approximately(lo, hi)
    return [{"lo": {"$lt": ahi}, "hi": {"$gt": alo}}]


def _any_of(key: str, alternatives: list[dict[str, Any]]) -> dict[str, Any]:
    """Some entry meets one of the alternatives. As an `$or` of `$elemMatch`es (the same thing), not an
    `$or` inside `$elemMatch`: SecantusDB lacks the latter, and each branch can use the index."""
    clauses = [{key: {"$elemMatch": a}} for a in alternatives]
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}


# Date prefix -> alternative conditions on one stored range [lo, hi) given the value's range (FHIR R5 search.html#prefix).
DATE_PREFIXES: dict[str, Callable[[datetime, datetime], list[dict[str, Any]]]] = {
    "eq": lambda lo, hi: [_eq(lo, hi)],
    "ne": lambda lo, hi: [{"lo": {"$lt": lo}}, {"hi": {"$gt": hi}}],
    "gt": lambda lo, hi: [{"hi": {"$gt": hi}}],
    "lt": lambda lo, hi: [{"lo": {"$lt": lo}}],
    "ge": lambda lo, hi: [{"hi": {"$gt": hi}}, _eq(lo, hi)],
    "le": lambda lo, hi: [{"lo": {"$lt": lo}}, _eq(lo, hi)],
    "sa": lambda lo, hi: [{"lo": {"$gte": hi}}],
    "eb": lambda lo, hi: [{"hi": {"$lte": lo}}],
    "ap": _ap,
}


def _date_query(p: Param, value: str) -> dict[str, Any]:
    prefix, text = _prefixed(value)
    try:
        lo, hi = parse_date(text)
    except (ValueError, OverflowError):
        raise _bad_date(p, value) from None
    return _any_of(p.key, DATE_PREFIXES[prefix](lo, hi))


QUANTITY_FORMS = "[prefix]number, [prefix]number|system|code or [prefix]number||code (Money: system urn:iso:std:iso:4217, code the currency)"
_D = to_decimal128


def _number_ap(n: Decimal, half: Decimal) -> list[dict[str, Any]]:
    delta = max(abs(n) / 10, half)
    return [{"$gte": _D(n - delta), "$lte": _D(n + delta)}]


# Number prefix -> alternative conditions on one stored value given the number and half its last digit:
# `eq` is the implied precision range, the others compare exactly (FHIR R5 search.html#number).
NUMBER_PREFIXES: dict[str, Callable[[Decimal, Decimal], list[dict[str, Any]]]] = {
    "eq": lambda n, h: [{"$gte": _D(n - h), "$lt": _D(n + h)}],
    "ne": lambda n, h: [{"$lt": _D(n - h)}, {"$gte": _D(n + h)}],
    "gt": lambda n, h: [{"$gt": _D(n)}],
    "sa": lambda n, h: [{"$gt": _D(n)}],
    "lt": lambda n, h: [{"$lt": _D(n)}],
    "eb": lambda n, h: [{"$lt": _D(n)}],
    "ge": lambda n, h: [{"$gte": _D(n)}],
    "le": lambda n, h: [{"$lte": _D(n)}],
    "ap": _number_ap,
}


def _number_query(p: Param, value: str) -> dict[str, Any]:
    prefix, text = _prefixed(value)
    parts = [_unescape(x) for x in _split(text, "|")]
    forms = QUANTITY_FORMS if p.type == "quantity" else "[prefix]number"
    if len(parts) not in ((1, 3) if p.type == "quantity" else (1,)) or not _NUMBER.fullmatch(parts[0]):
        raise bad_input(
            f"{p.code}: {value!r} is not a {p.type}; use {forms}, prefixes {', '.join(PREFIXES)}", expression=p.code
        )
    try:
        with localcontext(prec=_EXACT):
            number = Decimal(parts[0])
            half = Decimal(5).scaleb(int(number.as_tuple().exponent) - 1)
            ranges = NUMBER_PREFIXES[prefix](number, half)
    except DecimalException:
        raise bad_input(f"{p.code}: {value!r} does not fit a decimal128 (34 digits)", expression=p.code) from None
    unit = dict(zip(("s", "c"), parts[1:], strict=False))
    unit = {k: v for k, v in unit.items() if v}
    return _any_of(p.key, [{"v": r, **unit} for r in ranges])


# Search parameter type -> one value (after comma splitting) -> its Mongo clause.
QUERIES: dict[str, Callable[[Param, str], dict[str, Any]]] = {
    "id": _id_query,
    "token": _token_query,
    "string": _string_query,
    "date": _date_query,
    "reference": _reference_query,
    "quantity": _number_query,
    "number": _number_query,
    "uri": _uri_query,
}


def _checked(p: Param, value: Any) -> str:
    if not isinstance(value, str):
        raise bad_input(f"{p.code}: expected a string, got {type(value).__name__}", expression=p.code)
    try:
        value.encode()
    except UnicodeEncodeError:
        raise bad_input(f"{p.code}: the value is not valid Unicode text", expression=p.code) from None
    return value


Values = str | list[str]  # one value, or several that must all hold (FHIR's repeated parameter: AND)
Params = Mapping[str, Values]  # search parameter code -> its value(s)


def _values(p: Param, given: Any) -> list[str]:
    if isinstance(given, list | tuple):
        if not given:
            raise bad_input(f"{p.code}: an empty list of values", expression=p.code)
        return [_checked(p, v) for v in given]
    return [_checked(p, given)]


def compile_filter(resource_type: str, params: Params) -> dict[str, Any]:
    """The Mongo filter for search params (code -> a value, or a list of values): commas inside a value are OR,
    the values of a list AND (`created: ["ge2026-11-01", "lt2026-12-01"]`), several params AND."""
    clauses = []
    for code, given in params.items():
        p = _lookup(resource_type, code)
        for raw in _values(p, given):
            values = _split(raw, ",")
            if any(v == "" for v in values):
                raise bad_input(f"{p.code}: empty value in {raw!r}", expression=p.code)
            ors = [QUERIES[p.type](p, v) for v in values]
            clauses.append(ors[0] if len(ors) == 1 else {"$or": ors})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


# -- sorting and keyset paging ------------------------------------------------------------------


def _sort_fields(resource_type: str, sort: str | None) -> list[tuple[str, int, str]]:
    """(field, direction, param type) for each sort key, ending with `_id` (ties broken in the last key's direction)."""
    out: list[tuple[str, int, str]] = []
    for item in (sort or "").split(","):
        item = item.strip()
        if not item:
            continue
        direction = -1 if item.startswith("-") else 1
        p = _lookup(resource_type, item[1:] if direction == -1 else item, "sort parameter")
        if any(f == p.sort_key for f, _, _ in out):
            raise bad_input(f"_sort: {p.code} appears twice in {sort!r}", expression="_sort")
        out.append((p.sort_key, direction, p.type))
    if not any(f == "_id" for f, _, _ in out):
        # In the last key's direction: a one-key sort is then the `(key, _id)` index read either way.
        out.append(("_id", out[-1][1] if out else 1, "id"))
    return out


def compile_sort(resource_type: str, sort: str | None) -> list[tuple[str, int]]:
    """`_sort` (`status,-created`) as a Mongo sort on single-valued keys, `_id` breaking ties (the last key's way)."""
    return [(f, d) for f, d, _ in _sort_fields(resource_type, sort)]


def _dotted(doc: dict[str, Any], key: str) -> Any:
    value: Any = doc
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return {"d": (value - _EPOCH) // timedelta(milliseconds=1)}
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, Decimal):
        return {"n": str(value)}
    return value


def _decode_date(value: Any) -> datetime:
    if type(value["d"]) is not int:
        raise TypeError(value)
    return _EPOCH + timedelta(milliseconds=value["d"])


def _decode_number(value: Any) -> Decimal128:
    if not _NUMBER.fullmatch(value["n"]):
        raise ValueError(value)
    return Decimal128(Decimal(value["n"]))


# Search parameter type -> a cursor value back to what is stored (raising if tampered with).
_DECODE: dict[str, Callable[[Any], Any]] = {"date": _decode_date, "quantity": _decode_number, "number": _decode_number}


def _decode(ptype: str, value: Any) -> Any:
    if value is None and ptype != "id":
        return None
    if ptype in _DECODE:
        return _DECODE[ptype](value)
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def keyset_position(resource_type: str, sort: str | None, doc: dict[str, Any]) -> list[Any]:
    """A stored document's place in `sort` order (its sort keys, ending with `_id`), as JSON values."""
    return [_encode(_dotted(doc, f)) for f, _, _ in _sort_fields(resource_type, sort)]


def bad_cursor(why: str = "not a cursor of this server") -> FinGateError:
    return bad_input(
        f"_cursor: {why}; use a `first`, `previous`, `next` or `last` this server returned", expression="_cursor"
    )


def _after(field: str, direction: int, value: Any) -> dict[str, Any] | None:
    """Documents strictly after `value` on one key, in MongoDB's order (null and missing first; `_id` is never null)."""
    if direction == 1:
        return {field: {"$gt": value}} if value is not None else {field: {"$ne": None}}
    if value is None:
        return None
    return {field: {"$lt": value}} if field == "_id" else {"$or": [{field: {"$lt": value}}, {field: None}]}


def keyset_filter(resource_type: str, sort: str | None, position: list[Any], backward: bool = False) -> dict[str, Any]:
    """The documents strictly after `position` in `sort` order (strictly before it with `backward`)."""
    fields = _sort_fields(resource_type, sort)
    try:
        if not isinstance(position, list) or len(position) != len(fields):
            raise ValueError(position)
        values = [_decode(t, v) for (_, _, t), v in zip(fields, position, strict=True)]
    except (ValueError, TypeError, KeyError, AttributeError, DecimalException, OverflowError):
        raise bad_cursor("its position does not fit its sort") from None
    ors = []
    for i, (field, direction, _) in enumerate(fields):
        after = _after(field, -direction if backward else direction, values[i])
        if after is not None:
            ors.append({**{f: values[j] for j, (f, _, _) in enumerate(fields[:i])}, **after})
    if not ors:
        return {"_id": {"$in": []}}
    (first, direction, _), value = fields[0], values[0]
    if (-direction if backward else direction) == 1 and value is not None and len(fields) > 1:
        # The same set, with a range on the leading key: index bounds starting at the position, not at the start.
        return {"$and": [{first: {"$gte": value}}, {"$or": ors}]}
    return {"$or": ors}


def reversed_sort(order: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """`order` read from the other end (a `previous` or `last` page is fetched backwards, then turned)."""
    return [(f, -d) for f, d in order]


# -- references and indexes ------------------------------------------------------------------------


def reference_params(resource_type: str) -> list[str]:
    """The codes of the reference parameters of a type (the `_reference` choices of reverse lists)."""
    return [p.code for p in spec().reference_params(resource_type)]


def reference_key(resource_type: str, code: str) -> str:
    """The `_search` field holding a reference parameter's normalized `Type/id` strings."""
    p = _lookup(resource_type, code)
    if p.type != "reference":
        raise bad_input(
            f"{p.code} is not a reference parameter of {resource_type}; use one of {', '.join(reference_params(resource_type))}",
            expression=p.code,
        )
    return p.key


# Search parameter type -> the index on its `_search` list.
_INDEX: dict[str, Callable[[str], list[tuple[str, int]]]] = {
    "token": lambda k: [(f"{k}.c", 1), (f"{k}.s", 1)],
    "date": lambda k: [(f"{k}.lo", 1), (f"{k}.hi", 1)],
    "quantity": lambda k: [(f"{k}.v", 1)],
    "number": lambda k: [(f"{k}.v", 1)],
    "string": lambda k: [(k, 1)],
    "reference": lambda k: [(k, 1)],
    "uri": lambda k: [(k, 1)],
}


def index_keys(resource_type: str) -> list[list[tuple[str, int]]]:
    """The indexes a type's collection needs: one per parameter, plus its sort key with `_id`."""
    out = []
    for p in indexed_params(resource_type).values():
        if p.type == "id":
            continue  # `_id` searches the `id` field: its index comes last
        out.append(_INDEX[p.type](p.key))
        if p.type != "reference":  # nobody sorts by a reference; spare the writes
            out.append([(p.sort_key, 1), ("_id", 1)])
    out.append([("id", 1)])  # `_id` searches (`_id` itself is `<tenant>/<id>`); the store puts the tenant first
    return out


# -- the Patient compartment -----------------------------------------------------------------------


@cache
def compartment_keys(resource_type: str) -> tuple[str, ...]:
    """The stored fields that put a resource in a patient's compartment: `id` for the Patient itself,
    else the `_search` lists of the compartment's reference parameters (each one indexed, see `index_keys`)."""
    keys = []
    for code in patient_compartment()[resource_type]:
        if code == COMPARTMENT_SELF:
            keys.append("id")
            continue
        p = indexed_params(resource_type).get(code)
        if p is None or p.type != "reference":
            raise RuntimeError(f"{resource_type}.{code}: a compartment parameter must be an indexed reference")
        keys.append(p.key)
    return tuple(keys)


def _compartment_value(key: str, patient: str) -> str:
    return patient if key == "id" else f"Patient/{patient}"


def compartment_filter(resource_type: str, patient: str) -> dict[str, Any]:
    """The filter of Patient/`patient`'s compartment in `resource_type`; matching nothing if the type has none."""
    clauses = [{key: _compartment_value(key, patient)} for key in compartment_keys(resource_type)]
    if not clauses:
        return {"_id": {"$in": []}}
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}


def in_compartment(resource_type: str, doc: dict[str, Any], patient: str) -> bool:
    """`compartment_filter`'s test on a document about to be stored (with its `_search`)."""
    for key in compartment_keys(resource_type):
        value = _dotted(doc, key)
        if _compartment_value(key, patient) in (value if isinstance(value, list) else [value]):
            return True
    return False


def compartment_values(resource_type: str, values: dict[str, Any]) -> dict[str, Any]:
    """The part of a `_search` document `compartment_filter` reads (history versions keep it)."""
    keys = compartment_keys(resource_type)
    return {code: entries for code, entries in values.items() if f"{SEARCH}.{code}" in keys}


__all__ = [
    "Params",
    "Values",
    "compartment_filter",
    "compartment_keys",
    "compartment_values",
    "compile_filter",
    "compile_sort",
    "keyset_filter",
    "keyset_position",
    "in_compartment",
    "index_keys",
    "index_values",
    "indexed_params",
    "normalize",
    "parse_date",
    "reversed_sort",
    "reference_key",
    "reference_params",
    "search_params",
]
