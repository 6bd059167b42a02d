"""Money: FHIR's decimal grammar on every write path, the stored range, plain output, ISO 4217 scale of payments."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson.decimal128 import Decimal128
from hypothesis import given, settings
from hypothesis import strategies as st

from app.fhir.decimals import (
    FRACTION_DIGITS,
    GRAMMAR,
    INTEGER_DIGITS,
    fraction_digits,
    plain,
    plain_text,
    range_problem,
)
from app.fhir.model import SCHEMA_DIR, spec
from app.fhir.money import PAID_AMOUNTS, minor_unit, minor_units
from app.graphql.scalars import serialize_decimal
from app.load import load
from app.settings import Settings
from app.store import Store
from app.writes import Writer
from tests.harness import client_for, error_codes, gql, ok

# ---- the grammar and the range, as facts


def test_the_vendored_grammar_is_r5s_without_its_typo() -> None:
    vendored = json.loads((SCHEMA_DIR / "decimal.json").read_text())
    assert vendored["published"] == r"-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,17})?([eE][+-]?[0-9]{1,9}})?"
    assert vendored["regex"] == r"-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,17})?([eE][+-]?[0-9]{1,9})?"
    assert re.fullmatch(vendored["published"], "1.5e3") is None  # the typo, as published, refuses an exponent


GRAMMATICAL = ["0", "-0", "100", "100.10", "-5", "0.5", "1E+2", "1.5e3", "1e-7", "1e400", "9" * 18 + "." + "9" * 17]
UNGRAMMATICAL = {
    "underscore": "1_000.00",
    "Arabic-Indic digits": "١٢٣.٤٥",
    "no integer part": ".5",
    "no fraction digits": "5.",
    "plus sign": "+5",
    "spaces": " 12 ",
    "leading zero": "012",
    "19 integer digits": "1" * 19,
    "18 decimals": "0." + "1" * 18,
    "10 exponent digits": "1e1234567890",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "empty": "",
    "comma": "1,5",
    "full-width digits": "１２",
}


@pytest.mark.parametrize("text", GRAMMATICAL)
def test_the_grammar_accepts(text: str) -> None:
    assert GRAMMAR.fullmatch(text)


@pytest.mark.parametrize("text", UNGRAMMATICAL.values(), ids=UNGRAMMATICAL.keys())
def test_the_grammar_refuses(text: str) -> None:
    assert GRAMMAR.fullmatch(text) is None


def test_the_range_is_the_grammar_written_plainly() -> None:
    widest = "9" * INTEGER_DIGITS + "." + "9" * (FRACTION_DIGITS - 1)  # 34 digits: Decimal128's all
    assert GRAMMAR.fullmatch(widest) and GRAMMAR.fullmatch("0." + "0" * (FRACTION_DIGITS - 1) + "1")
    assert GRAMMAR.fullmatch("1" + "0" * INTEGER_DIGITS) is None
    assert GRAMMAR.fullmatch("0." + "0" * FRACTION_DIGITS + "1") is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [("1E+2", "100"), ("1.0E+3", "1000"), ("1.0E-7", "0.00000010"), ("100.10", "100.10"), ("0E+5", "0"), ("-0", "-0")],
)
def test_plain_notation_keeps_every_written_digit(value: str, shown: str) -> None:
    assert plain_text(Decimal(value)) == shown
    assert str(plain(Decimal(value))) == shown or "E-" in str(Decimal(value))


@given(st.integers(min_value=-(10**18), max_value=10**18), st.integers(min_value=-17, max_value=17))
@settings(max_examples=500, deadline=None)
def test_every_storable_decimal_is_answered_plainly_and_reads_back_the_same(coefficient: int, exponent: int) -> None:
    value = Decimal(coefficient).scaleb(exponent)
    if range_problem(value) is not None:
        return
    shown = serialize_decimal(value)
    assert GRAMMAR.fullmatch(shown) and "E" not in shown.upper()
    assert Decimal(shown) == value and fraction_digits(Decimal(shown)) == fraction_digits(value)
    assert serialize_decimal(Decimal128(plain(value)).to_decimal()) == shown  # as the store keeps it


def test_paid_amounts_are_money_elements() -> None:
    for path in PAID_AMOUNTS:
        element = spec().element(path)
        assert element is not None and element.types == ("Money",), path


def test_every_fhir_currency_has_its_minor_unit_but_the_non_iso_ones() -> None:
    fhir_codes = set(json.loads((SCHEMA_DIR / "required-bindings.json").read_text())["Money.currency"])
    assert fhir_codes - minor_units().keys() == {"GGP", "IMP", "JEP", "TVD"}
    assert (minor_unit("USD"), minor_unit("JPY"), minor_unit("KWD"), minor_unit("CLF"), minor_unit("XAU")) == (
        2,
        0,
        3,
        4,
        None,
    )


# ---- over HTTP, against the real database


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store) as c:
        yield c


PAYMENT_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/payment-type", "code": "payment"}]}


def payment(amount: Any, currency: str = "USD", allocated: Any = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "status": "active",
        "type": PAYMENT_TYPE,
        "created": "2026-11-20",
        "date": "2026-11-20",
        "amount": {"value": amount, "currency": currency},
    }
    if allocated is not None:
        res["allocation"] = [{"amount": {"value": allocated, "currency": currency}}]
    return res


CREATE = (
    "mutation($res: PaymentReconciliationInput!) { PaymentReconciliationCreate(res: $res) { id amount { value } } }"
)


async def _stored(store: Store) -> int:
    return await store.db["PaymentReconciliation"].count_documents({}) + await store.db["audit"].count_documents({})


async def _post(client: httpx.AsyncClient, body: str) -> dict[str, Any]:
    response = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (200, 400), response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("text", UNGRAMMATICAL.values(), ids=UNGRAMMATICAL.keys())
async def test_a_money_string_outside_the_grammar_is_refused(
    client: httpx.AsyncClient, store: Store, text: str
) -> None:
    result = await gql(client, CREATE, {"res": payment(text)})
    assert error_codes(result) == ["BAD_USER_INPUT"], result
    message = result["errors"][0]["message"]
    assert (
        ".amount.value: " in message
        and "Decimal cannot represent" in message
        and "a FHIR decimal is ASCII digits" in message
    ), message
    literal = (
        'mutation { PaymentReconciliationCreate(res: {status: "active", type: {coding: [{code: "payment"}]},'
        f' created: "2026-11-20", date: "2026-11-20", amount: {{value: {json.dumps(text)}, currency: "USD"}}}}) {{ id }} }}'
    )
    refused = await gql(client, literal)
    assert error_codes(refused) == ["BAD_USER_INPUT"] and "a FHIR decimal is" in refused["errors"][0]["message"]
    assert await _stored(store) == 0


@pytest.mark.parametrize(
    ("number", "expression"),
    [
        ("1e400", "PaymentReconciliation.amount.value"),
        ("-1e400", "PaymentReconciliation.amount.value"),
        ("1e-400", "PaymentReconciliation.amount.value"),
        ("1" * 19, "PaymentReconciliation.amount.value"),
        ("0." + "1" * 18, "PaymentReconciliation.amount.value"),
        ("1e999999999", "PaymentReconciliation.amount.value"),
    ],
)
async def test_a_money_number_out_of_range_is_refused_naming_the_element(
    client: httpx.AsyncClient, store: Store, number: str, expression: str
) -> None:
    for as_text in (False, True):  # a bare JSON number (parsed as Decimal), then the same digits as a string
        value = json.dumps(number) if as_text else number
        body = json.dumps({"query": CREATE, "variables": {"res": payment("@@")}}).replace('"@@"', value)
        result = await _post(client, body)
        assert error_codes(result) == ["BAD_USER_INPUT"], result
        issues = result["errors"][0]["extensions"]["operationOutcome"]["issue"]
        assert [i["expression"] for i in issues] == [[expression]]
        if result["errors"][0]["message"].startswith("Variable "):  # digits outside the grammar stop at the scalar
            assert ".amount.value: " in result["errors"][0]["message"] and issues[0]["location"]
        else:
            assert "decimal range" in issues[0]["diagnostics"]
    assert await _stored(store) == 0


async def test_a_literal_float_in_contained_json_keeps_to_the_range(client: httpx.AsyncClient, store: Store) -> None:
    query = (
        'mutation { PaymentReconciliationCreate(res: {status: "active", type: {coding: [{code: "payment"}]},'
        ' created: "2026-11-20", date: "2026-11-20", amount: {value: "1.00", currency: "USD"},'
        ' contained: [{resourceType: "Basic", id: "b", amount: 1.5e400}]}) { id } }'
    )
    result = await gql(client, query)
    assert error_codes(result) == ["BAD_USER_INPUT"]
    issues = result["errors"][0]["extensions"]["operationOutcome"]["issue"]
    assert issues[0]["expression"] == ["PaymentReconciliation.contained[0].amount"]
    assert await _stored(store) == 0


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "graphql-core"])
async def test_exponent_input_is_stored_and_answered_in_plain_notation(store: Store, compiled: bool) -> None:
    async with client_for(store, settings=Settings(compiled=compiled)) as client:
        created = ok(await gql(client, CREATE, {"res": payment("1E+2", allocated="2.5e1")}))
        assert created["PaymentReconciliationCreate"]["amount"]["value"] == "100"
        pid = created["PaymentReconciliationCreate"]["id"]
        raw = await store.client.get_database(store.db.name)["PaymentReconciliation"].find_one({"id": pid})
        assert raw is not None and raw["amount"]["value"] == Decimal128("100")
        assert str(raw["allocation"][0]["amount"]["value"]) == "25"
        # Exponent forms written to the database by something else still answer plainly.
        await store.client.get_database(store.db.name)["PaymentReconciliation"].update_one(
            {"id": pid},
            {"$set": {"amount.value": Decimal128("1.0E+3"), "allocation.0.amount.value": Decimal128("1E-7")}},
        )
        read = ok(
            await gql(
                client,
                f'{{ PaymentReconciliation(id: "{pid}") {{ amount {{ value }} allocation {{ amount {{ value }} }} }} }}',
            )
        )
        assert read["PaymentReconciliation"]["amount"]["value"] == "1000"
        assert read["PaymentReconciliation"]["allocation"][0]["amount"]["value"] == "0.0000001"


async def test_client_digits_are_kept(client: httpx.AsyncClient) -> None:
    created = ok(await gql(client, CREATE, {"res": payment("100.10")}))
    assert created["PaymentReconciliationCreate"]["amount"]["value"] == "100.10"


@pytest.mark.parametrize(
    ("case", "res", "expression"),
    [
        ("a tenth of a cent paid in USD", payment("10.005"), "PaymentReconciliation.amount.value"),
        (
            "a tenth of a cent allocated",
            payment("10.00", allocated="10.005"),
            "PaymentReconciliation.allocation[0].amount.value",
        ),
        ("decimals of yen", payment("100.5", "JPY"), "PaymentReconciliation.amount.value"),
        ("trailing zeros past the cent", payment("10.000"), "PaymentReconciliation.amount.value"),
    ],
)
async def test_an_amount_paid_keeps_to_its_currencys_minor_unit(
    client: httpx.AsyncClient, store: Store, case: str, res: dict[str, Any], expression: str
) -> None:
    result = await gql(client, CREATE, {"res": res})
    assert error_codes(result) == ["BAD_USER_INPUT"], result
    issues = result["errors"][0]["extensions"]["operationOutcome"]["issue"]
    assert [i["expression"] for i in issues] == [[expression]]
    assert "ISO 4217" in issues[0]["diagnostics"]
    assert await _stored(store) == 0


async def test_amounts_within_their_minor_unit_or_not_held_to_one_are_stored(client: httpx.AsyncClient) -> None:
    for res in (
        payment("10.05"),
        payment("10.5"),
        payment("10.005", "KWD"),
        payment("100", "JPY"),
        payment("1.00005", "XAU"),
    ):
        ok(await gql(client, CREATE, {"res": res}))
    no_currency = payment("10.005")
    del no_currency["amount"]["currency"]
    ok(await gql(client, CREATE, {"res": no_currency}))
    claim_price = (
        'mutation { ClaimCreate(res: {status: "draft", use: "claim", created: "2026-11-20",'
        ' type: {coding: [{code: "professional"}]}, patient: {reference: "Patient/p"},'
        ' insurance: [{sequence: 1, focal: true, coverage: {display: "plan"}}],'
        ' item: [{sequence: 1, productOrService: {text: "x"}, unitPrice: {value: "0.125", currency: "USD"}, factor: 0.33333}]'
        "}) { item { unitPrice { value } factor } } }"
    )
    item = ok(await gql(client, claim_price))["ClaimCreate"]["item"][0]
    assert item == {"unitPrice": {"value": "0.125"}, "factor": "0.33333"}


async def test_load_files_keep_to_the_same_rules(store: Store, tmp_path: Path) -> None:
    base = {"resourceType": "PaymentReconciliation", **payment("@@")}
    for name, number in (("range", "1e400"), ("scale", "10.005"), ("fine", "1E+1")):
        (tmp_path / f"{name}.json").write_text(json.dumps({**base, "id": name}).replace('"@@"', number))
    report = await load(Writer(store), [tmp_path])
    reasons = dict(report.rejected)
    assert report.created == 1 and set(reasons) == {str(tmp_path / "range.json"), str(tmp_path / "scale.json")}
    assert "decimal range" in reasons[str(tmp_path / "range.json")]
    assert "ISO 4217" in reasons[str(tmp_path / "scale.json")]
    fine = await store.get("PaymentReconciliation", "fine")
    assert fine is not None and str(fine["amount"]["value"]) == "10"


# ---- the README's examples, on the demo data

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _readme_example(marker: str) -> str:
    (block,) = [b for b in re.findall(r"```graphql\n(.*?)```", README, re.S) if marker in b]
    return block


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "graphql-core"])
async def test_the_readme_examples_answer_as_it_says(demo_store: Store, compiled: bool) -> None:
    async with client_for(demo_store, settings=Settings(compiled=compiled)) as client:
        history = ok(await gql(client, _readme_example("demo-claim-withdrawn")))["ClaimHistory"]
        assert [(h["meta"]["versionId"], h["status"]) for h in history] == [(None, None), ("1", "draft")]
        assert history[0]["meta"]["tag"] == [{"system": "http://hl7.org/fhir/http-verb", "code": "DELETE"}]
        read = await gql(client, '{ Claim(id: "demo-claim-withdrawn") { id } }')
        assert read["errors"][0]["message"].startswith("Claim/demo-claim-withdrawn not found: it was deleted at ")
        for _ in range(2):
            same = ok(await gql(client, _readme_example("PatientUpdate")))["PatientUpdate"]
            assert same["meta"]["versionId"] == "1"
        paid = _readme_example("2.5E+1")
        assert ok(await gql(client, paid))["ok"]["amount"] == {"value": "25", "currency": "USD"}
        refused = await gql(client, paid.replace("2.5E+1", "10.005"))
        issue = refused["errors"][0]["extensions"]["operationOutcome"]["issue"][0]
        assert issue["expression"] == ["PaymentReconciliation.amount.value"]
        assert issue["diagnostics"].endswith(
            "10.005 USD has 3 decimal places: an amount paid or allocated keeps to its currency's minor unit, 2 for USD (ISO 4217)"
        )
