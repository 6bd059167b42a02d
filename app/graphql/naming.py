"""The naming rules of the generated schema: GraphQL type names, Python attribute names, clashes."""

from __future__ import annotations

import keyword
from collections.abc import Iterable

from app.fhir.model import TypeDef

INPUT_SUFFIX = "Input"
# A FHIR type named like another type's input (backbone `TaskInput` = Task.input, while
# `TaskInput` is the input of Task) gets this suffix. Only backbones are ever renamed.
RENAME_SUFFIX = "Backbone"

# `contained` may hold any FHIR type (R5 examples contain Devices): its union adds one member.
CONTAINED_UNION = "ContainedResource"
UNSERVED_RESOURCE = "UnservedResource"


def python_name(json_name: str) -> str:
    """A valid, non-keyword Python attribute for a FHIR JSON name (`class` -> `class_`).

    `_x` primitive-extension names (`_birthDate`) are valid identifiers and stay as they are.
    """
    return json_name + "_" if keyword.iskeyword(json_name) else json_name


# The default resolver receives Python attribute names; only keyword names differ from FHIR's.
JSON_NAMES: dict[str, str] = {python_name(word): word for word in keyword.kwlist}


def object_type_names(type_defs: Iterable[TypeDef]) -> dict[str, str]:
    """GraphQL name of every FHIR type: its own, unless that is another type's input name."""
    kinds = {td.name: td.kind for td in type_defs}
    input_names = {name + INPUT_SUFFIX for name in kinds}
    names = {}
    for name, kind in sorted(kinds.items()):
        if name not in input_names:
            names[name] = name
        elif kind == "backbone":
            names[name] = name + RENAME_SUFFIX
        else:
            raise ValueError(
                f"{kind} {name} is also the input type name of {name.removesuffix(INPUT_SUFFIX)}: "
                "only backbones are renamed; extend naming.object_type_names"
            )
    return names


def renamed_note(fhir_name: str, graphql_name: str) -> str:
    """Why a type does not carry its FHIR name (for descriptions)."""
    owner = fhir_name.removesuffix(INPUT_SUFFIX)
    return f"{graphql_name} is the FHIR backbone {fhir_name}, renamed because {fhir_name} is the input type of {owner}."


def input_name(graphql_name: str) -> str:
    return graphql_name + INPUT_SUFFIX


def reference_enum_name(resource_type: str) -> str:
    """`ClaimResponse_reference`: the values of `_reference` on reverse `ClaimResponseList` fields."""
    return f"{resource_type}_reference"


def connection_names(resource_type: str) -> tuple[str, str]:
    return f"{resource_type}Connection", f"{resource_type}ConnectionEdge"


def check_unique(named: Iterable[tuple[str, str]], kind: str = "GraphQL type names") -> None:
    """Fail clearly on duplicate names (Strawberry only fails with a bare assertion)."""
    seen: dict[str, str] = {}
    clashes = []
    for name, what in named:
        if name in seen:
            clashes.append(f"{name} ({seen[name]} and {what})")
        seen.setdefault(name, what)
    if clashes:
        raise ValueError(f"duplicate {kind}: {', '.join(clashes)}; change the naming rules in app/graphql/naming.py")
