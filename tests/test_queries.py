"""The explorer's ready queries (app/queries/*.graphql) run on the demo data, so none of them rots."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from app.explorer import ready_queries
from app.store import Store
from tests.harness import client_for, gql, ok


@pytest.fixture(scope="module")
async def demo(demo_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(demo_store) as client:
        yield client


def query(name: str) -> str:
    return next(p for p in ready_queries() if p.stem.endswith(name)).read_text()


async def test_the_explorer_opens_on_the_reconciliation_query(demo: httpx.AsyncClient) -> None:
    page = (await demo.get("/graphql", headers={"accept": "text/html"})).text
    tabs = json.loads(
        re.search(r'<script id="fingate-tabs" type="application/json">(.*?)</script>', page, re.DOTALL).group(1)
    )  # type: ignore[union-attr]
    assert [t["query"] for t in tabs] == [p.read_text() for p in ready_queries()]
    assert 'PaymentReconciliation(id: "demo-payment-1")' in tabs[0]["query"]
    assert "defaultTabs: tabs" in page and "isHeadersEditorEnabled: true" in page
    assert "Welcome to GraphiQL" not in page


async def test_tab_variables_run_on_the_demo_data(demo: httpx.AsyncClient) -> None:
    variables = next(p for p in ready_queries() if p.stem.endswith("history")).with_suffix(".json")
    history = ok(await gql(demo, query("history"), json.loads(variables.read_text())))
    assert history["ClaimHistory"][0]["id"] == "demo-claim-03"


async def test_reconciliation_walks_to_claims_and_responses(demo: httpx.AsyncClient) -> None:
    payment = ok(await gql(demo, query("reconciliation")))["PaymentReconciliation"]
    assert payment["paymentIssuer"]["resource"]["name"] == "Acme Health Insurance"
    assert all(
        a["target"]["resource"]["status"] == "active" and a["response"]["resource"]["outcome"] == "complete"
        for a in payment["allocation"]
    )


async def test_claim_responses_search_and_paging(demo: httpx.AsyncClient) -> None:
    claim = ok(await gql(demo, query("claim-responses")))["Claim"]
    assert claim["ClaimResponseList"] and claim["PaymentReconciliationList"]
    assert len(ok(await gql(demo, query("search")))["PaymentReconciliationList"]) == 3
    first = ok(await gql(demo, query("paging")))["ClaimConnection"]
    second = ok(await gql(demo, query("paging"), {"cursor": first["next"]}))["ClaimConnection"]
    assert len(first["edges"]) == len(second["edges"]) == 5
    assert {e["resource"]["id"] for e in first["edges"]}.isdisjoint(e["resource"]["id"] for e in second["edges"])
    walk = [first, second]
    while walk[-1]["next"]:
        walk.append(ok(await gql(demo, query("paging"), {"cursor": walk[-1]["next"]}))["ClaimConnection"])
    assert [p["offset"] for p in walk] == [0, 5, 10, 15] and walk[-1]["last"] and walk[0]["previous"] is None
    alone = "query($c: String) { ClaimConnection(_cursor: $c) { offset edges { resource { id } } } }"
    back = ok(await gql(demo, alone, {"c": walk[-1]["previous"]}))["ClaimConnection"]
    assert back == {"offset": 10, "edges": [{"resource": {"id": e["resource"]["id"]}} for e in walk[2]["edges"]]}


async def test_draft_activate_history(mongo_uri: str) -> None:
    # These tabs write: on demo data of their own, so the module's other tests read the demo data as loaded (in the
    # module's copy, the Claim made here was a 21st in the paging tab's walk whenever that test ran after this one).
    from app.demo import load_demo
    from app.writes import Writer
    from tests.conftest import fresh_store

    async with fresh_store(mongo_uri) as own:
        await load_demo(Writer(own))
        async with client_for(own) as demo:
            draft = ok(await gql(demo, query("draft-claim")))["ClaimCreate"]
            assert draft["status"] == "draft" and draft["total"]["value"] == "125.00"
            active = ok(await gql(demo, query("activate-claim"), {"id": draft["id"]}))["ClaimUpdate"]
            assert active["status"] == "active" and active["meta"]["versionId"] == "2"
            history = ok(await gql(demo, query("history"), {"id": draft["id"]}))["ClaimHistory"]
    assert [(h["status"], h["meta"]["versionId"]) for h in history] == [("active", "2"), ("draft", "1")]


async def test_billing_views_on_the_demo_data(demo: httpx.AsyncClient) -> None:
    data = ok(await gql(demo, query("billing")))
    claim = data["Claim"]["billing"]
    assert claim["billed"] == [{"currency": "USD", "value": "77.80"}]
    assert claim["adjudicated"] == claim["paid"] == [{"currency": "USD", "value": "70.02"}]
    assert claim["outstanding"] == [{"currency": "USD", "value": "7.78"}]
    assert claim["payments"] == [
        {
            "date": "2026-11-10",
            "amount": claim["paid"],
            "payment": {"reference": "PaymentReconciliation/demo-payment-1"},
        }
    ]
    assert data["PaymentReconciliation"]["billing"]["unallocated"] == [{"currency": "USD", "value": "0.00"}]
    assert data["Invoice"]["status"] == "balanced"
    assert data["Invoice"]["billing"]["balance"] == [{"currency": "USD", "value": "0.00"}]
    assert data["Account"]["billing"]["invoiced"] == [{"currency": "USD", "value": "184.60"}]
    aging = data["Patient"]["billing"]
    assert aging["outstanding"][0]["currency"] == "USD" and aging["days31to60"] and aging["days61to90"]


def test_every_ready_query_is_covered() -> None:
    assert [p.stem.split("-", 1)[1] for p in ready_queries()] == [
        "reconciliation", "claim-responses", "search", "paging", "draft-claim", "activate-claim", "history", "billing",
        "remittances-in-november", "patient-pay", "documents",
    ]  # fmt: skip


async def test_remittances_in_november_say_what_they_left_out(demo: httpx.AsyncClient) -> None:
    result = await gql(demo, query("remittances-in-november"))
    assert [p["id"] for p in ok(result)["PaymentReconciliationList"]] == ["demo-payment-1", "demo-payment-2"]
    assert result["extensions"]["truncated"] == [
        {"path": ["PaymentReconciliationList"], "returned": 2, "more": True},
        {"path": ["howMany"], "returned": 0, "total": 3},
    ]


async def test_patient_pay_on_the_demo_data(demo: httpx.AsyncClient) -> None:
    data = ok(await gql(demo, query("patient-pay")))
    assert isinstance(data["PaymentEvents"], list)  # empty until a webhook arrives (tests/test_stripe_webhooks.py)
    invoice = data["Invoice"]
    assert invoice["status"] == "balanced" and invoice["billing"]["balance"] == [{"currency": "USD", "value": "0.00"}]
    assert [p["id"] for p in invoice["PaymentReconciliationList"]] == ["demo-payment-patient-1"]
    assert invoice["PaymentReconciliationList"][0]["amount"] == {"value": "184.60", "currency": "USD"}


async def test_the_documents_tab_links_to_pdfs(demo: httpx.AsyncClient) -> None:
    data = ok(await gql(demo, query("documents")))
    assert data["Invoice"]["statementUrl"] == "/Invoice/demo-invoice-1/$statement"
    assert data["Claim"]["cms1500Url"] == "/Claim/demo-claim-04/$cms1500"
    for url in (data["Invoice"]["statementUrl"], data["Patient"]["statementUrl"], data["Claim"]["superbillUrl"]):
        response = await demo.get(url)
        assert response.headers["content-type"] == "application/pdf" and response.content.startswith(b"%PDF-")
