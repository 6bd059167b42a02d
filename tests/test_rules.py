"""The status lifecycle tables and cross-resource rules, case by case."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest

from app.errors import BAD_USER_INPUT, STATUS_RULE, FinGateError
from app.fhir.model import SERVED_RESOURCES, spec
from app.rules import (
    check_create,
    check_delete,
    check_document,
    check_references,
    check_update,
    describe_rules,
    lifecycle,
)
from app.rules.tables import (
    AMOUNT_RULES,
    ANSWER_RULES,
    IN_FORCE,
    LIFECYCLES,
    REFERENCE_RULES,
    REFERRER_RULES,
    RESOURCE_LIFECYCLE,
)

# ---- expectations written from the R5 status life-cycle text and the README's "Status lifecycle", independently of app/rules/tables.py

FM_TYPES = [
    "Claim",
    "ClaimResponse",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "PaymentNotice",
    "PaymentReconciliation",
    "ExplanationOfBenefit",
]
FM_CODES = ["draft", "active", "cancelled", "entered-in-error"]
FM_CREATE = {"draft", "active"}
FM_MOVES = {
    "draft": {"active", "entered-in-error"},
    "active": {"cancelled"},
    "cancelled": set(),
    "entered-in-error": set(),
}
FM_DELETE = {"draft"}

INVOICE_CODES = ["draft", "issued", "balanced", "cancelled", "entered-in-error"]
INVOICE_CREATE = {"draft", "issued"}
INVOICE_MOVES = {
    "draft": {"issued", "entered-in-error"},
    "issued": {"balanced", "cancelled"},
    "balanced": {"issued"},  # reopened: a refund undoes "completely paid" (README "Patient pay")
    "cancelled": set(),
    "entered-in-error": set(),
}
INVOICE_DELETE = {"draft"}

INDEPENDENT = {t: (FM_CODES, FM_CREATE, FM_MOVES, FM_DELETE) for t in FM_TYPES} | {
    "Invoice": (INVOICE_CODES, INVOICE_CREATE, INVOICE_MOVES, INVOICE_DELETE)
}


# ---- harness


def refusal(call, *args) -> FinGateError | None:
    """The STATUS_RULE error a rule call raises, or None when it passes."""
    try:
        call(*args)
    except FinGateError as e:
        assert e.code == STATUS_RULE, e.message
        return e
    return None


async def async_refusal(coro) -> FinGateError | None:
    try:
        await coro
    except FinGateError as e:
        assert e.code == STATUS_RULE, e.message
        return e
    return None


def assert_shape(err: FinGateError, rule: str, expression: str, current: Any, allowed: list[str]) -> None:
    ext = err.extensions
    assert ext["code"] == STATUS_RULE
    assert ext["rule"] == rule
    assert ext["currentStatus"] == current
    assert ext["allowed"] == allowed
    issue = ext["operationOutcome"]["issue"][0]
    assert issue["code"] == "business-rule"
    assert rule in issue["diagnostics"]
    assert issue["expression"] == [expression]


def res(resource_type: str, status: str | None = None, **content: Any) -> dict:
    doc: dict[str, Any] = {"resourceType": resource_type, "id": "1", "meta": {"versionId": "1"}, **content}
    if status is not None:
        doc["status"] = status
    return doc


class Reads:
    """In-memory `reads`: a dict of resources keyed `Type/id`; search knows the two params the rules use."""

    def __init__(self, *resources: dict) -> None:
        self.db = {f"{r['resourceType']}/{r['id']}": r for r in resources}
        self.searches: list[tuple[str, dict[str, str]]] = []
        self.batches: list[dict[str, list[str]]] = []

    async def get_many(self, ids_by_type: Mapping[str, list[str]]) -> dict[tuple[str, str], dict]:
        self.batches.append({t: list(ids) for t, ids in ids_by_type.items()})
        found = {(t, id): self.db.get(f"{t}/{id}") for t, ids in ids_by_type.items() for id in ids}
        return {key: r for key, r in found.items() if r is not None}

    async def search(self, resource_type: str, params: dict[str, str]) -> list[dict]:
        self.searches.append((resource_type, params))
        assert set(params) <= {"allocation-target", "status"}, params
        out = []
        for r in self.db.values():
            if r["resourceType"] != resource_type:
                continue
            if "status" in params and r.get("status") not in params["status"].split(","):
                continue
            targets = {a.get("target", {}).get("reference") for a in r.get("allocation", [])}
            if "allocation-target" in params and params["allocation-target"] not in targets:
                continue
            out.append(r)
        return out

    # The balance rules' reads (app/rules/balances.py): totals by id, and no payment stored anywhere.
    allow_overpayment = False

    async def amounts(self, ids_by_type: Mapping[str, list[str]]) -> dict[tuple[str, str], dict]:
        found = {(t, id): self.db.get(f"{t}/{id}") for t, ids in ids_by_type.items() for id in ids}
        return {key: r for key, r in found.items() if r is not None}

    async def settlements(self, targets: list[str]) -> dict:
        return {}


# ---- tables cover the spec


def test_every_served_type_has_an_entry():
    assert set(RESOURCE_LIFECYCLE) == set(SERVED_RESOURCES)
    for name in RESOURCE_LIFECYCLE.values():
        assert name is None or name in LIFECYCLES


@pytest.mark.parametrize("resource_type", [t for t, v in RESOURCE_LIFECYCLE.items() if v])
def test_table_codes_are_the_r5_value_set(resource_type):
    el = spec().element(f"{resource_type}.status")
    r5 = set(el.codes) if el.codes else {c.strip() for c in el.short.split("|")}
    assert "+" not in r5
    assert set(lifecycle(resource_type).codes) == r5


@pytest.mark.parametrize("lc", LIFECYCLES.values(), ids=list(LIFECYCLES))
def test_tables_are_closed(lc):
    known = {None, *lc.codes}
    assert set(lc.transitions) <= known and lc.initial <= known and lc.editable <= known and lc.deletable <= known
    assert all(to <= set(lc.codes) for to in lc.transitions.values())
    assert "entered-in-error" in lc.final or lc.value_set == "publication-status"
    assert not lc.deletable & set(lc.final), "a final status must never allow delete"


# ---- transitions: every pair of every table


def _pairs():
    for rtype, name in RESOURCE_LIFECYCLE.items():
        if name is None:
            continue
        lc = LIFECYCLES[name]
        froms = [None, *lc.codes] if None in lc.transitions else list(lc.codes)
        for before, after in itertools.product(froms, lc.codes):
            if rtype in INDEPENDENT:
                allowed = before == after or after in INDEPENDENT[rtype][2][before]
            else:
                allowed = before == after or after in lc.next(before)
            yield pytest.param(rtype, before, after, allowed, id=f"{rtype}:{before}->{after}")


@pytest.mark.parametrize("rtype,before,after,allowed", list(_pairs()))
def test_transition(rtype, before, after, allowed):
    err = refusal(check_update, rtype, res(rtype, before), res(rtype, after, meta={"versionId": "2"}))
    if allowed:
        assert err is None
    else:
        assert err is not None
        name = RESOURCE_LIFECYCLE[rtype]
        expected_next = (
            [c for c in INDEPENDENT[rtype][0] if c in INDEPENDENT[rtype][2][before]]
            if rtype in INDEPENDENT
            else list(lifecycle(rtype).next(before))
        )
        assert_shape(err, f"{name}.transition", f"{rtype}.status", before, expected_next)
        assert f"'{after}'" in err.message


def test_refused_transitions_representative():
    for rtype, before, after in [
        ("Claim", "active", "draft"),
        ("Claim", "active", "entered-in-error"),
        ("Claim", "cancelled", "active"),
        ("ClaimResponse", "entered-in-error", "draft"),
        ("Invoice", "issued", "entered-in-error"),
        ("Invoice", "balanced", "cancelled"),
        ("Invoice", "draft", "balanced"),
        ("Contract", "executed", "policy"),
        ("Contract", "amended", "disputed"),
        ("Account", "entered-in-error", "active"),
    ]:
        assert refusal(check_update, rtype, res(rtype, before), res(rtype, after)) is not None, (rtype, before, after)


# ---- creates


def _creates():
    for rtype, name in RESOURCE_LIFECYCLE.items():
        lc = LIFECYCLES[name] if name else None
        for status in [None, *lc.codes] if lc else [None, "anything"]:
            if lc is None:
                ok = True
            elif rtype in INDEPENDENT:
                ok = status in INDEPENDENT[rtype][1]
            else:
                ok = status in lc.initial
            yield pytest.param(rtype, status, ok, id=f"{rtype}:{status}")


@pytest.mark.parametrize("rtype,status,ok", list(_creates()))
def test_create(rtype, status, ok):
    err = refusal(check_create, rtype, res(rtype, status))
    assert (err is None) == ok
    if err:
        starts = [
            c
            for c in (INDEPENDENT[rtype][0] if rtype in INDEPENDENT else lifecycle(rtype).codes)
            if c in (INDEPENDENT[rtype][1] if rtype in INDEPENDENT else lifecycle(rtype).initial)
        ]
        assert_shape(err, f"{RESOURCE_LIFECYCLE[rtype]}.create", f"{rtype}.status", status, starts)


def test_contract_without_status_is_created():
    assert refusal(check_create, "Contract", {"resourceType": "Contract"}) is None
    assert refusal(check_create, "Claim", {"resourceType": "Claim"}) is not None


# ---- frozen content

TOTAL = {"total": {"value": "10.00", "currency": "USD"}}
TOTAL2 = {"total": {"value": "11.00", "currency": "USD"}}

# (type, old status, old content, new status, new content, refused rule or None)
CONTENT_CASES = [
    ("Claim", "draft", TOTAL, "draft", TOTAL2, None),
    ("Claim", "draft", TOTAL, "active", TOTAL2, None),  # last edits ride along the activation
    ("Claim", "active", TOTAL, "active", TOTAL2, "fm-status.frozen"),
    ("Claim", "active", TOTAL, "cancelled", TOTAL2, "fm-status.frozen"),
    ("Claim", "active", TOTAL, "cancelled", {**TOTAL, "meta": {"versionId": "9", "tag": [{"code": "x"}]}}, None),
    (
        "Claim",
        "active",
        TOTAL,
        "active",
        {**TOTAL, "text": {"status": "generated", "div": "<div>x</div>"}},
        "fm-status.frozen",
    ),
    ("Claim", "active", TOTAL, "active", {}, "fm-status.frozen"),  # removing an element is a change
    ("Claim", "cancelled", TOTAL, "cancelled", TOTAL2, "fm-status.frozen"),
    ("Claim", "cancelled", TOTAL, "cancelled", TOTAL, None),  # a no-op write is fine
    (
        "PaymentReconciliation",
        "active",
        {"allocation": [{"id": "a"}]},
        "active",
        {"allocation": []},
        "fm-status.frozen",
    ),
    ("ExplanationOfBenefit", "active", TOTAL, "active", TOTAL2, "explanationofbenefit-status.frozen"),
    ("Invoice", "draft", {"totalNet": {"value": 1}}, "draft", {"totalNet": {"value": 2}}, None),
    ("Invoice", "issued", {"totalNet": {"value": 1}}, "issued", {"totalNet": {"value": 2}}, "invoice-status.frozen"),
    ("Invoice", "issued", {}, "cancelled", {"cancelledReason": "duplicate"}, None),
    ("Invoice", "issued", {}, "balanced", {"note": [{"text": "paid"}]}, "invoice-status.frozen"),
    ("Account", "active", {"name": "a"}, "active", {"name": "b"}, None),
    ("Account", "inactive", {"name": "a"}, "inactive", {"name": "b"}, "account-status.frozen"),
    ("Account", "inactive", {"name": "a"}, "active", {"name": "a"}, None),
    ("Contract", "negotiable", {"title": "a"}, "negotiable", {"title": "b"}, None),
    ("Contract", "executed", {"title": "a"}, "executed", {"title": "b"}, "contract-status.frozen"),
    ("Contract", "executed", {"title": "a"}, "amended", {"title": "b"}, None),
    ("Contract", "amended", {"title": "b"}, "amended", {"title": "c"}, None),
    ("Contract", "executed", {"title": "a"}, "terminated", {"title": "b"}, "contract-status.frozen"),
    (
        "ChargeItem",
        "billed",
        {"quantity": {"value": 1}},
        "billed",
        {"quantity": {"value": 2}},
        "chargeitem-status.frozen",
    ),
    ("InsurancePlan", "active", {"name": "a"}, "active", {"name": "b"}, None),
    ("InsurancePlan", "retired", {"name": "a"}, "retired", {"name": "b"}, "publication-status.frozen"),
    ("Task", "completed", {"description": "a"}, "in-progress", {"description": "b"}, None),
]


@pytest.mark.parametrize(
    "rtype,s0,c0,s1,c1,rule", CONTENT_CASES, ids=[f"{c[0]}:{c[1]}->{c[3]}:{c[5]}" for c in CONTENT_CASES]
)
def test_content(rtype, s0, c0, s1, c1, rule):
    err = refusal(check_update, rtype, res(rtype, s0, **c0), res(rtype, s1, **c1))
    assert (err.extensions["rule"] if err else None) == rule
    if err:
        changed = next(k for k in dict.fromkeys([*c0, *c1]) if c0.get(k) != c1.get(k))
        assert err.extensions["operationOutcome"]["issue"][0]["expression"] == [f"{rtype}.{changed}"]


def test_frozen_error_says_how_to_fix():
    err = refusal(check_update, "Claim", res("Claim", "active", **TOTAL), res("Claim", "active", **TOTAL2))
    assert "cancelled" in err.message and "draft" in err.message and "Claim.total" in err.message
    assert err.extensions["allowed"] == ["cancelled"]


def test_frozen_error_lists_every_changed_element():
    err = refusal(check_update, "Claim", res("Claim", "active", **TOTAL), res("Claim", "active", **TOTAL2, use="claim"))
    assert [i["expression"] for i in err.issues] == [["Claim.total"], ["Claim.use"]]


# ---- delete


def _deletes():
    for rtype, name in RESOURCE_LIFECYCLE.items():
        lc = LIFECYCLES[name] if name else None
        for status in lc.codes if lc else ["anything"]:
            if lc is None:
                ok = True
            elif rtype in INDEPENDENT:
                ok = status in INDEPENDENT[rtype][3]
            else:
                ok = status in lc.deletable
            yield pytest.param(rtype, status, ok, id=f"{rtype}:{status}")


@pytest.mark.parametrize("rtype,status,ok", list(_deletes()))
def test_delete(rtype, status, ok):
    err = refusal(check_delete, rtype, res(rtype, status))
    assert (err is None) == ok
    if err:
        assert_shape(
            err, f"{RESOURCE_LIFECYCLE[rtype]}.delete", f"{rtype}.status", status, list(lifecycle(rtype).next(status))
        )
        assert "never erased" in err.message


def test_account_is_never_deleted():
    for status in lifecycle("Account").codes:
        assert refusal(check_delete, "Account", res("Account", status)) is not None


# ---- cross-resource rules

CLAIM_ACTIVE = res("Claim", "active")
CLAIM_DRAFT = {**res("Claim", "draft"), "id": "d"}
CER = {**res("CoverageEligibilityRequest", "active"), "id": "e1"}
ER = {**res("EnrollmentRequest", "active"), "id": "n1"}
ER_DRAFT = {**res("EnrollmentRequest", "draft"), "id": "n2"}
CR = {**res("ClaimResponse", "active"), "id": "r1"}
ACCOUNT = {**res("Account", "active"), "id": "acc"}


def pr(status: str, *allocations: dict, id: str = "p1") -> dict:
    return {**res("PaymentReconciliation", status), "id": id, "allocation": list(allocations)}


def ref(r: str) -> dict:
    return {"reference": r}


CLAIM_CANCELLED = {**res("Claim", "cancelled"), "id": "x"}
CR_FOR_1 = {**res("ClaimResponse", "active", request=ref("Claim/1")), "id": "r-1"}
CR_FOR_X = {**res("ClaimResponse", "active", request=ref("Claim/x/_history/1")), "id": "r-x"}
CR_CANCELLED = {**res("ClaimResponse", "cancelled", request=ref("Claim/1")), "id": "r-c"}
INVOICES = tuple({**res("Invoice", s), "id": f"i-{s}"} for s in ("draft", "issued", "balanced", "cancelled"))
ACCOUNTS = tuple({**res("Account", s), "id": f"a-{s}"} for s in ("on-hold", "inactive"))

WORLD = (CLAIM_ACTIVE, CLAIM_DRAFT, CER, ER, ER_DRAFT, CR, ACCOUNT, CLAIM_CANCELLED, CR_FOR_1, CR_FOR_X, CR_CANCELLED)
WORLD += INVOICES + ACCOUNTS

# (name, type, new, old, extra resources in the world, refused rule or None, expression)
REFERENCE_CASES = [
    (
        "response to active claim",
        "ClaimResponse",
        res("ClaimResponse", "active", request=ref("Claim/1")),
        None,
        (),
        None,
        None,
    ),
    (
        "response to versioned ref",
        "ClaimResponse",
        res("ClaimResponse", "active", request=ref("Claim/1/_history/1")),
        None,
        (),
        None,
        None,
    ),
    (
        "response to draft claim",
        "ClaimResponse",
        res("ClaimResponse", "active", request=ref("Claim/d")),
        None,
        (),
        "ClaimResponse.request-exists",
        "ClaimResponse.request",
    ),
    (
        "response to missing claim",
        "ClaimResponse",
        res("ClaimResponse", "draft", request=ref("Claim/nope")),
        None,
        (),
        "ClaimResponse.request-exists",
        "ClaimResponse.request",
    ),
    (
        "response to absolute url",
        "ClaimResponse",
        res("ClaimResponse", "active", request=ref("http://x.org/fhir/Claim/9")),
        None,
        (),
        None,
        None,
    ),
    (
        "response to identifier",
        "ClaimResponse",
        res("ClaimResponse", "active", request={"identifier": {"value": "9"}}),
        None,
        (),
        None,
        None,
    ),
    (
        "response to urn:uuid",
        "ClaimResponse",
        res("ClaimResponse", "active", request=ref("urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0")),
        None,
        (),
        None,
        None,
    ),
    ("response without request", "ClaimResponse", res("ClaimResponse", "active"), None, (), None, None),
    (
        "cancel response after claim cancelled",
        "ClaimResponse",
        res("ClaimResponse", "cancelled", request=ref("Claim/gone")),
        res("ClaimResponse", "active", request=ref("Claim/gone")),
        (),
        None,
        None,
    ),
    (
        "re-point response at missing claim",
        "ClaimResponse",
        res("ClaimResponse", "draft", request=ref("Claim/nope")),
        res("ClaimResponse", "draft", request=ref("Claim/1")),
        (),
        "ClaimResponse.request-exists",
        "ClaimResponse.request",
    ),
    (
        "eligibility response ok",
        "CoverageEligibilityResponse",
        res("CoverageEligibilityResponse", "active", request=ref("CoverageEligibilityRequest/e1")),
        None,
        (),
        None,
        None,
    ),
    (
        "eligibility response missing",
        "CoverageEligibilityResponse",
        res("CoverageEligibilityResponse", "active", request=ref("CoverageEligibilityRequest/x")),
        None,
        (),
        "CoverageEligibilityResponse.request-exists",
        "CoverageEligibilityResponse.request",
    ),
    (
        "enrollment response ok",
        "EnrollmentResponse",
        res("EnrollmentResponse", "active", request=ref("EnrollmentRequest/n1")),
        None,
        (),
        None,
        None,
    ),
    (
        "enrollment response to draft",
        "EnrollmentResponse",
        res("EnrollmentResponse", "active", request=ref("EnrollmentRequest/n2")),
        None,
        (),
        "EnrollmentResponse.request-exists",
        "EnrollmentResponse.request",
    ),
    (
        "enrollment response missing",
        "EnrollmentResponse",
        res("EnrollmentResponse", "active", request=ref("EnrollmentRequest/x")),
        None,
        (),
        "EnrollmentResponse.request-exists",
        "EnrollmentResponse.request",
    ),
    (
        "allocation targets exist",
        "PaymentReconciliation",
        pr("active", {"target": ref("Claim/1"), "response": ref("ClaimResponse/r1")}, {"target": ref("Account/acc")}),
        None,
        (),
        None,
        None,
    ),
    (
        "allocation target missing",
        "PaymentReconciliation",
        pr("active", {"target": ref("Claim/1")}, {"target": ref("Invoice/x")}),
        None,
        (),
        "PaymentReconciliation.allocation-target-exists",
        "PaymentReconciliation.allocation[1].target",
    ),
    (
        "allocation response missing",
        "PaymentReconciliation",
        pr("active", {"target": ref("Claim/1"), "response": ref("ClaimResponse/x")}),
        None,
        (),
        "PaymentReconciliation.allocation-response-exists",
        "PaymentReconciliation.allocation[0].response",
    ),
    (
        "allocation external",
        "PaymentReconciliation",
        pr("active", {"target": {"identifier": {"value": "AB1"}}, "response": ref("https://x.org/ClaimResponse/1")}),
        None,
        (),
        None,
        None,
    ),
    (
        "allocation to unserved type is external",
        "PaymentReconciliation",
        pr("active", {"target": ref("Device/1")}),
        None,
        (),
        None,
        None,
    ),
    (
        "claim cancel with active allocation",
        "Claim",
        res("Claim", "cancelled"),
        res("Claim", "active"),
        (pr("active", {"target": ref("Claim/1")}),),
        "Claim.cancel-allocated",
        "Claim.status",
    ),
    (
        "claim error with active allocation",
        "Claim",
        {**res("Claim", "entered-in-error"), "id": "d"},
        CLAIM_DRAFT,
        (pr("active", {"target": ref("Claim/d")}),),
        "Claim.cancel-allocated",
        "Claim.status",
    ),
    (
        "claim cancel, allocation cancelled",
        "Claim",
        res("Claim", "cancelled"),
        res("Claim", "active"),
        (pr("cancelled", {"target": ref("Claim/1")}),),
        None,
        None,
    ),
    (
        "claim cancel, other claim allocated",
        "Claim",
        res("Claim", "cancelled"),
        res("Claim", "active"),
        (pr("active", {"target": ref("Claim/2")}),),
        None,
        None,
    ),
    (
        "allocation to a cancelled claim",
        "PaymentReconciliation",
        pr("active", {"target": ref("Claim/1")}, {"target": ref("Claim/x")}),
        None,
        (),
        "PaymentReconciliation.allocation-target-exists",
        "PaymentReconciliation.allocation[1].target",
    ),
    (
        "draft payment to a cancelled claim",
        "PaymentReconciliation",
        pr("draft", {"target": ref("Claim/x")}),
        None,
        (),
        "PaymentReconciliation.allocation-target-exists",
        "PaymentReconciliation.allocation[0].target",
    ),
    (
        "activating rechecks an unchanged allocation",
        "PaymentReconciliation",
        pr("active", {"target": ref("Claim/x")}),
        pr("draft", {"target": ref("Claim/x")}),
        (),
        "PaymentReconciliation.allocation-target-exists",
        "PaymentReconciliation.allocation[0].target",
    ),
    (
        "editing a draft does not recheck an unchanged allocation",
        "PaymentReconciliation",
        pr("draft", {"target": ref("Claim/x")}, {"target": ref("Claim/1")}),
        pr("draft", {"target": ref("Claim/x")}),
        (),
        None,
        None,
    ),
    (
        "cancelling does not recheck",
        "PaymentReconciliation",
        pr("cancelled", {"target": ref("Claim/x")}),
        pr("active", {"target": ref("Claim/x")}),
        (),
        None,
        None,
    ),
    *(
        (
            f"allocation to a {status} invoice",
            "PaymentReconciliation",
            pr("active", {"target": ref(f"Invoice/i-{status}")}),
            None,
            (),
            None if status in ("issued", "balanced") else "PaymentReconciliation.allocation-target-exists",
            None if status in ("issued", "balanced") else "PaymentReconciliation.allocation[0].target",
        )
        for status in ("draft", "issued", "balanced", "cancelled")
    ),
    *(
        (
            f"allocation to an {status} account",
            "PaymentReconciliation",
            pr("active", {"target": ref(f"Account/a-{status}")}),
            None,
            (),
            None if status == "on-hold" else "PaymentReconciliation.allocation-target-exists",
            None if status == "on-hold" else "PaymentReconciliation.allocation[0].target",
        )
        for status in ("on-hold", "inactive")
    ),
    (
        "allocation response cancelled",
        "PaymentReconciliation",
        pr("active", {"target": ref("Claim/1"), "response": ref("ClaimResponse/r-c")}),
        None,
        (),
        "PaymentReconciliation.allocation-response-exists",
        "PaymentReconciliation.allocation[0].response",
    ),
    (
        "response answers the target",
        "PaymentReconciliation",
        pr("active", {"target": ref("Claim/1"), "response": ref("ClaimResponse/r-1")}),
        None,
        (),
        None,
        None,
    ),
    (
        "response answers another claim",
        "PaymentReconciliation",
        pr("active", {"target": ref("Claim/1")}, {"target": ref("Claim/1"), "response": ref("ClaimResponse/r-x")}),
        None,
        (),
        "PaymentReconciliation.allocation-response-answers-target",
        "PaymentReconciliation.allocation[1].response",
    ),
    (
        "response to a claim, target an invoice",
        "PaymentReconciliation",
        pr("active", {"target": ref("Invoice/i-issued"), "response": ref("ClaimResponse/r-1")}),
        None,
        (),
        "PaymentReconciliation.allocation-response-answers-target",
        "PaymentReconciliation.allocation[0].response",
    ),
    (
        "response with an external target cannot be told",
        "PaymentReconciliation",
        pr("active", {"target": ref("https://x.org/Claim/9"), "response": ref("ClaimResponse/r-1")}),
        None,
        (),
        None,
        None,
    ),
    (
        "response without request cannot be told",
        "PaymentReconciliation",
        pr("active", {"target": ref("Claim/1"), "response": ref("ClaimResponse/r1")}),
        None,
        (),
        None,
        None,
    ),
    (
        "activating rechecks an unchanged pair",
        "PaymentReconciliation",
        pr("active", {"target": ref("Claim/1"), "response": ref("ClaimResponse/r-x")}),
        pr("draft", {"target": ref("Claim/1"), "response": ref("ClaimResponse/r-x")}),
        (),
        "PaymentReconciliation.allocation-response-answers-target",
        "PaymentReconciliation.allocation[0].response",
    ),
    (
        "invoice cancel with active allocation",
        "Invoice",
        {**res("Invoice", "cancelled"), "id": "i-issued"},
        {**res("Invoice", "issued"), "id": "i-issued"},
        (pr("active", {"target": ref("Invoice/i-issued")}),),
        "Invoice.cancel-allocated",
        "Invoice.status",
    ),
    (
        "invoice balanced with active allocation",
        "Invoice",
        {**res("Invoice", "balanced"), "id": "i-issued"},
        {**res("Invoice", "issued"), "id": "i-issued"},
        (pr("active", {"target": ref("Invoice/i-issued")}),),
        None,
        None,
    ),
    (
        "account closed after its payments",
        "Account",
        {**res("Account", "inactive"), "id": "acc"},
        ACCOUNT,
        (pr("active", {"target": ref("Account/acc")}),),
        None,
        None,
    ),
    (
        "account in error with active allocation",
        "Account",
        {**res("Account", "entered-in-error"), "id": "acc"},
        ACCOUNT,
        (pr("active", {"target": ref("Account/acc")}),),
        "Account.error-allocated",
        "Account.status",
    ),
    (
        "claim create is not a cancel",
        "Claim",
        res("Claim", "active"),
        None,
        (pr("active", {"target": ref("Claim/1")}),),
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    "name,rtype,new,old,extra,rule,expression", REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES]
)
async def test_references(name, rtype, new, old, extra, rule, expression):
    err = await async_refusal(check_references(rtype, new, old, Reads(*WORLD, *extra)))
    assert (err.extensions["rule"] if err else None) == rule
    if err:
        issue = err.extensions["operationOutcome"]["issue"][0]
        assert issue["expression"] == [expression]
        assert issue["code"] == "business-rule" and rule in issue["diagnostics"]


async def test_missing_reference_names_the_fix():
    reads = Reads(*WORLD)
    err = await async_refusal(
        check_references("ClaimResponse", res("ClaimResponse", "active", request=ref("Claim/nope")), None, reads)
    )
    assert "Claim/nope" in err.message and "does not exist" in err.message and "create" in err.message
    assert err.extensions["allowed"] == ["active"] and err.extensions["currentStatus"] is None
    err = await async_refusal(
        check_references("ClaimResponse", res("ClaimResponse", "active", request=ref("Claim/d")), None, reads)
    )
    assert err.extensions["currentStatus"] == "draft" and "'draft'" in err.message


async def test_cancel_blocked_search_and_message():
    reads = Reads(*WORLD, pr("active", {"target": ref("Claim/1")}, id="p9"))
    err = await async_refusal(check_references("Claim", res("Claim", "cancelled"), res("Claim", "active"), reads))
    assert reads.searches == [("PaymentReconciliation", {"allocation-target": "Claim/1", "status": "active"})]
    assert "PaymentReconciliation/p9" in err.message
    assert err.extensions["currentStatus"] == "active" and err.extensions["allowed"] == []


async def test_several_broken_references_give_several_issues():
    new = pr("active", {"target": ref("Claim/x"), "response": ref("ClaimResponse/y")}, {"target": ref("Invoice/z")})
    err = await async_refusal(check_references("PaymentReconciliation", new, None, Reads(*WORLD)))
    assert sorted(i["expression"][0] for i in err.issues) == [
        "PaymentReconciliation.allocation[0].response",
        "PaymentReconciliation.allocation[0].target",
        "PaymentReconciliation.allocation[1].target",
    ]


async def test_unchanged_allocations_are_not_reread():
    old = pr("active", {"target": ref("Claim/gone")})
    reads = Reads(*WORLD)
    assert (
        await async_refusal(
            check_references("PaymentReconciliation", pr("cancelled", {"target": ref("Claim/gone")}), old, reads)
        )
        is None
    )


def _codes(resource_type: str) -> set[str]:
    el = spec().element(f"{resource_type}.status")
    return set(el.codes) if el.codes else {c.strip() for c in el.short.split("|")}


def test_rule_tables_name_served_types_and_real_paths():
    for r in REFERENCE_RULES:
        el = spec().element(f"{r.resource_type}.{r.path}")
        assert el is not None and "Reference" in el.types, r.rule
        assert set(r.target_types or ()) <= set(el.targets), r.rule
        for target, statuses in r.by_type.items():
            assert target in SERVED_RESOURCES and set(statuses or ()) <= _codes(target), (r.rule, target)
    # R5's allocation.target types, each with the statuses it is in force in.
    (allocation,) = [r for r in REFERENCE_RULES if r.path == "allocation.target"]
    assert set(allocation.by_type) == set(spec().element("PaymentReconciliation.allocation.target").targets)
    for a in ANSWER_RULES:
        for name in (a.response, a.target):
            assert "Reference" in spec().element(f"{a.resource_type}.{a.path}.{name}").types, a.rule
    for m in AMOUNT_RULES:
        assert "Money" in spec().element(f"{m.resource_type}.{m.total}").types, m.rule
        assert "Money" in spec().element(f"{m.resource_type}.{m.parts}").types, m.rule
    for rtype, statuses in IN_FORCE.items():
        assert set(statuses) <= set(lifecycle(rtype).codes) and not set(statuses) & lifecycle(rtype).deletable
    for rr in REFERRER_RULES:
        assert set(rr.search) <= set(spec().search_params[rr.search_type]), rr.rule
        assert rr.into <= set(lifecycle(rr.resource_type).codes)


# ---- the README table


def test_describe_rules_covers_every_table_and_rule():
    text = describe_rules()
    assert text == describe_rules()
    for name in LIFECYCLES:
        assert f"`{name}`" in text
    for r in (*REFERENCE_RULES, *REFERRER_RULES, *ANSWER_RULES, *AMOUNT_RULES):
        assert f"`{r.rule}`" in text
    for rtype in IN_FORCE:
        assert f"| {rtype} | `" in text
    assert "| `draft` | `active`, `entered-in-error` | yes | yes | yes |" in text
    assert "| `active` | `cancelled` | no | yes | no |" in text


def test_readme_shows_the_rules_as_they_are() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert describe_rules().strip() in readme, "README.md's lifecycle tables drifted: paste describe_rules() output"


async def test_every_reference_rule_reads_its_targets_in_one_batch():
    new = pr(
        "active",
        *({"target": ref(f"Claim/c{i}"), "response": ref(f"ClaimResponse/r{i}")} for i in range(50)),
        {"target": ref("Account/acc")},
        {"target": ref("Claim/c0")},
    )
    reads = Reads(*WORLD)
    err = await async_refusal(check_references("PaymentReconciliation", new, None, reads))
    assert len(reads.batches) == 1, reads.batches
    (batch,) = reads.batches
    assert sorted(batch) == ["Account", "Claim", "ClaimResponse"] and len(set(batch["Claim"])) == 50
    # Every missing target is still its own issue, in the order of the allocations (ClaimResponse/r1 exists).
    expressions = [i["expression"][0] for i in err.issues]
    assert len(expressions) == 50 + 49 + 1 and "PaymentReconciliation.allocation[1].response" not in expressions
    assert expressions[:2] == [
        "PaymentReconciliation.allocation[0].target",
        "PaymentReconciliation.allocation[1].target",
    ]


async def test_unchanged_references_are_not_in_the_batch():
    old = pr("active", {"target": ref("Claim/gone")})
    reads = Reads(*WORLD)
    await check_references("PaymentReconciliation", pr("cancelled", {"target": ref("Claim/gone")}), old, reads)
    assert reads.batches == []


# ---- amounts: a document-level rule (BAD_USER_INPUT)


def money(value: str, currency: str | None = "USD") -> dict:
    return {"value": Decimal(value), **({"currency": currency} if currency else {})}


def paid(amount: dict | None, *values: dict) -> dict:
    doc = pr("draft", *({"target": ref("Claim/1"), "amount": v} for v in values))
    return {**doc, **({"amount": amount} if amount else {})}


# (name, payment, old, refused expressions)
AMOUNT_CASES = [
    ("within", paid(money("100.00"), money("30.00"), money("70.00")), None, []),
    ("over", paid(money("100.00"), money("70.00"), money("70.00")), None, ["PaymentReconciliation.allocation.amount"]),
    (
        "another currency",
        paid(money("100.00"), money("70.00"), money("70.00", "EUR")),
        None,
        ["PaymentReconciliation.allocation[1].amount.currency"],
    ),
    (
        "another currency and over",
        paid(money("10.00"), money("70.00", "EUR"), money("70.00")),
        None,
        ["PaymentReconciliation.allocation[0].amount.currency", "PaymentReconciliation.allocation.amount"],
    ),
    (
        "an allocation without currency is in the payment's",
        paid(money("10.00"), money("6"), money("6", None)),
        None,
        ["PaymentReconciliation.allocation.amount"],
    ),
    ("payment without amount", paid(None, money("70.00"), money("70.00")), None, []),
    (
        "payment without currency",
        paid(money("10", None), money("6", None), money("6", None)),
        None,
        ["PaymentReconciliation.allocation.amount"],
    ),
    (
        # 34 digits: Python's default decimal context (28 digits) would round the sum down to the amount
        "summed exactly",
        paid(
            money("100000000000000000.0000000000000001", None),
            money("50000000000000000.0000000000000001", None),
            money("50000000000000000.0000000000000001", None),
        ),
        None,
        ["PaymentReconciliation.allocation.amount"],
    ),
    (
        "unchanged amounts are not re-judged",
        {**paid(money("100.00"), money("70.00"), money("70.00")), "status": "cancelled"},
        paid(money("100.00"), money("70.00"), money("70.00")),
        [],
    ),
    (
        "a changed allocation is",
        paid(money("100.00"), money("70.00"), money("70.00")),
        paid(money("100.00"), money("70.00")),
        ["PaymentReconciliation.allocation.amount"],
    ),
]


@pytest.mark.parametrize("name,new,old,expressions", AMOUNT_CASES, ids=[c[0] for c in AMOUNT_CASES])
def test_amounts(name, new, old, expressions):
    try:
        check_document("PaymentReconciliation", new, old)
    except FinGateError as e:
        assert e.code == BAD_USER_INPUT
        assert [i["expression"][0] for i in e.issues] == expressions
        assert all("PaymentReconciliation.allocation-within-amount" in i["diagnostics"] for i in e.issues)
    else:
        assert expressions == []
