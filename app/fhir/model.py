"""The FHIR R5 spec model FinGate serves, read once from the vendored files in `schema/`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from app.fhir import delta

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"
DEFINITIONS_DIR = SCHEMA_DIR / "definitions"
FHIR_VERSION = "5.0.0"

SERVED_RESOURCES: tuple[str, ...] = (
    "Account",
    "ChargeItem",
    "Claim",
    "ClaimResponse",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "Encounter",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "ExplanationOfBenefit",
    "InsurancePlan",
    "Invoice",
    "Location",
    "Organization",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Subscription",
    "SubscriptionTopic",
    "Task",
)
SERVED = frozenset(SERVED_RESOURCES)

# FHIR primitive type code -> the GraphQL scalar that carries it (README "The API in brief": money is a string-serialized Decimal).
PRIMITIVE_SCALARS: dict[str, str] = {
    "boolean": "Boolean",
    "integer": "Int",
    "positiveInt": "Int",
    "unsignedInt": "Int",
    "decimal": "Decimal",
    "id": "ID",
    "integer64": "String",
    "string": "String",
    "code": "String",
    "uri": "String",
    "url": "String",
    "canonical": "String",
    "oid": "String",
    "uuid": "String",
    "markdown": "String",
    "base64Binary": "String",
    "date": "String",
    "dateTime": "String",
    "instant": "String",
    "time": "String",
    "xhtml": "String",
}
_FHIRPATH_TYPES = {"http://hl7.org/fhirpath/System.String": "string"}

# Search parameters billing apps need and R5 lacks (listed in the README).
EXTRA_SEARCH_PARAMETERS: dict[str, list[dict]] = {
    "PaymentReconciliation": [
        {
            "code": "allocation-target",
            "type": "reference",
            "expression": "PaymentReconciliation.allocation.target",
            "target": ["Claim", "Account", "Invoice", "ChargeItem", "Encounter", "Contract"],
            "description": "The resource (a Claim, Account, ...) a payment allocation settles. FinGate extension.",
        },
        {
            "code": "allocation-response",
            "type": "reference",
            "expression": "PaymentReconciliation.allocation.response",
            "target": ["ClaimResponse"],
            "description": "The ClaimResponse a payment allocation settles. FinGate extension.",
        },
    ]
}


# R5 search parameters FinGate does not serve, and why (README, Search). `special` and `composite` ones are left out
# by type: their values are not a path's (Location `near` is a distance, Encounter `location-period` a pair).
UNSERVED_SEARCH_PARAMETERS: dict[tuple[str, str], str] = {
    ("Patient", "part-agree"): "it reads an example extension (http://example.org/...), not an R5 element",
}
_UNSERVED_TYPES = ("special", "composite")


@dataclass(frozen=True)
class Constraint:
    """One invariant of the R5 definitions: `per-1` on Period."""

    key: str
    severity: str  # error | warning
    human: str
    expression: str  # FHIRPath, evaluated on each instance of the element it sits on
    source: str  # the StructureDefinition that carries it


def _constraints(e: dict, url: str) -> tuple[Constraint, ...]:
    return tuple(
        Constraint(c["key"], c["severity"], c["human"], c.get("expression", ""), url) for c in e.get("constraint", ())
    )


@dataclass(frozen=True)
class Element:
    """One element of a type: `PaymentReconciliation.allocation.target`."""

    path: str
    name: str  # JSON name; for a choice `value[x]` the stem `value`
    min: int
    is_list: bool
    types: tuple[str, ...]  # FHIR type codes; backbones name their generated type
    short: str
    targets: tuple[str, ...] = ()  # Reference / canonical target resource types
    codes: tuple[str, ...] | None = None  # required binding codes, when enumerable
    systems: tuple[
        tuple[str, str], ...
    ] = ()  # (code, its code system) of a required binding: a `code`'s implicit system
    constraints: tuple[Constraint, ...] = ()  # its own, when it is not a backbone (a backbone's are its type's)

    @property
    def is_choice(self) -> bool:
        return self.path.endswith("[x]")

    def json_name(self, type_code: str) -> str:
        """JSON name of the element when it carries `type_code` (`valueString`)."""
        if not self.is_choice:
            return self.name
        return self.name + type_code[0].upper() + type_code[1:]


@dataclass(frozen=True)
class TypeDef:
    """A resource, backbone element or complex datatype."""

    name: str
    kind: str  # "resource" | "backbone" | "datatype"
    path: str  # FHIR path of the type root: `Claim`, `Claim.item.detail`, `Money`
    url: str
    short: str
    elements: tuple[Element, ...] = field(default=())
    constraints: tuple[Constraint, ...] = ()  # on every instance: the root's (per-1 on Period) or the backbone's


@dataclass(frozen=True)
class SearchParam:
    """An R5 search parameter (or a FinGate extra) of one resource type."""

    code: str
    type: str  # token | string | date | reference | number | quantity | uri | special
    expression: str
    targets: tuple[str, ...]
    description: str
    url: str = ""  # its SearchParameter's canonical URL; "" for FinGate's own

    @property
    def arg_name(self) -> str:
        """GraphQL argument name: `-` written `_`."""
        return self.code.replace("-", "_")


# The common parameters every served type has beside its own (R5's Resource-id and Resource-lastUpdated).
COMMON_SEARCH = (
    SearchParam("_id", "token", "", (), "The resource id", "http://hl7.org/fhir/SearchParameter/Resource-id"),
    SearchParam(
        "_lastUpdated",
        "date",
        "",
        (),
        "When the resource's current version was written",
        "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
    ),
)


def _load_definition(name: str) -> dict:
    """R5's definition, with the specification page's changes where it has some (PaymentReconciliation)."""
    return delta.apply(json.loads((DEFINITIONS_DIR / f"StructureDefinition-{name}.json").read_text()))


def backbone_name(path: str) -> str:
    """`Claim.item.detail` -> `ClaimItemDetail`."""
    head, *rest = path.split(".")
    return head + "".join(p[0].upper() + p[1:] for p in rest)


def _type_code(t: dict) -> str:
    code = t["code"]
    return _FHIRPATH_TYPES.get(code, code)


def _code_systems() -> dict[str, dict[str, str]]:
    """Element path -> code -> code system, for the required bindings: the financial types' per code from
    `required-bindings-detail.json`, the others' per value set from the supplement's `_meta.codeSystems`."""
    detail = json.loads((SCHEMA_DIR / "required-bindings-detail.json").read_text())
    out = {
        path: {c["code"]: c["system"] for c in entry.get("codes", ()) if c.get("system")}
        for path, entry in detail.items()
        if not path.startswith("_") and isinstance(entry, dict)
    }
    supplement = json.loads((SCHEMA_DIR / "required-bindings-supplement.json").read_text())
    meta = supplement["_meta"]
    for path, value_set in meta["valueSets"].items():
        system = meta["codeSystems"][value_set]
        by_code = system if isinstance(system, dict) else {}
        out[path] = {code: by_code.get(code, by_code.get("*", system)) for code in supplement[path]}
    return out


class Spec:
    """Every type reachable from the served resources, with bindings and search parameters."""

    def __init__(self) -> None:
        self.bindings: dict[str, list[str]] = {
            k: v
            for name in ("required-bindings.json", "required-bindings-supplement.json")
            for k, v in json.loads((SCHEMA_DIR / name).read_text()).items()
            if not k.startswith("_")
        }
        self.systems = _code_systems()
        self.types: dict[str, TypeDef] = {}
        pending = list(SERVED_RESOURCES)
        while pending:
            name = pending.pop(0)
            if name in self.types:
                continue
            for td in self._read(name):
                self.types[td.name] = td
                for el in td.elements:
                    for t in el.types:
                        if t not in PRIMITIVE_SCALARS and t not in self.types and t not in pending and t != "Resource":
                            pending.append(t)
        self.search_params = self._read_search_params()

    def served_search_params(self, resource_type: str) -> list[SearchParam]:
        """Every search parameter a served type answers: its own (R5's and FinGate's) and the common ones."""
        return [*self.search_params[resource_type].values(), *COMMON_SEARCH]

    def reference_params(self, resource_type: str) -> list[SearchParam]:
        """The reference search parameters of a served type, by code (what a reverse reference can follow)."""
        params = self.search_params[resource_type]
        return [params[code] for code in sorted(params) if params[code].type == "reference"]

    def _read(self, name: str) -> list[TypeDef]:
        sd = _load_definition(name)
        kind = "resource" if sd["kind"] == "resource" else "datatype"
        root = sd["type"]
        elements_by_path = {e["path"]: e for e in sd["snapshot"]["element"]}
        children: dict[str, list[dict]] = {}
        for e in sd["snapshot"]["element"]:
            if "." in e["path"]:
                children.setdefault(e["path"].rsplit(".", 1)[0], []).append(e)
        out: list[TypeDef] = []

        def build(path: str, kind: str) -> None:
            elements = []
            for e in children.get(path, []):
                elements.append(self._element(e, elements_by_path, sd["url"]))
                if (
                    e.get("type")
                    and _type_code(e["type"][0]) in ("BackboneElement", "Element")
                    and e["path"] in children
                ):
                    build(e["path"], "backbone")
            head = elements_by_path[path]
            tname = root if path == root else backbone_name(path)
            constraints = _constraints(head, sd["url"])
            out.append(TypeDef(tname, kind, path, sd["url"], head.get("short", ""), tuple(elements), constraints))

        build(root, kind)
        return out

    def _element(self, e: dict, by_path: dict[str, dict], url: str) -> Element:
        path = e["path"]
        name = path.rsplit(".", 1)[1].removesuffix("[x]")
        own = _constraints(e, url)
        if "contentReference" in e:
            types: tuple[str, ...] = (backbone_name(e["contentReference"].lstrip("#")),)
        elif (
            e.get("type")
            and _type_code(e["type"][0]) in ("BackboneElement", "Element")
            and any(p.startswith(path + ".") for p in by_path)
        ):
            types = (backbone_name(path),)
            own = ()
        else:
            types = tuple(_type_code(t) for t in e.get("type", []))
        targets: list[str] = []
        for t in e.get("type", []):
            for prof in t.get("targetProfile", []):
                targets.append(prof.rsplit("/", 1)[1])
        codes: tuple[str, ...] | None = None
        systems: tuple[tuple[str, str], ...] = ()
        binding = e.get("binding") or {}
        if binding.get("strength") == "required":
            key = path if path in self.bindings else e.get("base") or ""
            listed = self.bindings.get(key)
            codes = tuple(listed) if listed is not None else None
            systems = tuple(self.systems.get(key, {}).items())
        return Element(
            path=path,
            name=name,
            min=int(e.get("min", 0)),
            is_list=e.get("max", "1") != "1" and e.get("max") != "0",
            types=types,
            short=e.get("short", ""),
            targets=tuple(dict.fromkeys(targets)),
            codes=codes,
            systems=systems,
            constraints=own,
        )

    def _read_search_params(self) -> dict[str, dict[str, SearchParam]]:
        raw = json.loads((SCHEMA_DIR / "search-parameters.json").read_text())
        out: dict[str, dict[str, SearchParam]] = {}
        for rtype in SERVED_RESOURCES:
            params = list(raw.get(rtype, [])) + EXTRA_SEARCH_PARAMETERS.get(rtype, [])
            out[rtype] = {
                p["code"]: SearchParam(
                    code=p["code"],
                    type=p["type"],
                    expression=p.get("expression") or "",
                    targets=tuple(p.get("target") or ()),
                    description=p.get("description", ""),
                    url=p.get("url", ""),
                )
                for p in params
                if p["type"] not in _UNSERVED_TYPES
                and p.get("expression")
                and (rtype, p["code"]) not in UNSERVED_SEARCH_PARAMETERS
            }
        return out

    def resource(self, name: str) -> TypeDef:
        return self.types[name]

    def element(self, path: str) -> Element | None:
        """The element at a FHIR path, following backbones: `PaymentReconciliation.allocation.target`."""
        parts = path.split(".")
        td = self.types[parts[0]]
        el: Element | None = None
        for part in parts[1:]:
            el = next((e for e in td.elements if e.name == part or e.json_name(part) == part), None)
            if el is None:
                return None
            nxt = next((t for t in el.types if t in self.types), None)
            if nxt is not None:
                td = self.types[nxt]
        return el


COMPARTMENT_SELF = "{def}"  # in a compartment definition: the compartment's own resource (the Patient itself)


@cache
def _compartment_file() -> dict:
    return json.loads((SCHEMA_DIR / "compartment-patient.json").read_text())  # type: ignore[no-any-return]


@cache
def patient_compartment() -> dict[str, tuple[str, ...]]:
    """R5's Patient compartment: per served type, the search parameters that put a resource in a patient's compartment."""
    return {rtype: tuple(_compartment_file()[rtype]) for rtype in SERVED_RESOURCES}


def compartment_only_params(resource_type: str) -> list[SearchParam]:
    """Compartment parameters `search-parameters.json` lacks: indexed for the compartment, never search arguments."""
    return [
        SearchParam(code=p["code"], type=p["type"], expression=p["expression"], targets=(), description="")
        for p in _compartment_file()["_parameters"].get(resource_type, [])
    ]


@cache
def spec() -> Spec:
    """The one Spec of this process (built once at start-up)."""
    return Spec()
