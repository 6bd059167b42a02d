"""The R5 invariants on every write: each named defect refused at its element, every constraint accounted for."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirpathpy.engine.invocations import invocation_registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.demo import demo_resources, example_items
from app.errors import BAD_USER_INPUT, FinGateError
from app.invariants import invariant_issues
from app.invariants.catalog import NATIVE, SHORTCUTS, SKIPPED, describe, evaluated, served_constraints
from app.invariants.fhirpath import FUNCTIONS, compiled, holds
from app.store import Store
from app.validation import validate
from tests.harness import client_for, gql
from tests.test_validation import DELETE, claim

README = Path(__file__).resolve().parents[1] / "README.md"
XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'


def refused(resource_type: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(FinGateError) as info:
        validate(resource_type, doc)
    assert info.value.code == BAD_USER_INPUT
    return info.value.issues or []


def broken(resource_type: str, doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(constraint key or check, expression) of every issue; [] when the resource is accepted."""
    try:
        validate(resource_type, doc)
    except FinGateError as e:
        return [(_key(i), i["expression"][0]) for i in e.issues or []]
    return []


def _key(issue: dict[str, Any]) -> str:
    codings = (issue.get("details") or {}).get("coding") or [{}]
    return codings[0].get("code") or issue["code"]


def narrative(div: str) -> dict[str, Any]:
    return {"status": "generated", "div": div}


# ---- the named defects


def test_period_end_before_start_is_refused():
    issues = refused("Claim", claim(billablePeriod={"start": "2026-11-20", "end": "2026-11-01"}))
    assert [(i["code"], i["expression"]) for i in issues] == [("invariant", ["Claim.billablePeriod"])]
    assert issues[0]["diagnostics"] == (
        "Claim.billablePeriod: per-1: If present, start SHALL have a lower or equal value than end"
    )
    assert issues[0]["details"]["coding"] == [
        {"system": "http://hl7.org/fhir/StructureDefinition/Period", "code": "per-1"}
    ]


def test_reference_type_disagreeing_with_its_literal_is_refused():
    doc = claim(related=[{"claim": {"reference": "Claim/x", "type": "Invoice"}}])
    issues = refused("Claim", doc)
    assert [i["expression"] for i in issues] == [["Claim.related[0].claim.type"]]
    assert "'Invoice' disagrees with the reference 'Claim/x', which points at a Claim" in issues[0]["diagnostics"]


def test_script_in_the_narrative_is_refused():
    issues = refused("Claim", claim(text=narrative(XHTML.format("<p>ok</p><script>alert(1)</script>"))))
    assert [(_key(i), i["expression"]) for i in issues] == [("txt-1", ["Claim.text.div"])]
    assert "<script> is not allowed" in issues[0]["diagnostics"]


# ---- more of each kind: (name, type, document, [(key, expression)])

CASES = [
    ("period on a partial date, same day", "Claim", claim(billablePeriod={"start": "2026-11", "end": "2026-11-30"}), []),
    ("period across zones in order", "Claim", claim(billablePeriod={"start": "2026-11-01T10:00:00+02:00", "end": "2026-11-01T09:00:00Z"}), []),
    ("period across zones reversed", "Claim", claim(billablePeriod={"start": "2026-11-01T10:00:00+02:00", "end": "2026-11-01T07:00:00Z"}), [("per-1", "Claim.billablePeriod")]),
    ("nested period", "Claim", claim(item__0__servicedDate=DELETE, item__0__servicedPeriod={"start": "2026-02", "end": "2026-01"}), [("per-1", "Claim.item[0].servicedPeriod")]),
    ("type as a URL agrees", "Claim", claim(related=[{"claim": {"reference": "Claim/x", "type": "http://hl7.org/fhir/StructureDefinition/Claim"}}]), []),
    ("absolute reference disagrees", "Claim", claim(related=[{"claim": {"reference": "https://x.org/fhir/Claim/1", "type": "Invoice"}}]), [("invalid", "Claim.related[0].claim.type")]),
    ("type without a literal", "Claim", claim(related=[{"claim": {"identifier": {"value": "1"}, "type": "Claim"}}]), []),
    ("event handler in the narrative", "Claim", claim(text=narrative(XHTML.format('<p onclick="x()">a</p>'))), [("txt-1", "Claim.text.div")]),
    ("script URL in the narrative", "Claim", claim(text=narrative(XHTML.format('<a href=" JavaScript:x()">a</a>'))), [("txt-1", "Claim.text.div")]),
    ("blank narrative", "Claim", claim(text=narrative(XHTML.format("  "))), [("txt-2", "Claim.text.div")]),
    ("basic narrative", "Claim", claim(text=narrative(XHTML.format('<table><tr><td style="x">a</td></tr></table><a href="#x">b</a>'))), []),
    ("empty element", "Claim", claim(billablePeriod={}), [("ele-1", "Claim.billablePeriod")]),
    ("element with only an id", "Claim", claim(item__0__unitPrice={"id": "p"}), [("ele-1", "Claim.item[0].unitPrice")]),
    ("extension with value and extensions", "Claim", claim(extension=[{"url": "http://x.org/e", "valueString": "a", "extension": [{"url": "http://x.org/f", "valueString": "b"}]}]), [("ext-1", "Claim.extension[0]")]),
    ("reference with nothing", "Claim", claim(enterer={"extension": []}), None),
    ("contained reference unresolved", "Claim", claim(enterer={"reference": "#nobody"}), [("ref-1", "Claim.enterer")]),
    ("organization with neither name nor identifier", "Organization", {"active": True}, [("org-1", "Organization")]),
    ("organization home contact", "Organization", {"name": "A", "contact": [{"telecom": [{"system": "phone", "value": "1", "use": "home"}]}]}, [("org-3", "Organization.contact[0]")]),
    ("task modified before authored", "Task", {"status": "draft", "intent": "order", "authoredOn": "2026-11-02", "lastModified": "2026-11-01"}, [("inv-1", "Task")]),
    ("patient participant with a type", "Encounter", {"status": "planned", "participant": [{"actor": {"reference": "Patient/1"}, "type": [{"text": "x"}]}]}, [("enc-2", "Encounter.participant[0]")]),
    ("range low above high", "Claim", claim(extension=[{"url": "http://x.org/e", "valueRange": {"low": {"value": 5, "unit": "mg"}, "high": {"value": 3, "unit": "mg"}}}]), [("rng-2", "Claim.extension[0].valueRange")]),
    ("contained resource nobody references", "Claim", claim(contained=[{"resourceType": "Patient", "id": "p"}]), [("dom-3", "Claim")]),
    ("contained resource with a version", "Claim", claim(enterer={"reference": "#p"}, contained=[{"resourceType": "Patient", "id": "p", "meta": {"versionId": "1"}}]), [("dom-4", "Claim")]),
    ("negative age in an extension", "Organization", {"name": "A", "extension": [{"url": "http://x.org/e", "valueAge": {"value": -1, "system": "http://unitsofmeasure.org", "code": "a"}}]}, [("age-1", "Organization.extension[0].valueAge")]),
    ("invariant in a contained resource", "Claim", claim(patient={"reference": "#o"}, contained=[{"resourceType": "Patient", "id": "o", "contact": [{"gender": "other"}]}]), [("pat-1", "Claim.contained[0].contact[0]")]),
]  # fmt: skip


@pytest.mark.parametrize("name,rtype,doc,expected", CASES, ids=[c[0] for c in CASES])
def test_case(name, rtype, doc, expected):
    found = broken(rtype, doc)
    if expected is None:  # refused by the walk or the model before the invariants (an empty array)
        assert found
    else:
        assert found == expected


def test_several_invariants_are_all_reported():
    doc = claim(billablePeriod={"start": "2026-11-20", "end": "2026-11-01"}, text=narrative(XHTML.format("<script/>x")))
    assert {k for k, _ in broken("Claim", doc)} == {"per-1", "txt-1"}


# ---- every constraint accounted for


def test_every_error_constraint_is_evaluated_or_listed():
    every = set(served_constraints())
    assert {"per-1", "ref-1", "txt-1", "dom-3", "ext-1"} <= every
    assert set(NATIVE) <= every and set(SKIPPED) <= every, "a table names a constraint the served types lack"
    assert not set(NATIVE) & set(SKIPPED)
    assert set(evaluated()) | set(NATIVE) | set(SKIPPED) == every


@pytest.mark.parametrize("key", sorted(evaluated()))
def test_each_evaluated_constraint_compiles_and_its_functions_exist(key):
    c = served_constraints()[key]
    compiled(c.expression)
    called = set(re.findall(r"([A-Za-z]+)\(", c.expression))
    missing = called - set(invocation_registry) - FUNCTIONS
    assert not missing, f"{key} calls {missing}, which fhirpathpy lacks and FinGate does not supply"


def test_readme_lists_the_constraints_checked_otherwise_or_skipped():
    text = README.read_text()
    assert describe() in text
    for key in (*NATIVE, *SKIPPED):
        assert f"`{key}`" in text


# ---- the spec's examples and the demo set keep every invariant


@pytest.mark.parametrize("item", example_items(), ids=lambda item: item.source.rsplit("/", 1)[-1])
def test_r5_example_keeps_every_invariant(item):
    resource = item.resources[0]
    assert invariant_issues(resource["resourceType"], resource) == []


def test_demo_data_keeps_every_invariant():
    for resource in demo_resources():
        assert invariant_issues(resource["resourceType"], resource) == [], resource["id"]


# ---- the README's refusal, on the demo data


@pytest.fixture(scope="module")
async def demo(demo_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(demo_store) as client:
        yield client


async def test_readme_per1_mutation_is_refused_and_stores_nothing(demo: httpx.AsyncClient, demo_store: Store):
    section = README.read_text().split("## Invariants", 1)[1]
    mutation = re.search(r"```graphql\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    before = await demo_store.db["Claim"].count_documents({})
    result = await gql(demo, mutation)
    shown = re.search(r"```json\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    assert result == json.loads(shown)
    (error,) = result["errors"]
    assert error["extensions"]["code"] == BAD_USER_INPUT
    (issue,) = error["extensions"]["operationOutcome"]["issue"]
    assert (issue["code"], issue["expression"], issue["details"]["coding"][0]["code"]) == (
        "invariant",
        ["Claim.billablePeriod"],
        "per-1",
    )
    assert await demo_store.db["Claim"].count_documents({}) == before


def test_a_constraint_the_library_cannot_evaluate_refuses_the_write_as_internal(monkeypatch):
    def fail(expression: str, *_: Any) -> bool:
        if "lowBoundary" in expression:
            raise ValueError("library gap")
        return True

    monkeypatch.setattr("app.invariants.check.holds", fail)
    with pytest.raises(FinGateError) as info:
        validate("Claim", claim(billablePeriod={"start": "2026-11-01"}))
    assert info.value.code == "INTERNAL"
    assert "Claim.billablePeriod: invariant per-1 could not be evaluated (ValueError)" in info.value.message


# ---- shortcuts: a constraint decided by what a node has is not evaluated there, and is never decided otherwise

# The expressions each shortcut was reasoned from: a new R5 definition must be looked at again before it is trusted.
SHORTCUT_EXPRESSIONS = {
    "ref-1": "reference.exists()  implies (reference.startsWith('#').not() or (reference.substring(1).trace('url') in"
    " %rootResource.contained.id.trace('ids')) or (reference='#' and %rootResource!=%resource))",
    "ref-2": "reference.exists() or identifier.exists() or display.exists() or extension.exists()",
    "qty-3": "code.empty() or system.exists()",
    "dom-2": "contained.contained.empty()",
    "dom-3": "contained.where((('#'+id in (%resource.descendants().reference | %resource.descendants().ofType(canonical)"
    " | %resource.descendants().ofType(uri) | %resource.descendants().ofType(url))) or descendants().where(reference"
    " = '#').exists() or descendants().where(ofType(canonical) = '#').exists() or descendants().where(ofType(canonical)"
    " = '#').exists()).not()).trace('unmatched', id).empty()",
    "dom-4": "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()",
    "dom-5": "contained.meta.security.empty()",
}
_SHORTCUT_TYPES = {"ref-1": "Reference", "ref-2": "Reference", "qty-3": "Quantity"}  # dom-*: a resource
_TEXTS = st.sampled_from(["", "#", "#p1", "#other", "Patient/p1", "http://x.org/a", "mg"])
_VALUES = st.one_of(
    st.none(),
    _TEXTS,
    st.just({}),
    st.builds(lambda t: {"id": t}, _TEXTS),
    st.lists(st.one_of(st.none(), _TEXTS, st.just({}), st.just({"url": "http://x.org/e"})), max_size=2),
)
_CONTAINED = st.lists(
    st.fixed_dictionaries(
        {"resourceType": st.just("Patient"), "id": st.sampled_from(["p1", "p2"])},
        optional={"meta": st.sampled_from([{}, {"versionId": "1"}, {"security": [{"code": "R"}]}])},
    ),
    max_size=2,
)


def _node(key: str) -> st.SearchStrategy[dict[str, Any]]:
    names = {
        "ref-1": ["reference", "identifier", "display"],
        "ref-2": ["reference", "identifier", "display", "extension"],
        "qty-3": ["code", "system", "unit"],
    }.get(key, ["status", "text"])
    keys = [k for n in names for k in (n, "_" + n)]
    node = st.dictionaries(st.sampled_from([*keys, "id"]), _VALUES, max_size=4)
    if key.startswith("dom-"):
        return st.builds(lambda n, c: {**n, "contained": c} if c else n, node, st.one_of(st.none(), _CONTAINED))
    return node


def test_shortcuts_are_for_evaluated_constraints_whose_expression_was_reasoned_about():
    assert set(SHORTCUTS) <= set(evaluated())
    for key in SHORTCUTS:
        assert served_constraints()[key].expression == SHORTCUT_EXPRESSIONS[key], key


@pytest.mark.parametrize("key", sorted(SHORTCUTS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_shortcut_only_skips_what_fhirpath_finds_holds(key, data):
    node = data.draw(_node(key))
    root = {"resourceType": "Claim", "contained": [{"resourceType": "Patient", "id": "p1"}]}
    if key.startswith("dom-"):
        node, root = {"resourceType": "Claim", **node}, {"resourceType": "Claim", **node}
    if not SHORTCUTS[key].holds(node):
        return
    expression = served_constraints()[key].expression
    try:
        verdict = holds(expression, node, _SHORTCUT_TYPES.get(key, "Claim"), root, root)
    except Exception:  # a node fhirpathpy cannot evaluate (never one the walk lets through): no verdict to match
        return
    assert verdict, f"{key} shortcut skipped {node}, which FHIRPath refuses"


@pytest.mark.parametrize("key", sorted(SHORTCUTS))
def test_a_shortcut_skips_the_common_node(key):
    common = {
        "ref-1": {"reference": "Patient/p1"},
        "ref-2": {"display": "a payer"},
        "qty-3": {"value": 1},
    }.get(key, {"resourceType": "Claim", "status": "active"})
    assert SHORTCUTS[key].holds(common)
    undecided = {"ref-1": {"reference": "#p1"}, "ref-2": {"id": "r"}, "qty-3": {"code": "mg"}}.get(
        key, {"resourceType": "Claim", "contained": [{"resourceType": "Patient", "id": "p1"}]}
    )
    assert not SHORTCUTS[key].holds(undecided)


def test_the_examples_and_demo_find_the_same_with_and_without_shortcuts(monkeypatch):
    resources = [item.resources[0] for item in example_items()] + list(demo_resources())
    broken = {  # one node of each kind the shortcuts do not decide, refused: the evaluation still runs there
        "resourceType": "Claim",
        "contained": [{"resourceType": "Patient", "id": "p9", "meta": {"versionId": "1"}}],
        "patient": {"reference": "#nowhere"},
        "provider": {"id": "only"},
    }
    with_shortcuts = [invariant_issues(r["resourceType"], r) for r in [*resources, broken]]
    monkeypatch.setattr("app.invariants.check.SHORTCUTS", {})
    assert [invariant_issues(r["resourceType"], r) for r in [*resources, broken]] == with_shortcuts
    assert {i["details"]["coding"][0]["code"] for i in with_shortcuts[-1]} >= {"dom-3", "dom-4", "ref-1", "ref-2"}
