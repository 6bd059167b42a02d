"""What the generated types and root fields contain, as plain data derived from the spec model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app.fhir import delta
from app.fhir.model import FHIR_VERSION, PRIMITIVE_SCALARS, Element, SearchParam, Spec, TypeDef
from app.graphql.naming import python_name, renamed_note

ORIGIN = f"FHIR R5 ({FHIR_VERSION})"

# R5 types these as FHIRPath System.String (XML attributes) or forbids their extensions
# (xhtml.extension max 0): they have no `_x` primitive-extension sibling in FHIR JSON.
_NO_PRIMITIVE_EXTENSION_NAMES = frozenset({"id"})
_NO_PRIMITIVE_EXTENSION_PATHS = frozenset({"Extension.url"})
_NO_PRIMITIVE_EXTENSION_TYPES = frozenset({"xhtml"})

SEARCH_TYPE_HINTS = {
    "token": "`code` or `system|code`",
    "reference": "`Type/id` or `id`",
    "date": "FHIR prefixes like `ge2024-01-01`",
    "string": "case-insensitive prefix",
    "number": "FHIR prefixes like `gt100`",
    "quantity": "`[prefix]number|system|code`",
    "uri": "exact URI",
}


@dataclass(frozen=True)
class FieldSpec:
    """One generated data field: `python` attribute, FHIR JSON `name`, and what it holds."""

    python: str
    name: str
    target: str  # a GraphQL scalar name (`String`, `Decimal`, ...), a FHIR type name, or `Resource`
    is_list: bool
    nullable_items: bool  # FHIR JSON primitive arrays may hold null, aligned with their `_x` array
    description: str | None


def element_type_def(model: Spec) -> TypeDef:
    """FHIR's `Element` datatype (`id`, `extension`): the type of `_x` primitive extensions.

    The model never reaches it (no element is typed Element), so it is read on its own.
    """
    return model._read("Element")[0]


def _has_primitive_extension(el: Element, type_code: str) -> bool:
    return not (
        el.name in _NO_PRIMITIVE_EXTENSION_NAMES
        or el.path in _NO_PRIMITIVE_EXTENSION_PATHS
        or type_code in _NO_PRIMITIVE_EXTENSION_TYPES
    )


def _describe(el: Element, renamed: dict[str, str]) -> str | None:
    text = el.short
    if el.codes:
        text += f" Allowed codes: {' | '.join(el.codes)}."
    for type_code in el.types:
        if type_code in renamed:
            text += " " + renamed_note(type_code, renamed[type_code])
    page = delta.note(el.path)
    if page:
        text += f" {page}" if text else page
    return text or None


def element_fields(td: TypeDef, renamed: dict[str, str]) -> Iterator[FieldSpec]:
    """The data fields of a FHIR type in element order: choices expanded, `_x` after each primitive."""
    if td.kind == "resource":
        yield FieldSpec("resourceType", "resourceType", "String", False, False, f"Always {td.name}.")
    for el in td.elements:
        description = _describe(el, renamed)
        for type_code in el.types:
            name = el.json_name(type_code)
            scalar = PRIMITIVE_SCALARS.get(type_code)
            if scalar is None:
                yield FieldSpec(python_name(name), name, type_code, el.is_list, False, description)
                continue
            if td.kind == "resource" and el.path == f"{td.path}.id":
                scalar = "ID"
            yield FieldSpec(python_name(name), name, scalar, el.is_list, el.is_list, description)
            if _has_primitive_extension(el, type_code):
                note = f"Id and extensions of `{name}` (FHIR JSON primitive extension)."
                yield FieldSpec("_" + name, "_" + name, "Element", el.is_list, el.is_list, note)


def type_description(td: TypeDef, graphql_name: str) -> str:
    """The definition's short text, then where it comes from (`FHIR R5 (5.0.0) <url>`)."""
    origin = f"{ORIGIN} {td.url}"
    if td.kind == "backbone":
        origin += f" element {td.path}"
    if graphql_name != td.name:
        origin += ". " + renamed_note(td.name, graphql_name)
    return f"{td.short}\n\n{origin}" if td.short else origin


def search_description(param: SearchParam) -> str:
    hint = SEARCH_TYPE_HINTS.get(param.type, param.type)
    return (
        f"{param.description} ({param.type} search parameter `{param.code}`: {hint}; "
        "commas inside a value mean OR, a list of values means AND.)"
    )


def search_args(model: Spec, resource_type: str) -> list[SearchParam]:
    """The search parameters of a type plus `_id` and `_lastUpdated`, sorted by argument name."""
    return sorted(model.served_search_params(resource_type), key=lambda p: p.arg_name)


def reference_params(model: Spec, resource_type: str) -> list[SearchParam]:
    """The reference search parameters of a type (the `_reference` values of reverse lists), by argument name."""
    return sorted(model.reference_params(resource_type), key=lambda p: p.arg_name)


def arg_codes(params: list[SearchParam]) -> dict[str, str]:
    """Argument name, as the resolver receives it -> search parameter code (`payment_issuer` -> `payment-issuer`,
    `class_` -> `class`)."""
    return {python_name(p.arg_name): p.code for p in params}
