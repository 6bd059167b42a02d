"""SMART `patient/` scopes see and write only the token's patient's compartment, on both execution paths."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.auth import CREATE, READ, UPDATE, AuthError, parse_scopes, principal_for, token_patient
from app.fhir.model import COMPARTMENT_SELF, SERVED_RESOURCES, patient_compartment
from app.http import loads
from app.settings import Settings
from app.store import TENANT, Store, search
from app.writes import Writer
from tests.harness import client_for, error_codes, ok
from tests.test_mutations import PATIENT, claim
from tests.tokens import SECRET, authed_client, token

IN_COMPARTMENT = [t for t, params in patient_compartment().items() if params]
OUTSIDE = [t for t, params in patient_compartment().items() if not params]
# demo-patient-1 has demo claims, a coverage, an invoice with two versions; pat2 is in the data only as the
# target of Patient/pat1's `link`; `example` has an Account, an Invoice, a RelatedPerson and its own Patient;
# `1` is referenced by the R5 example claims but has no Patient resource.
PATIENTS = ["demo-patient-1", "demo-patient-2", "demo-patient-3", "pat2", "example", "1"]
EVERYTHING = "user/*.rs"
ALIASES = 25

Answer = dict[str, Any]
Compartments = dict[str, dict[str, set[str]]]


@pytest.fixture(scope="module")
async def clients(demo_store: Store) -> AsyncIterator[dict[bool, httpx.AsyncClient]]:
    compiled = client_for(demo_store, settings=Settings(jwt_secret=SECRET, compiled=True))
    reference = client_for(demo_store, settings=Settings(jwt_secret=SECRET, compiled=False))
    async with compiled, reference:
        yield {True: compiled, False: reference}


async def _post(client: httpx.AsyncClient, query: str, tok: str, variables: dict[str, Any] | None) -> bytes:
    body = json.dumps({"query": query, "variables": variables or {}}, default=str)
    response = await client.post(
        "/graphql", content=body, headers={"content-type": "application/json", "authorization": f"Bearer {tok}"}
    )
    assert response.status_code == 200, response.text
    return response.content


async def ask(
    clients: dict[bool, httpx.AsyncClient], query: str, tok: str, variables: dict[str, Any] | None = None
) -> Answer:
    """The answer of both execution paths, which must be the same bytes."""
    compiled = await _post(clients[True], query, tok, variables)
    reference = await _post(clients[False], query, tok, variables)
    assert compiled == reference
    return loads(compiled)  # type: ignore[no-any-return]


def as_patient(store: Store, patient: str | None, scope: str = "patient/*.rs", **claims: Any) -> str:
    extra = {"patient": patient} if patient is not None else {}
    return token(scope=scope, tenant=store.tenant, sub=f"app-for-{patient}", **extra, **claims)


def as_user(store: Store, scope: str = EVERYTHING) -> str:
    return token(scope=scope, tenant=store.tenant, sub="clerk")


def _member(resource_type: str, resource: dict[str, Any], patient: str) -> bool:
    """R5's table read on the resource's search values: the oracle, independent of the store's compartment filter."""
    values = search.index_values(resource_type, resource)
    return any(
        resource["id"] == patient if code == COMPARTMENT_SELF else f"Patient/{patient}" in values.get(code, [])
        for code in patient_compartment()[resource_type]
    )


@pytest.fixture(scope="module")
async def compartments(demo_store: Store, clients: dict[bool, httpx.AsyncClient]) -> Compartments:
    """patient -> type -> the ids a `user/` token sees, filtered to that patient's compartment."""
    query = "{ " + " ".join(f"{t}List(_count: 1000) {{ id }}" for t in IN_COMPARTMENT) + " }"
    seen = ok(await ask(clients, query, as_user(demo_store)))
    stored = {
        t: {d["id"]: d async for d in demo_store.db[t].find({TENANT: demo_store.tenant}, {"_search": 0, TENANT: 0})}
        for t in IN_COMPARTMENT
    }
    out: Compartments = {}
    for patient in PATIENTS:
        out[patient] = {
            t: {r["id"] for r in seen[f"{t}List"] if _member(t, stored[t][r["id"]], patient)} for t in IN_COMPARTMENT
        }
    assert len(out["demo-patient-1"]["Claim"]) == 7 and out["pat2"]["Patient"] == {"pat1"}  # not vacuous
    return out


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


# -- reads ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("patient", PATIENTS)
async def test_lists_and_connection_counts_hold_exactly_the_compartment(
    clients: dict[bool, httpx.AsyncClient], demo_store: Store, compartments: Compartments, patient: str
) -> None:
    query = "{ " + " ".join(f"{t}List(_count: 1000) {{ id }} {t}Connection {{ count }}" for t in IN_COMPARTMENT) + " }"
    data = ok(await ask(clients, query, as_patient(demo_store, patient)))
    for t in IN_COMPARTMENT:
        ids = _ids(data[f"{t}List"])
        assert len(ids) == len(set(ids)) and set(ids) == compartments[patient][t], t
        assert data[f"{t}Connection"]["count"] == len(compartments[patient][t]), t


async def test_connection_pages_walk_the_compartment_only(
    clients: dict[bool, httpx.AsyncClient], demo_store: Store, compartments: Compartments
) -> None:
    query = (
        'query($c: String) { ClaimConnection(_count: 2, _cursor: $c, _sort: "-created") '
        "{ count next edges { resource { id } } } }"
    )
    tok = as_patient(demo_store, "demo-patient-1")
    walked: list[str] = []
    cursor = None
    while True:
        page = ok(await ask(clients, query, tok, {"c": cursor}))["ClaimConnection"]
        assert page["count"] == 7
        walked += [edge["resource"]["id"] for edge in page["edges"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert len(walked) == len(set(walked)) == 7 and set(walked) == compartments["demo-patient-1"]["Claim"]


@pytest.mark.parametrize("rtype", ["Claim", "ClaimResponse", "Coverage", "Patient", "Invoice", "RelatedPerson"])
async def test_a_read_by_id_outside_the_compartment_is_not_found_like_a_missing_id(
    clients: dict[bool, httpx.AsyncClient], demo_store: Store, compartments: Compartments, rtype: str
) -> None:
    every = _ids(
        ok(await ask(clients, f"{{ {rtype}List(_count: 1000) {{ id }} }}", as_user(demo_store)))[f"{rtype}List"]
    )
    mine = compartments["example"][rtype]
    ids = [*every, "no-such-id"]
    answer: Answer = {"data": {}, "errors": []}
    for start in range(0, len(ids), ALIASES):  # within the query limits' alias budget
        chunk = (
            "{ "
            + " ".join(f'r{n}: {rtype}(id: "{ids[n]}") {{ id }}' for n in range(start, min(start + ALIASES, len(ids))))
            + " }"
        )
        part = await ask(clients, chunk, as_patient(demo_store, "example"))
        answer["data"].update(part["data"])
        answer["errors"] += part.get("errors", [])
    assert {answer["data"][f"r{n}"]["id"] for n, id in enumerate(ids) if id in mine} == mine
    hidden = {f"r{n}": id for n, id in enumerate(ids) if id not in mine}
    errors = {e["path"][0]: e for e in answer["errors"]}
    assert set(errors) == set(hidden) and all(answer["data"][alias] is None for alias in hidden)
    assert {e["extensions"]["code"] for e in errors.values()} == {"NOT_FOUND"}
    # The same words as for an id that exists nowhere: existence does not leak.
    assert {errors[alias]["message"].replace(id, "X") for alias, id in hidden.items()} == {
        errors[f"r{len(ids) - 1}"]["message"].replace("no-such-id", "X")
    }


async def test_history_outside_the_compartment_is_not_found(
    clients: dict[bool, httpx.AsyncClient], demo_store: Store
) -> None:
    query = '{ InvoiceHistory(id: "demo-invoice-1") { status meta { versionId } } }'
    everything = ok(await ask(clients, query, as_user(demo_store)))["InvoiceHistory"]
    assert [v["meta"]["versionId"] for v in everything] == ["2", "1"]
    assert ok(await ask(clients, query, as_patient(demo_store, "demo-patient-1")))["InvoiceHistory"] == everything
    theirs = await ask(clients, query, as_patient(demo_store, "demo-patient-2"))
    missing = await ask(
        clients, '{ InvoiceHistory(id: "no-such-id") { status } }', as_patient(demo_store, "demo-patient-2")
    )
    assert error_codes(theirs) == error_codes(missing) == ["NOT_FOUND"]
    assert theirs["errors"][0]["message"].replace("demo-invoice-1", "X") == missing["errors"][0]["message"].replace(
        "no-such-id", "X"
    )
    # Patient/pat1 links to Patient/pat2, which puts it (and its history) in pat2's compartment.
    linked = '{ PatientHistory(id: "pat1") { id } }'
    assert ok(await ask(clients, linked, as_patient(demo_store, "pat2")))["PatientHistory"] == [{"id": "pat1"}]
    assert error_codes(await ask(clients, linked, as_patient(demo_store, "pat1-not"))) == ["NOT_FOUND"]


async def test_reverse_reference_lists_stop_at_the_compartment(
    clients: dict[bool, httpx.AsyncClient], demo_store: Store, compartments: Compartments
) -> None:
    own = '{ Patient(id: "demo-patient-1") { ClaimList(_reference: patient) { id } CoverageList(_reference: beneficiary) { id } } }'
    data = ok(await ask(clients, own, as_patient(demo_store, "demo-patient-1")))["Patient"]
    assert set(_ids(data["ClaimList"])) == compartments["demo-patient-1"]["Claim"]
    assert _ids(data["CoverageList"]) == ["demo-patient-1-coverage"]
    # From a type the caller reads in full into one it reads in the compartment only.
    query = '{ Organization(id: "demo-payer") { ClaimList(_reference: insurer, _count: 1000) { id } } }'
    everyone = set(_ids(ok(await ask(clients, query, as_user(demo_store)))["Organization"]["ClaimList"]))
    tok = as_patient(demo_store, "demo-patient-2", scope="user/Organization.rs patient/Claim.rs")
    mine = set(_ids(ok(await ask(clients, query, tok))["Organization"]["ClaimList"]))
    assert len(everyone) == 20 and mine == everyone & compartments["demo-patient-2"]["Claim"] and mine


TRAVERSE = """{ PaymentReconciliationList(_count: 100) { id allocation {
  target { reference resource { ... on Claim { id } } }
  response { reference resource { ... on ClaimResponse { id } } } } } }"""
TRAVERSE_CLAIMS = """{ PaymentReconciliationList(_count: 100, payment_issuer: "Organization/demo-payer") { id allocation {
  target { reference resource { ... on Claim { id } } } } } }"""


@pytest.mark.parametrize("query", [TRAVERSE, TRAVERSE_CLAIMS], ids=["types-a-level", "one-type-a-level"])
async def test_reference_traversal_finds_nothing_outside_the_compartment(
    clients: dict[bool, httpx.AsyncClient], demo_store: Store, compartments: Compartments, query: str
) -> None:
    engine = clients[True].fingate_app.state.compiled_engine  # type: ignore[attr-defined]
    assert engine is not None
    compiled_before = engine.stats["compiled"]
    everything = ok(await ask(clients, query, as_user(demo_store)))
    scope = "user/PaymentReconciliation.rs patient/Claim.rs patient/ClaimResponse.rs patient/Invoice.rs"
    mine = ok(await ask(clients, query, as_patient(demo_store, "demo-patient-3", scope=scope)))
    assert engine.stats["compiled"] >= compiled_before + 2  # both answers came from the compiled path too
    expected = compartments["demo-patient-3"]
    found = 0
    for theirs, ours in zip(everything["PaymentReconciliationList"], mine["PaymentReconciliationList"], strict=True):
        for full, narrowed in zip(theirs["allocation"] or [], ours["allocation"] or [], strict=True):
            for field, rtype in (("target", "Claim"), ("response", "ClaimResponse")):
                if field not in full or full[field] is None or full[field]["resource"] is None:
                    continue
                visible = full[field]["resource"].get("id") in expected[rtype]
                assert narrowed[field]["resource"] == (full[field]["resource"] if visible else None)
                found += visible
    assert found >= 6  # demo-patient-3's six claims (and, with responses, their responses) are paid


# -- whose compartment -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fhir_user", ["Patient/demo-patient-2", "https://ehr.example/fhir/Patient/demo-patient-2"], ids=["relative", "url"]
)
async def test_a_fhir_user_naming_a_patient_is_the_compartment(
    clients: dict[bool, httpx.AsyncClient], demo_store: Store, compartments: Compartments, fhir_user: str
) -> None:
    tok = as_patient(demo_store, None, fhirUser=fhir_user)
    data = ok(await ask(clients, "{ ClaimList(_count: 1000) { id } ClaimConnection { count } }", tok))
    assert set(_ids(data["ClaimList"])) == compartments["demo-patient-2"]["Claim"]
    assert data["ClaimConnection"]["count"] == len(compartments["demo-patient-2"]["Claim"]) > 0


@pytest.mark.parametrize("claims", [{}, {"fhirUser": "Practitioner/example"}], ids=["no-claim", "practitioner"])
async def test_a_patient_scope_without_a_patient_grants_nothing(
    clients: dict[bool, httpx.AsyncClient], demo_store: Store, claims: dict[str, str]
) -> None:
    tok = as_patient(demo_store, None, scope="patient/*.rs user/PaymentReconciliation.rs", **claims)
    answer = await ask(
        clients, '{ ClaimList { id } Claim(id: "demo-claim-01") { id } ClaimHistory(id: "demo-claim-01") { id } }', tok
    )
    assert error_codes(answer) == ["FORBIDDEN"] * 3
    traversal = await ask(
        clients,
        '{ PaymentReconciliation(id: "demo-payment-1") { allocation { target { resource { ... on Claim { id } } } } } }',
        tok,
    )
    assert set(error_codes(traversal)) == {"FORBIDDEN"}


async def test_types_outside_any_compartment_are_forbidden_and_user_scopes_win(
    clients: dict[bool, httpx.AsyncClient], demo_store: Store
) -> None:
    query = "{ " + " ".join(f"{t}List {{ id }}" for t in OUTSIDE) + " }"
    answer = await ask(clients, query, as_patient(demo_store, "demo-patient-1"))
    assert error_codes(answer) == ["FORBIDDEN"] * len(OUTSIDE)
    both = as_patient(demo_store, "demo-patient-1", scope="patient/Claim.rs user/Claim.rs")
    everyone = ok(await ask(clients, "{ ClaimConnection { count } }", as_user(demo_store)))
    assert ok(await ask(clients, "{ ClaimConnection { count } }", both)) == everyone


VIEW = "{ currency value }"
OWN_BILLS = f"""{{
  InvoiceList(_count: 100, _sort: "_id") {{ id billing {{ paid {VIEW} balance {VIEW} payments {{ date amount {VIEW} }} }} }}
  ClaimList(_count: 200, _sort: "_id") {{ id billing {{ paid {VIEW} outstanding {VIEW} }} }}
  AccountList(_count: 100, _sort: "_id") {{ id billing {{ paid {VIEW} balance {VIEW} }} }}
}}"""


@pytest.mark.parametrize("patient", PATIENTS)
async def test_a_patient_sees_what_was_paid_on_their_own_bills(
    clients: dict[bool, httpx.AsyncClient], demo_store: Store, patient: str
) -> None:
    """PaymentReconciliation is in no compartment, so a `patient/` scope reads none; the billing views of the
    patient's own Invoices, Claims and Accounts, and of the patient, still count them: the same amounts a staff
    token sees. The payments themselves stay unreadable."""
    own = ok(await ask(clients, OWN_BILLS, as_patient(demo_store, patient)))
    everyone = ok(await ask(clients, OWN_BILLS, as_user(demo_store)))
    for listed in own:
        staff = {r["id"]: r for r in everyone[listed]}
        assert all(r == staff[r["id"]] for r in own[listed]), listed
    if patient == "demo-patient-1":
        assert any(i["billing"]["payments"] for i in own["InvoiceList"])  # not vacuous
    party = f'{{ Patient(id: "{patient}") {{ billing(asOf: "2026-12-31") {{ outstanding {VIEW} items {{ age }} }} }} }}'
    mine, staff_view = (
        await ask(clients, party, as_patient(demo_store, patient)),
        await ask(clients, party, as_user(demo_store)),
    )
    assert mine == staff_view  # the same view, or the same NOT_FOUND for a patient not stored (pat2, 1)
    followed = (
        "{ InvoiceList { billing { payments { payment { resource { ... on PaymentReconciliation { id } } } } } } }"
    )
    answer = await ask(clients, followed, as_patient(demo_store, "demo-patient-1"))
    assert set(error_codes(answer)) == {"FORBIDDEN"}  # the payment itself is not the patient's to read
    staff_without_payments = as_user(demo_store, "user/Invoice.rs")  # a `user/` scope still needs the payments'
    refused = await ask(clients, "{ InvoiceList { billing { paid { value } } } }", staff_without_payments)
    assert set(error_codes(refused)) == {"FORBIDDEN"}


def test_scopes_and_the_token_patient() -> None:
    assert parse_scopes("patient/Claim.rs") == (frozenset(), False)
    assert parse_scopes("patient/Claim.rs", "p1") == (frozenset({("Claim", READ)}), False)
    assert parse_scopes("patient/Organization.rs patient/PaymentReconciliation.r", "p1") == (frozenset(), False)
    star = principal_for("s", "t", "patient/*.cu", "p1")
    assert star.compartment_types(CREATE) == star.compartment_types(UPDATE) == frozenset(IN_COMPARTMENT)
    assert not star.can("Organization", CREATE) and star.compartment_types(READ) == frozenset()
    mixed = principal_for("s", "t", "patient/*.rs user/Claim.r system/Coverage.rs", "p1")
    assert mixed.can("Claim", READ) and "Claim" not in mixed.compartment_types(READ)
    assert "Coverage" not in mixed.compartment_types(READ) and "Invoice" in mixed.compartment_types(READ)
    assert token_patient({"patient": "p1", "fhirUser": "Patient/p2"}) == "p1"  # the launch context wins
    assert token_patient({"fhirUser": "https://ehr.example/r5/Patient/p-2.x"}) == "p-2.x"
    for not_a_patient in ("Practitioner/p1", "https://ehr.example/NotPatient/p1", "Patient/", "Patient/p1/x", 7):
        assert token_patient({"fhirUser": not_a_patient}) is None
    for bad in ("", "a/b", 12, "x" * 65):
        with pytest.raises(AuthError):
            token_patient({"patient": bad})


# -- the store: one filter, pushed down and indexed --------------------------------------------------


async def test_the_database_filter_and_the_write_check_agree(demo_store: Store) -> None:
    for patient in PATIENTS:
        view = demo_store.in_compartment(patient, IN_COMPARTMENT)
        for t in IN_COMPARTMENT:
            stored = [d async for d in demo_store.db[t].find({TENANT: demo_store.tenant})]
            found = {r["id"] for r in await view.search(t, {}, 1000)}
            assert found == {d["id"] for d in stored if search.in_compartment(t, d, patient)}, (patient, t)


async def test_every_compartment_field_is_indexed_after_the_tenant(demo_store: Store) -> None:
    for t in SERVED_RESOURCES:
        indexes = [list(spec["key"]) for spec in (await demo_store.db[t].index_information()).values()]
        for key in search.compartment_keys(t):
            assert [(TENANT, 1), (key, 1)] in indexes, (t, key)


# -- writes ------------------------------------------------------------------------------------------


@pytest.fixture
async def writes(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    writer = Writer(store.for_tenant("acme"))
    for pid in ("p1", "p2"):
        await writer.create("Patient", {**PATIENT, "id": pid}, keep_id=True)
        await writer.create("Claim", {**claim(pid), "id": f"c-{pid}"}, keep_id=True)
    async with authed_client(store) as client:
        yield client


async def _write(client: httpx.AsyncClient, query: str, res: dict[str, Any] | None = None) -> Answer:
    tok = token(scope="patient/Claim.cruds", tenant="acme", patient="p1")
    body = json.dumps({"query": query, "variables": {"res": res} if res else {}}, default=str)
    response = await client.post(
        "/graphql", content=body, headers={"content-type": "application/json", "authorization": f"Bearer {tok}"}
    )
    assert response.status_code == 200, response.text
    return loads(response.content)  # type: ignore[no-any-return]


CREATE_CLAIM = "mutation($res: ClaimInput!) { ClaimCreate(res: $res) { id } }"


def _update(id: str) -> str:
    return f'mutation($res: ClaimInput!) {{ ClaimUpdate(id: "{id}", res: $res) {{ id meta {{ versionId }} }} }}'


async def test_a_patient_scope_creates_only_in_its_compartment(writes: httpx.AsyncClient, store: Store) -> None:
    refused = await _write(writes, CREATE_CLAIM, claim("p2"))
    assert error_codes(refused) == ["FORBIDDEN"] and "compartment" in refused["errors"][0]["message"]
    assert ok(await _write(writes, CREATE_CLAIM, claim("p1")))["ClaimCreate"]["id"]
    others = await store.for_tenant("acme").search("Claim", {"patient": "Patient/p2"}, 10)
    assert _ids(others) == ["c-p2"]


async def test_a_patient_scope_cannot_touch_or_move_out_what_is_outside(
    writes: httpx.AsyncClient, store: Store
) -> None:
    acme = store.for_tenant("acme")
    assert error_codes(await _write(writes, _update("c-p2"), claim("p2"))) == ["NOT_FOUND"]
    assert error_codes(await _write(writes, _update("c-p2"), claim("p1"))) == ["NOT_FOUND"]  # not by claiming it either
    assert error_codes(await _write(writes, 'mutation { ClaimDelete(id: "c-p2") { id } }')) == ["NOT_FOUND"]
    assert (await acme.get("Claim", "c-p2"))["meta"]["versionId"] == "1"  # type: ignore[index]
    moved = await _write(writes, _update("c-p1"), claim("p2"))
    assert error_codes(moved) == ["FORBIDDEN"]
    assert (await acme.get("Claim", "c-p1"))["patient"] == {"reference": "Patient/p1"}  # type: ignore[index]
    updated = ok(await _write(writes, _update("c-p1"), claim("p1", status="active")))["ClaimUpdate"]
    assert updated["meta"]["versionId"] == "2"


async def test_history_shows_the_versions_that_were_in_the_compartment(writes: httpx.AsyncClient, store: Store) -> None:
    """A claim moved from p2 to p1: p1 sees the version since, p2 the version before."""
    await Writer(store.for_tenant("acme")).update("Claim", "c-p2", claim("p1"))
    history = '{ ClaimHistory(id: "c-p2") { meta { versionId } patient { reference } } }'
    for patient, versions in (("p1", [("2", "Patient/p1")]), ("p2", [("1", "Patient/p2")])):
        tok = token(scope="patient/Claim.rs", tenant="acme", patient=patient)
        response = await writes.post("/graphql", json={"query": history}, headers={"authorization": f"Bearer {tok}"})
        found = ok(loads(response.content))["ClaimHistory"]
        assert [(v["meta"]["versionId"], v["patient"]["reference"]) for v in found] == versions
