"""The explorer in a real browser: `fingate serve` on the embedded database, headless Debian chromium via Playwright."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.async_api import Page, async_playwright, expect

from app.explorer import ready_queries
from tests.harness import serve

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("FINGATE_ARTIFACTS", ROOT / "artifacts"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the networking flags chromium keeps calling Google's hosts, which this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
START_TIMEOUT = 180.0  # a first start loads the R5 examples and the demo data
# A bound on a hang, not a measure of speed: a fresh machine may be slow (Playwright's own default for `expect`
# is 5 s, for actions 30 s).
WAIT_MS = 60_000
expect.set_options(timeout=WAIT_MS)


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets fingate stop its embedded database; the process group is the fallback, so nothing is orphaned."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture(scope="module")
def fingate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
    env.update(
        FINGATE_DATA_DIR=str(tmp_path_factory.mktemp("fingate-data")),
        FINGATE_LOAD_DEMO="true",
        FINGATE_LOG_LEVEL="warning",
    )
    fingate_bin = Path(sys.executable).with_name("fingate")
    log_path = tmp_path_factory.getbasetemp() / "fingate-serve.log"
    command = [str(fingate_bin), "serve", "--host", "127.0.0.1"]
    server, port = serve(command, env, log_path, timeout=START_TIMEOUT, start_new_session=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(server)


@pytest.fixture
async def page(fingate: str) -> AsyncIterator[Page]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            await browser.close()


def _white_share(png: bytes) -> float:
    """The part of a screenshot that is (near) white: a drawn PDF page, not the viewer's dark background."""
    histogram = Image.open(io.BytesIO(png)).convert("L").histogram()
    return sum(histogram[240:]) / sum(histogram)


async def result_text(page: Page) -> str:
    # CodeMirror draws only the visible lines; its own API has the whole response.
    return await page.evaluate("document.querySelector('.result-window .CodeMirror').CodeMirror.getValue()")  # type: ignore[no-any-return]


async def test_the_explorer_runs_the_reconciliation_query(fingate: str, page: Page) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(f"{fingate}/graphql")

    tabs = page.locator(".graphiql-tab")
    await expect(tabs).to_have_count(len(ready_queries()))
    await expect(tabs.first).to_contain_text("Reconciliation")
    await expect(tabs.first).to_have_attribute("aria-selected", "true")
    await expect(page.locator(".graphiql-query-editor")).to_contain_text('PaymentReconciliation(id: "demo-payment-1")')

    await page.locator(".graphiql-execute-button").click()
    await expect(page.locator(".result-window")).to_contain_text('"demo-payment-1"')
    payment = json.loads(await result_text(page))["data"]["PaymentReconciliation"]
    allocation = payment["allocation"][0]
    assert payment["id"] == "demo-payment-1" and payment["amount"]["currency"] == "USD"
    assert allocation["target"]["resource"]["id"].startswith("demo-claim-")
    assert isinstance(allocation["amount"]["value"], str) and "." in allocation["amount"]["value"]  # exact digits
    assert allocation["response"]["resource"]["outcome"] == "complete"

    await page.screenshot(path=ARTIFACTS / "e2e-explorer.png")
    assert all(url.startswith(fingate) or url.startswith("data:") for url in requested), requested


async def test_the_docs_show_fhir_descriptions_and_codes(fingate: str, page: Page) -> None:
    await page.goto(f"{fingate}/graphql")
    await page.get_by_role("button", name="Show Documentation Explorer").click()
    docs = page.locator(".graphiql-doc-explorer")
    await docs.get_by_role("link", name="Query").first.click()
    await docs.locator(".graphiql-doc-explorer-field-name", has_text="PaymentReconciliation").first.click()
    await docs.get_by_role("link", name="PaymentReconciliation").first.click()
    await expect(docs).to_contain_text("Allowed codes: active | cancelled | draft | entered-in-error")
    await page.screenshot(path=ARTIFACTS / "e2e-docs.png")


async def test_the_explorer_shows_when_a_list_stops_early(fingate: str, page: Page) -> None:
    """A list cut at its `_count` says so in the response's `extensions.truncated`, and GraphiQL shows it."""
    await page.goto(f"{fingate}/graphql")
    tab = page.locator(".graphiql-tab", has_text="RemittancesInNovember")
    await tab.click()
    await expect(tab).to_have_attribute("aria-selected", "true")
    await expect(page.locator(".graphiql-query-editor")).to_contain_text("query RemittancesInNovember")
    result = page.locator(".result-window")
    # GraphiQL works out a tab's operation name from its text a moment after the switch; a run before
    # then sends the previous tab's name ("Unknown operation"). Run until the answer is this tab's.
    for _ in range(20):
        await page.locator(".graphiql-execute-button").click()
        await expect(result).to_contain_text(re.compile('"truncated"|Unknown operation'))
        if "truncated" in await result_text(page):
            break
    truncated = json.loads(await result_text(page))["extensions"]["truncated"]
    assert {"path": ["PaymentReconciliationList"], "returned": 2, "more": True} in truncated
    await page.screenshot(path=ARTIFACTS / "e2e-truncated.png")


async def test_the_documents_tab_opens_a_patient_statement(fingate: str, page: Page) -> None:
    """The ready query's `statementUrl`, fetched by the browser as GraphiQL's caller would, is a PDF; it is shown in a tab."""
    await page.goto(f"{fingate}/graphql")
    tab = page.locator(".graphiql-tab", has_text="Documents")
    await tab.click()
    await expect(tab).to_have_attribute("aria-selected", "true")
    result = page.locator(".result-window")
    for _ in range(20):  # as above: run until GraphiQL sends this tab's operation
        await page.locator(".graphiql-execute-button").click()
        await expect(result).to_contain_text(re.compile('"statementUrl"|Unknown operation'))
        if "statementUrl" in await result_text(page):
            break
    url = json.loads(await result_text(page))["data"]["Invoice"]["statementUrl"]
    assert url == "/Invoice/demo-invoice-1/$statement"
    head = await page.evaluate(
        "async (url) => { const r = await fetch(url); const b = new Uint8Array(await r.arrayBuffer());"
        " return [r.headers.get('content-type'), String.fromCharCode(...b.slice(0, 5))]; }",
        f"{url}?asOf=2026-12-01",
    )
    assert head == ["application/pdf", "%PDF-"]
    response = await page.goto(f"{fingate}{url}?asOf=2026-12-01")
    assert response is not None and response.headers["content-type"] == "application/pdf"
    # Chromium's PDF viewer draws the page a moment after the load: poll its pixels, with a generous bound.
    for _ in range(240):
        shot = await page.screenshot()
        if _white_share(shot) > 0.2:
            break
        await page.wait_for_timeout(250)
    else:
        pytest.fail("the PDF viewer never showed the statement's page")
    (ARTIFACTS / "e2e-statement.png").write_bytes(shot)


async def test_the_explorer_runs_a_subscription_over_the_websocket(fingate: str, page: Page) -> None:
    """GraphiQL's bundled graphql-ws client runs a subscription against ws://.../graphql and shows its events."""
    import httpx

    from tests.harness import gql

    async with httpx.AsyncClient(base_url=fingate, timeout=60) as client:
        at = (await gql(client, "{ ChangesPosition }"))["data"]["ChangesPosition"]
        draft = (await gql(client, (ROOT / "app" / "queries" / "05-draft-claim.graphql").read_text()))["data"]
    claim_id = draft["ClaimCreate"]["id"]
    subscription = f'subscription Live {{ ClaimChanges(after: "{at}") {{ position interaction status id }} }}'
    await page.goto(f"{fingate}/graphql")
    await page.evaluate(
        "(text) => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(text)",
        subscription,
    )
    result = page.locator(".result-window")
    # As for a tab switch, GraphiQL reads the operation name a moment after the text changes: run until it is this one.
    for _ in range(20):
        await page.locator(".graphiql-execute-button").click()
        await expect(result).to_contain_text(re.compile('"interaction"|Unknown operation'))
        if "interaction" in await result_text(page):
            break
    event = json.loads(await result_text(page))["data"]["ClaimChanges"]
    assert event["id"] == claim_id and event["interaction"] == "create" and event["status"] == "draft"
    await page.screenshot(path=ARTIFACTS / "e2e-subscription.png")
