"""PaymentReconciliation as its specification page defines it: the added elements, an optional amount, ER2500."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from subprocess import PIPE
from typing import Any

import httpx
import pytest

from app.errors import FinGateError
from app.fhir import delta
from app.fhir.model import DEFINITIONS_DIR, spec
from app.load import load
from app.settings import Settings
from app.store import Store
from app.validation import validate
from app.writes import Writer
from tests.harness import (
    EXAMPLES,
    as_response_json,
    client_for,
    error_codes,
    gql,
    json_with_decimals,
    ok,
    read_json,
    schema,
    selection_for,
    without_nulls,
)

PR = "PaymentReconciliation"
ER2500 = EXAMPLES / "PaymentReconciliation-ER2500.json"
PAYMENT = "http://terminology.hl7.org/CodeSystem/payment-type"
NOTE_CLASS = {"coding": [{"system": "http://example.org/note-class", "code": "remit"}], "text": "Remittance advice"}


def draft(**extra: Any) -> dict[str, Any]:
    """A draft payment without an amount: what the page allows and R5 refuses."""
    return {
        "resourceType": PR, "status": "draft", "type": {"coding": [{"system": PAYMENT, "code": "payment"}]},
        "created": "2026-11-20", "date": "2026-11-20", "paymentIssuer": {"reference": "Organization/demo-payer"},
        **extra,
    }  # fmt: skip


def usd(value: str) -> dict[str, Any]:
    return {"value": Decimal(value), "currency": "USD"}


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    query = f"mutation($res: {PR}Input!) {{ {PR}Create(res: $res) {{ id }} }}"
    return await gql(client, query, {"res": resource})  # decimals go as strings, their digits kept


@pytest.fixture(scope="module")
async def clients(demo_store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    compiled = client_for(demo_store, settings=Settings(compiled=True))
    reference = client_for(demo_store, settings=Settings(compiled=False))
    async with compiled, reference:
        yield compiled, reference


async def read_both(clients: tuple[httpx.AsyncClient, httpx.AsyncClient], query: str, **variables: Any) -> Any:
    """The answer of the compiled path, asserting it compiled and that graphql-core's is the same bytes."""
    compiled, reference = clients
    engine = compiled.fingate_app.state.compiled_engine  # type: ignore[attr-defined]
    ran = engine.stats["compiled"]
    body = json.dumps({"query": query, "variables": variables})
    headers = {"content-type": "application/json"}
    a = await compiled.post("/graphql", content=body, headers=headers)
    b = await reference.post("/graphql", content=body, headers=headers)
    assert engine.stats["compiled"] == ran + 1, "the compiled path fell back"
    assert a.status_code == b.status_code == 200
    assert a.content == b.content
    return ok(json.loads(a.content))


# ---- the schema ------------------------------------------------------------------------------------------------


def _fields(type_name: str) -> list[tuple[str, str]]:
    from app.graphql.compat import graphql_schema

    return [(n, str(f.type)) for n, f in graphql_schema(schema()).type_map[type_name].fields.items()]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("type_name", "expected"),
    [
        (PR, [("status", "String"), ("_status", "Element"), ("statusReason", "String"), ("_statusReason", "Element"), ("kind", "CodeableConcept")]),
        (f"{PR}Input", [("status", "String"), ("_status", "ElementInput"), ("statusReason", "String"), ("_statusReason", "ElementInput"), ("kind", "CodeableConceptInput")]),
        (f"{PR}Allocation", [("amount", "Money"), ("noteNumber", "[Int]"), ("_noteNumber", "[Element]")]),
        (f"{PR}AllocationInput", [("amount", "MoneyInput"), ("noteNumber", "[Int]"), ("_noteNumber", "[ElementInput]")]),
        (f"{PR}ProcessNote", [("modifierExtension", "[Extension!]"), ("class", "CodeableConcept"), ("number", "Int"), ("_number", "Element"), ("type", "String")]),
        (f"{PR}ProcessNoteInput", [("modifierExtension", "[ExtensionInput!]"), ("class", "CodeableConceptInput"), ("number", "Int"), ("_number", "ElementInput"), ("type", "String")]),
    ],
)  # fmt: skip
def test_the_added_elements_are_served_in_element_order(type_name: str, expected: list[tuple[str, str]]) -> None:
    fields = _fields(type_name)
    start = fields.index(expected[0])
    assert fields[start : start + len(expected)] == expected


def test_the_model_follows_the_page() -> None:
    model = spec()
    assert model.element(f"{PR}.amount").min == 0  # type: ignore[union-attr]
    assert [e.name for e in model.types[f"{PR}ProcessNote"].elements][-4:] == ["class", "number", "type", "text"]
    added = {p: model.element(p) for p in (f"{PR}.statusReason", f"{PR}.allocation.noteNumber", f"{PR}.processNote.class", f"{PR}.processNote.number")}  # fmt: skip
    assert {p: (e.types, e.min, e.is_list) for p, e in added.items() if e} == {
        f"{PR}.statusReason": (("string",), 0, False),
        f"{PR}.allocation.noteNumber": (("positiveInt",), 0, True),
        f"{PR}.processNote.class": (("CodeableConcept",), 0, False),
        f"{PR}.processNote.number": (("positiveInt",), 0, False),
    }
    # Every element carries R5's ele-1, the added ones too.
    assert all("ele-1" in {c.key for c in e.constraints} for e in added.values() if e)


# ---- written and read back, both execution paths --------------------------------------------------------------

ADDED = {
    "statusReason": {"statusReason": "Held for remittance advice"},
    "allocation.noteNumber": {"allocation": [{"amount": usd("0.00"), "noteNumber": [1, 2, 2147483647]}]},
    "processNote.class": {"processNote": [{"class": NOTE_CLASS, "text": "See the advice."}]},
    "processNote.number": {"processNote": [{"number": 7, "type": "display", "text": "Seventh note."}]},
    "primitive extensions": {
        "statusReason": "Held",
        "_statusReason": {"extension": [{"url": "http://example.org/why", "valueString": "audit"}]},
        "allocation": [
            {
                "noteNumber": [1, None],
                "_noteNumber": [
                    None,
                    {"id": "n2", "extension": [{"url": "http://example.org/n", "valueBoolean": True}]},
                ],
            }
        ],  # fmt: skip
        "processNote": [{"number": 3, "_number": {"id": "n3"}, "text": "x"}],
    },
}


@pytest.mark.parametrize("element", list(ADDED))
async def test_an_added_element_is_stored_and_read_back_exactly(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], demo_store: Store, element: str
) -> None:
    resource = draft(**ADDED[element])
    id = ok(await create(clients[0], resource))[f"{PR}Create"]["id"]
    stored = await demo_store.get(PR, id)
    assert stored is not None
    assert {k: v for k, v in stored.items() if k not in ("id", "meta")} == resource
    # Stored in the page's element order (the input type's field order), whatever order the client wrote.
    order = [e.name for e in spec().types[PR].elements]
    keys = [k for k in stored if not k.startswith("_") and k not in ("resourceType", "id", "meta")]
    assert keys == sorted(keys, key=order.index)
    query = f"query($id: ID!) {{ {PR}(id: $id) {{ {selection_for(resource)} }} }}"
    data = await read_both(clients, query, id=id)
    assert data[PR] == as_response_json(resource)


async def test_the_page_elements_in_a_full_payment_on_both_paths(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    resource = draft(
        statusReason="Reissued after a bank return",
        amount=usd("25.00"),
        allocation=[
            {"target": {"reference": "Claim/demo-claim-01"}, "amount": usd("20.00"), "noteNumber": [1]},
            {"amount": usd("5.00"), "noteNumber": [1, 2]},
        ],
        processNote=[
            {"class": NOTE_CLASS, "number": 1, "type": "display", "text": "Partial payment."},
            {"number": 2, "type": "print", "text": "Balance follows."},
        ],
    )
    id = ok(await create(clients[0], resource))[f"{PR}Create"]["id"]
    query = (
        "query($id: ID!) { PaymentReconciliation(id: $id) { status statusReason amount { value currency } "
        "allocation { target { reference } amount { value } noteNumber } "
        "processNote { class { coding { system code } text } number type text } } }"
    )
    data = await read_both(clients, query, id=id)
    assert data[PR] == {
        "status": "draft",
        "statusReason": "Reissued after a bank return",
        "amount": {"value": "25.00", "currency": "USD"},
        "allocation": [
            {"target": {"reference": "Claim/demo-claim-01"}, "amount": {"value": "20.00"}, "noteNumber": [1]},
            {"target": None, "amount": {"value": "5.00"}, "noteNumber": [1, 2]},
        ],
        "processNote": [
            {"class": NOTE_CLASS, "number": 1, "type": "display", "text": "Partial payment."},
            {"class": None, "number": 2, "type": "print", "text": "Balance follows."},
        ],
    }


# ---- refused, pointing at the element, storing nothing ---------------------------------------------------------

REFUSED = [
    ("noteNumber 0", {"allocation": [{"noteNumber": [0]}]}, f"{PR}.allocation[0].noteNumber[0]", "0 is out of range for positiveInt"),
    ("noteNumber -1", {"allocation": [{"noteNumber": [1]}, {"noteNumber": [2, -1]}]}, f"{PR}.allocation[1].noteNumber[1]", "-1 is out of range for positiveInt"),
    ("number 0", {"processNote": [{"number": 0, "text": "x"}]}, f"{PR}.processNote[0].number", "0 is out of range for positiveInt"),
    ("number -1", {"processNote": [{"number": -1, "text": "x"}]}, f"{PR}.processNote[0].number", "-1 is out of range for positiveInt"),
    ("statusReason empty", {"statusReason": ""}, f"{PR}.statusReason", "'' is not a valid string (not empty)"),
    ("class empty (ele-1)", {"processNote": [{"class": {}, "text": "x"}]}, f"{PR}.processNote[0].class", "ele-1"),
    ("note type still bound", {"processNote": [{"number": 1, "type": "shout"}]}, f"{PR}.processNote[0].type", "is not one of display | print | printoper"),
    ("status still bound", {"status": "pending"}, f"{PR}.status", "is not one of"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "extra", "expression", "message"), REFUSED, ids=[c[0] for c in REFUSED])
async def test_bad_page_elements_are_refused_at_their_path_and_nothing_is_stored(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    demo_store: Store,
    case: str,
    extra: dict[str, Any],
    expression: str,
    message: str,
) -> None:
    before = await demo_store.db[PR].count_documents({}), await demo_store.db[f"{PR}_history"].count_documents({})
    result = await create(clients[0], draft(**extra))
    assert error_codes(result) == ["BAD_USER_INPUT"], result
    issues = result["errors"][0]["extensions"]["operationOutcome"]["issue"]
    assert [i["expression"] for i in issues] == [[expression]], issues
    assert message in issues[0]["diagnostics"] and message in result["errors"][0]["message"]
    after = await demo_store.db[PR].count_documents({}), await demo_store.db[f"{PR}_history"].count_documents({})
    assert after == before


@pytest.mark.parametrize(
    ("change", "expression", "message"),
    [
        ({"statusReason": 5}, f"{PR}.statusReason", "expected a string (JSON string), got number 5"),
        ({"allocation": [{"noteNumber": 1}]}, f"{PR}.allocation[0].noteNumber", "expected an array of positiveInt"),
        (
            {"allocation": [{"noteNumber": ["1"]}]},
            f"{PR}.allocation[0].noteNumber[0]",
            "expected a positiveInt (JSON integer), got string '1'",
        ),  # fmt: skip
        ({"processNote": [{"number": Decimal("1.5")}]}, f"{PR}.processNote[0].number", "expected a positiveInt"),
        (
            {"processNote": [{"class": "remit"}]},
            f"{PR}.processNote[0].class",
            "expected a JSON object (CodeableConcept)",
        ),
        ({"processNote": [{"class": {"code": "remit"}}]}, f"{PR}.processNote[0].class.code", "unknown element 'code'"),
        # The model never sees the page's `_x` siblings: the walk checks them as Elements.
        (
            {"statusReason": "x", "_statusReason": {"reason": "y"}},
            f"{PR}._statusReason.reason",
            "unknown element 'reason': not an element of Element",
        ),  # fmt: skip
        (
            {"allocation": [{"noteNumber": [1, 2], "_noteNumber": [None, {"id": ""}]}]},
            f"{PR}.allocation[0]._noteNumber[1].id",
            "'' is not a valid string",
        ),  # fmt: skip
        (
            {"processNote": [{"number": 1, "_number": [{"id": "n"}]}]},
            f"{PR}.processNote[0]._number",
            "expected a JSON object (Element)",
        ),  # fmt: skip
    ],
)
def test_fhir_json_of_the_wrong_type_is_refused_at_its_path(
    change: dict[str, Any], expression: str, message: str
) -> None:
    """What `fingate load` hands validation (JSON, not GraphQL-typed input)."""
    with pytest.raises(FinGateError) as refused:
        validate(PR, draft(**change))
    assert [i["expression"] for i in refused.value.issues or []] == [[expression]]
    assert message in refused.value.message


def test_a_contained_payment_follows_the_page_too() -> None:
    """fhir.resources' R5 model checks contained resources with R5's class: it is shown them without the page's
    elements and its verdict on a missing amount is dropped there as well."""
    payment = draft(id="p", statusReason="Held", processNote=[{"number": 1, "text": "x"}])
    holder = {
        **draft(statusReason="Holder", amount=usd("1.00")),
        "contained": [payment],
        "extension": [{"url": "http://example.org/payment", "valueReference": {"reference": "#p"}}],
    }
    assert validate(PR, holder)["contained"] == [payment]
    holder["contained"] = [{**payment, "processNote": [{"number": 0, "text": "x"}]}]
    with pytest.raises(FinGateError) as refused:
        validate(PR, holder)
    assert [i["expression"] for i in refused.value.issues or []] == [[f"{PR}.contained[0].processNote[0].number"]]


def test_r5_invariants_still_apply_beside_the_page_elements() -> None:
    """`per-1` (a period ends after it starts) on a payment that also has the page's elements."""
    with pytest.raises(FinGateError) as refused:
        validate(PR, draft(statusReason="x", period={"start": "2026-02-01", "end": "2026-01-01"}))
    assert [i["expression"] for i in refused.value.issues or []] == [[f"{PR}.period"]]


# ---- amount is optional ---------------------------------------------------------------------------------------


async def test_a_draft_without_an_amount_is_accepted(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], demo_store: Store
) -> None:
    resource = draft(allocation=[{"target": {"reference": "Claim/demo-claim-01"}, "amount": usd("10.00")}])
    id = ok(await create(clients[0], resource))[f"{PR}Create"]["id"]
    stored = await demo_store.get(PR, id)
    assert stored is not None and "amount" not in stored
    data = await read_both(clients, "query($id: ID!) { PaymentReconciliation(id: $id) { id status amount { value } } }", id=id)  # fmt: skip
    assert data[PR] == {"id": id, "status": "draft", "amount": None}


async def test_an_amountless_payment_is_limited_by_its_targets_only(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """No amount: no allocation-within-amount check (nothing to check against); the targets' overpayment rule holds."""
    over = draft(
        status="active", allocation=[{"target": {"reference": "Claim/demo-claim-04"}, "amount": usd("500.00")}]
    )
    refused = await create(clients[0], over)
    assert error_codes(refused) == ["STATUS_RULE"], refused
    assert "Claim/demo-claim-04" in refused["errors"][0]["message"]
    spread = [{"amount": usd("300.00")}, {"amount": usd("400.00")}]  # no target: nothing limits them
    assert ok(await create(clients[0], draft(status="active", allocation=spread)))


async def test_an_active_payment_is_cancelled_with_a_status_reason(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], demo_store: Store
) -> None:
    """statusReason changes with the status; the rest of an active payment is frozen."""
    active = draft(status="active", amount=usd("2.00"))
    id = ok(await create(clients[0], active))[f"{PR}Create"]["id"]
    update = f"mutation($id: ID!, $res: {PR}Input!) {{ {PR}Update(id: $id, res: $res) {{ status statusReason }} }}"
    edited = {**active, "statusReason": "Checked", "disposition": "changed"}
    frozen = await gql(clients[0], update, {"id": id, "res": edited})
    assert error_codes(frozen) == ["STATUS_RULE"], frozen
    cancelled = {**active, "status": "cancelled", "statusReason": "Bank returned it"}
    data = ok(await gql(clients[0], update, {"id": id, "res": cancelled}))
    assert data[f"{PR}Update"] == {"status": "cancelled", "statusReason": "Bank returned it"}
    stored = await demo_store.get(PR, id)
    assert stored is not None and stored["statusReason"] == "Bank returned it"


# ---- billing views with an amountless payment ------------------------------------------------------------------


async def test_billing_views_with_an_amountless_payment(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    paying = draft(
        status="active", allocation=[{"target": {"reference": "Claim/demo-claim-04"}, "amount": usd("1.00")}]
    )
    id = ok(await create(clients[0], paying))[f"{PR}Create"]["id"]
    amounts = "{ currency value }"
    query = (
        f"query($id: ID!) {{ PaymentReconciliation(id: $id) {{ billing {{ amount {amounts} allocated {amounts} "
        f"unallocated {amounts} }} allocation {{ target {{ resource {{ ... on Claim {{ id billing {{ paid {amounts} "
        f"payments {{ payment {{ reference }} amount {amounts} }} }} }} }} }} }} }} }}"
    )
    data = await read_both(clients, query, id=id)
    payment = data[PR]
    assert payment["billing"] == {"amount": [], "allocated": [{"currency": "USD", "value": "1.00"}], "unallocated": None}  # fmt: skip
    claim = payment["allocation"][0]["target"]["resource"]["billing"]
    assert {"payment": {"reference": f"{PR}/{id}"}, "amount": [{"currency": "USD", "value": "1.00"}]} in claim["payments"]  # fmt: skip
    lists = await read_both(clients, f'{{ {PR}List(_id: "{id}") {{ id billing {{ unallocated {amounts} }} }} }}')
    assert lists[f"{PR}List"] == [{"id": id, "billing": {"unallocated": None}}]


# ---- ER2500 ----------------------------------------------------------------------------------------------------


def er2500_on_the_page() -> dict[str, Any]:
    """R5's ER2500 with the page's elements, each where the page puts it."""
    example = read_json(ER2500)
    out: dict[str, Any] = {}
    for key, value in example.items():
        out[key] = value
        if key == "status":
            out["statusReason"] = "Settled mid-month"
    for i, allocation in enumerate(out["allocation"]):
        allocation["noteNumber"] = [1] if i < 2 else [1, 2]
    out["processNote"] = [
        {"class": NOTE_CLASS, "number": 1, **out["processNote"][0]},
        {"number": 2, "type": "print", "text": "Advance recovered on the next settlement."},
    ]
    return out


def full_selection(resource: dict[str, Any]) -> str:
    return selection_for({k: v for k, v in resource.items() if k != "meta"}) + " meta { tag { system code display } }"


async def test_the_seed_er2500_round_trips(clients: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    """The demo seed loads R5's examples at start-up; ER2500 reads back as the file says, on both paths."""
    example = read_json(ER2500)
    data = await read_both(clients, f'{{ {PR}(id: "ER2500") {{ {full_selection(example)} }} }}')
    assert without_nulls(data[PR]) == as_response_json(example)


@pytest.mark.parametrize("page", [False, True], ids=["r5", "with the page's elements"])
async def test_er2500_loads_with_fingate_load_and_round_trips(store: Store, tmp_path: Path, page: bool) -> None:
    example = er2500_on_the_page() if page else read_json(ER2500)
    path = tmp_path / "PaymentReconciliation-ER2500.json"
    path.write_text(json_with_decimals(example))
    report = await load(Writer(store), [path])
    assert report.rejected == [] and report.created == 1
    stored = await store.get(PR, "ER2500")
    assert stored is not None
    assert list(stored) == list(example)  # the file's order, which puts each page element where the page does
    assert {k: v for k, v in stored.items() if k != "meta"} == {k: v for k, v in example.items() if k != "meta"}
    assert str(stored["amount"]["value"]) == "7000.00"
    compiled = client_for(store, settings=Settings(compiled=True))
    reference = client_for(store, settings=Settings(compiled=False))
    async with compiled, reference:
        data = await read_both((compiled, reference), f'{{ {PR}(id: "ER2500") {{ {full_selection(example)} }} }}')
    assert without_nulls(data[PR]) == as_response_json(example)
    again = await load(Writer(store), [path])
    assert again.unchanged == 1 and again.rejected == []


async def test_er2500_with_the_page_elements_through_the_fingate_load_command(mongo_uri: str, tmp_path: Path) -> None:
    example = er2500_on_the_page()
    path = tmp_path / "PaymentReconciliation-ER2500.json"
    path.write_text(json_with_decimals(example))
    db = f"cli_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MONGODB_URI": mongo_uri, "FINGATE_DB": db}
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "load", str(path), env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = (b.decode() for b in await asyncio.wait_for(command.communicate(), 300))
    assert command.returncode == 0, out + err
    assert "loaded 1" in out and "rejected 0" in out, out
    store = Store(mongo_uri, db)
    try:
        stored = await store.get(PR, "ER2500")
        assert stored is not None
        assert list(stored) == list(example)
        assert {k: v for k, v in stored.items() if k != "meta"} == {k: v for k, v in example.items() if k != "meta"}
    finally:
        await store.drop_all()
        await store.close()


@pytest.mark.parametrize("page", [False, True], ids=["r5", "with the page's elements"])
async def test_er2500_round_trips_through_a_create_mutation(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], demo_store: Store, page: bool
) -> None:
    example = er2500_on_the_page() if page else read_json(ER2500)
    sent = copy.deepcopy(example)
    del sent["id"]
    id = ok(await create(clients[0], sent))[f"{PR}Create"]["id"]
    stored = await demo_store.get(PR, id)
    assert stored is not None
    assert {k: v for k, v in stored.items() if k not in ("id", "meta")} == {
        k: v for k, v in example.items() if k not in ("id", "meta")
    }
    assert stored["meta"]["tag"] == example["meta"]["tag"]
    data = await read_both(clients, f"query($id: ID!) {{ {PR}(id: $id) {{ {full_selection(sent)} }} }}", id=id)
    assert without_nulls(data[PR]) == as_response_json(sent)


# ---- the README's example ---------------------------------------------------------------------------------------


def readme_example() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## PaymentReconciliation: the specification page", 1)[1]
    return section.split("```graphql\n", 1)[1].split("```", 1)[0]


async def test_the_readme_example_answers_as_shown(clients: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    mutation = readme_example()
    data = ok(await gql(clients[0], mutation))[f"{PR}Create"]
    assert data["amount"] is None and data["statusReason"] == "Awaiting the remittance advice"
    assert data["allocation"] == [{"noteNumber": [1], "amount": {"value": "10.00"}}]
    assert data["processNote"] == [{"class": {"text": "remittance"}, "number": 1, "type": "display", "text": "Advice to follow."}]  # fmt: skip
    assert data["billing"] == {"amount": [], "allocated": [{"currency": "USD", "value": "10.00"}], "unallocated": None}
    refused = await gql(clients[0], mutation.replace("noteNumber: [1]", "noteNumber: [0]"))
    issues = refused["errors"][0]["extensions"]["operationOutcome"]["issue"]
    assert [i["expression"] for i in issues] == [[f"{PR}.allocation[0].noteNumber[0]"]]


# ---- the delta meets the definitions it was written against ---------------------------------------------------


def _r5_definition() -> dict[str, Any]:
    return json.loads((DEFINITIONS_DIR / f"StructureDefinition-{PR}.json").read_text())  # type: ignore[no-any-return]


def test_the_delta_refuses_definitions_it_was_not_written_for() -> None:
    """Applied twice (the elements already there), on a definition without an anchor, or where R5's cardinality
    is not what the delta says: start-up fails, naming the element, rather than serve a guess."""
    with pytest.raises(ValueError, match=r"PaymentReconciliation.amount is 0..1 in R5, not"):
        delta.apply(delta.apply(_r5_definition()))
    current = _r5_definition()  # a later R5 that has statusReason of its own
    current["snapshot"]["element"].append({"path": f"{PR}.statusReason", "min": 0, "max": "1"})
    with pytest.raises(ValueError, match=r"PaymentReconciliation.statusReason is already in the definition"):
        delta.apply(current)
    unanchored = _r5_definition()
    unanchored["snapshot"]["element"] = [
        e for e in unanchored["snapshot"]["element"] if e["path"] != f"{PR}.processNote.type"
    ]
    with pytest.raises(ValueError, match=r"placed at PaymentReconciliation.processNote.type"):
        delta.apply(unanchored)
    changed = _r5_definition()
    next(e for e in changed["snapshot"]["element"] if e["path"] == f"{PR}.amount")["min"] = 0
    with pytest.raises(ValueError, match=r"PaymentReconciliation.amount is 0..1 in R5"):
        delta.apply(changed)


def test_other_definitions_are_read_as_published_and_the_page_elements_inserted_in_place() -> None:
    claim = json.loads((DEFINITIONS_DIR / "StructureDefinition-Claim.json").read_text())
    assert delta.apply(claim) is claim
    expected = [e["path"] for e in _r5_definition()["snapshot"]["element"]]
    expected.insert(expected.index(f"{PR}.status") + 1, f"{PR}.statusReason")
    expected.insert(expected.index(f"{PR}.allocation.amount") + 1, f"{PR}.allocation.noteNumber")
    at = expected.index(f"{PR}.processNote.type")
    expected[at:at] = [f"{PR}.processNote.class", f"{PR}.processNote.number"]
    assert [e["path"] for e in delta.apply(_r5_definition())["snapshot"]["element"]] == expected
