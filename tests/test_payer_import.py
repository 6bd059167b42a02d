"""Importing from a payer: a fake payer FHIR R4 server on loopback serving the official R4 examples, pages of 2,
OAuth2 client credentials, a 429 and a failing page (then a resume); idempotent re-imports; exact amounts; no token in logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pymongo
import pytest

from app import errors, outbound, validation
from app.cli import main
from app.payers import job as payer
from app.payers.client import ATTEMPTS, MAX_WAIT, PayerClient, PayerError, policy_from, retry_after
from app.payers.fake import CLIENT_ID, CLIENT_SECRET, EXAMPLES, MEMBER, FakePayer, serving
from app.payers.job import fingate_id
from app.settings import Settings
from app.store import Store
from app.writes import Writer

TYPES = ("Patient", "Coverage", "ExplanationOfBenefit")
LOOPBACK = outbound.Policy(allow_loopback=True)  # the fake payer's network policy
# Host names the tests resolve without DNS: a public payer, a name inside a private network, the metadata service.
NAMES = {"payer.example": "93.184.215.14", "payer.internal.example": "10.0.0.7", "metadata.example": "169.254.169.254"}


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> None:
    """NAMES resolve through the real resolver (as their addresses), so the guard checks what a DNS answer would be."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real(NAMES.get(host, host), port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def fake() -> Iterator[tuple[FakePayer, str]]:
    payer_ = FakePayer()
    with serving(payer_) as base:
        yield payer_, base


class Sleeps:
    """The retry waits asked for, without waiting (an injected sleep)."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


def _client(base: str, sleep: Sleeps, **credentials: Any) -> PayerClient:
    credentials = credentials or {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "token_url": base.removesuffix("/fhir") + "/token",
    }
    return PayerClient(base, policy=LOOPBACK, sleep=sleep, **credentials)


async def _import(store: Store, base: str, job: dict[str, Any] | None = None, **credentials: Any) -> dict[str, Any]:
    sleep = Sleeps()
    async with _client(base, sleep, **credentials) as client:
        job = job or payer.new_job(client.base, MEMBER)
        done = await payer.run(Writer(store, actor="test"), client, job, payer.saver(store))
    done["sleeps"] = sleep.asked
    return done


async def _stored(store: Store, rtype: str) -> list[dict[str, Any]]:
    return await store.search(rtype, {}, count=100)


def _example(name: str) -> str:
    return (EXAMPLES / name).read_text()


async def test_the_import_pages_retries_fails_resumes_and_a_second_import_changes_nothing(
    store: Store, fake: tuple[FakePayer, str]
) -> None:
    served, base = fake
    served.faults = {("Coverage", 2): [429], ("ExplanationOfBenefit", 1): [500] * ATTEMPTS}

    job = await _import(store, base)
    assert job["status"] == payer.FAILED, job
    assert "500" in job["error"]
    assert job["next"] == f"{base}/ExplanationOfBenefit?patient={MEMBER}"  # the failed page, kept to resume from
    assert (job["created"], job["pages"]) == (5, 3)  # the Patient, 4 Coverages over 2 pages
    assert 7.0 in job["sleeps"]  # the 429's Retry-After, honoured
    kept = await payer.find(store, job["id"])
    assert kept is not None
    assert (kept["status"], kept["next"], kept["created"], kept["error"]) == (
        job["status"],
        job["next"],
        job["created"],
        job["error"],
    )
    with pytest.raises(errors.FinGateError) as refused:
        await payer.resumable(store, job["id"], "https://other.example/fhir")
    assert refused.value.code == errors.BAD_USER_INPUT

    resumed = await _import(store, base, await payer.resumable(store, job["id"], base))
    assert resumed["status"] == payer.COMPLETED, resumed
    assert (resumed["created"], resumed["updated"], resumed["rejected"]) == (7, 0, [])
    assert resumed["next"] is None
    assert served.requests.count(f"/fhir/ExplanationOfBenefit?patient={MEMBER}") == ATTEMPTS + 1
    assert served.tokens_issued >= 1

    stored = {t: await _stored(store, t) for t in TYPES}
    assert [len(stored[t]) for t in TYPES] == [1, 4, 2]
    for rtype, resources in stored.items():
        for resource in resources:
            validation.validate(rtype, resource)  # every imported resource is valid R5
            payer_id = resource["meta"]["source"].rsplit("/", 1)[1]
            assert resource["meta"]["source"] == f"{base}/{rtype}/{payer_id}"
            assert {"system": f"{base}/{rtype}", "value": payer_id} in resource["identifier"]
            assert resource["id"] == fingate_id(base, rtype, payer_id)

    # References between the imported resources are FinGate's; the rest point at the payer.
    eob = next(r for r in stored["ExplanationOfBenefit"] if r["meta"]["source"].endswith("/EB3500"))
    assert eob["patient"]["reference"] == f"Patient/{fingate_id(base, 'Patient', MEMBER)}"
    assert eob["insurance"][0]["coverage"]["reference"] == f"Coverage/{fingate_id(base, 'Coverage', '9876B1')}"
    assert eob["insurer"]["reference"] == f"{base}/Organization/3"
    coverage = next(r for r in stored["Coverage"] if r["meta"]["source"].endswith("/SP1234"))
    assert coverage["kind"] == "self-pay"
    assert coverage["beneficiary"]["reference"] == f"{base}/Patient/5"

    # Amounts exact: every total as the payer's JSON wrote it, digits and all.
    for resource in stored["ExplanationOfBenefit"]:
        name = f"ExplanationOfBenefit-{resource['meta']['source'].rsplit('/', 1)[1]}.json"
        r4 = json.loads(_example(name), parse_float=Decimal)
        for got, sent in zip(resource["total"], r4["total"], strict=True):
            assert type(got["amount"]["value"]) is Decimal
            assert got["amount"]["value"].as_tuple() == sent["amount"]["value"].as_tuple()
    assert str(eob["total"][0]["amount"]["value"]) == "135.57"

    again = await _import(store, base)
    assert again["status"] == payer.COMPLETED
    assert (again["created"], again["updated"], again["unchanged"], again["rejected"]) == (0, 0, 7, [])
    for rtype in TYPES:
        for resource in await _stored(store, rtype):
            assert resource["meta"]["versionId"] == "1"
            assert len(await store.history(rtype, resource["id"])) == 1


async def test_a_change_at_the_payer_updates_only_what_changed(store: Store, fake: tuple[FakePayer, str]) -> None:
    served, base = fake
    assert (await _import(store, base))["created"] == 7
    patient = json.loads(_example("Patient-pat1.json"))
    patient["name"][0]["family"] = "Donald-Renamed"
    served.replace(json.dumps(patient))
    job = await _import(store, base)
    assert (job["created"], job["updated"], job["unchanged"]) == (0, 1, 6), job
    stored = await store.get("Patient", fingate_id(base, "Patient", MEMBER))
    assert stored is not None
    assert (stored["meta"]["versionId"], stored["name"][0]["family"]) == ("2", "Donald-Renamed")


async def test_a_changed_active_eob_is_refused_by_the_status_rules_and_listed(
    store: Store, fake: tuple[FakePayer, str]
) -> None:
    served, base = fake
    assert (await _import(store, base))["created"] == 7
    eob = json.loads(_example("ExplanationOfBenefit-EB3501.json"))
    eob["disposition"] = "Reprocessed"
    served.replace(json.dumps(eob))
    job = await _import(store, base)
    assert job["status"] == payer.COMPLETED
    assert (job["created"], job["updated"], job["unchanged"]) == (0, 0, 6), job
    ((rejected),) = job["rejected"]
    assert rejected["source"] == f"{base}/ExplanationOfBenefit/EB3501"
    assert rejected["reason"].startswith("STATUS_RULE")
    stored = await store.get("ExplanationOfBenefit", fingate_id(base, "ExplanationOfBenefit", "EB3501"))
    assert stored is not None and stored["meta"]["versionId"] == "1" and stored["disposition"] != "Reprocessed"


async def test_a_payer_that_keeps_answering_429_fails_after_bounded_waits(
    store: Store, fake: tuple[FakePayer, str]
) -> None:
    served, base = fake
    served.retry_after = "3600"
    served.faults = {("Coverage", 1): [429] * (ATTEMPTS + 1)}
    job = await _import(store, base, token=served.token)
    assert job["status"] == payer.FAILED
    assert job["sleeps"] == [MAX_WAIT] * (ATTEMPTS - 1)  # each wait capped, the attempts bounded
    assert job["next"] == f"{base}/Coverage?beneficiary=Patient/{MEMBER}"


async def test_tokens_and_secrets_never_reach_the_logs_or_the_job(
    store: Store, fake: tuple[FakePayer, str], caplog: pytest.LogCaptureFixture
) -> None:
    served, base = fake
    served.faults = {("ExplanationOfBenefit", 1): [429], ("Coverage", 1): [401]}
    with caplog.at_level(logging.DEBUG):
        oauth = await _import(store, base)
        bearer = await _import(store, base, token=served.token)
    assert oauth["status"] == payer.COMPLETED, oauth  # the 401 fetched a new token
    assert bearer["status"] == payer.COMPLETED, bearer
    assert caplog.records, "the import logs (requests, retries)"
    for secret in (served.token, CLIENT_SECRET):
        assert secret not in caplog.text
        assert secret not in repr(await payer.find(store, oauth["id"]))
        assert secret not in repr(await payer.find(store, bearer["id"]))


async def test_a_bad_token_fails_the_job_with_a_status_not_the_token(store: Store, fake: tuple[FakePayer, str]) -> None:
    _, base = fake
    job = await _import(store, base, token="not-the-token")
    assert job["status"] == payer.FAILED
    assert "401" in job["error"] and "not-the-token" not in job["error"]
    assert job["created"] == 0


def test_only_https_or_allowed_loopback_is_fetched() -> None:
    for url, policy, says in [
        ("http://payer.example/fhir", LOOPBACK, "must be an https URL"),
        ("http://127.0.0.1:9/fhir", outbound.Policy(), "needs FINGATE_PAYER_ALLOW_LOOPBACK=true"),
        ("http://localhost:9/fhir", outbound.Policy(allow_private=True), "needs FINGATE_PAYER_ALLOW_LOOPBACK=true"),
        ("ftp://payer.example/fhir", LOOPBACK, "must be an https URL"),
        ("https://user:pw@payer.example/fhir", LOOPBACK, "a URL with credentials in it is refused"),
        ("/fhir", LOOPBACK, "must be an https URL"),
    ]:
        with pytest.raises(errors.FinGateError) as refused:
            PayerClient(url, token="t", policy=policy)
        assert refused.value.code == errors.BAD_USER_INPUT
        assert refused.value.message.startswith("base: ") and says in refused.value.message
        assert "pw" not in refused.value.message
        assert refused.value.issues[0]["expression"] == ["base"]
    with pytest.raises(errors.FinGateError, match="^tokenUrl: plain http"):
        PayerClient("https://payer.example/fhir", client_id="c", client_secret="s", token_url="http://127.0.0.1/t")
    assert PayerClient("https://payer.example/fhir/", token="t").base == "https://payer.example/fhir"
    assert PayerClient("http://[::1]:8/fhir", token="t", policy=LOOPBACK).base == "http://[::1]:8/fhir"


def test_the_policy_comes_from_the_payer_and_private_network_settings() -> None:
    assert policy_from(Settings()) == outbound.Policy()
    assert policy_from(Settings(payer_allow_loopback=True)) == outbound.Policy(allow_loopback=True)
    assert policy_from(Settings(hooks_allow_private=True)) == outbound.Policy(allow_private=True)


class Recorder:
    """A transport that records what would have been sent, answering like a payer."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "from-the-token-url"})
        return httpx.Response(200, json={"resourceType": "Patient", "id": "p"})


@pytest.mark.parametrize(
    "base",
    [
        "https://10.0.0.1/fhir",  # private
        "https://169.254.169.254/fhir",  # link-local: a cloud's metadata service
        "https://[::ffff:10.0.0.1]/fhir",  # a private IPv4 address written as IPv6
        "https://payer.internal.example/fhir",  # a name that resolves to a private address
        "https://metadata.example/fhir",  # a name that resolves to the metadata service
        "https://127.0.0.1/fhir",  # loopback over https, without FINGATE_PAYER_ALLOW_LOOPBACK
        "https://localhost/fhir",
    ],
)
async def test_a_payer_on_a_refused_address_is_sent_nothing(names: None, base: str) -> None:
    recorder = Recorder()
    async with PayerClient(base, token="t", transport=httpx.MockTransport(recorder)) as client:
        with pytest.raises(errors.FinGateError) as refused:
            await client.check()
        assert refused.value.code == errors.BAD_USER_INPUT and refused.value.issues[0]["expression"] == ["base"]
        assert "not an allowed target" in refused.value.message
        with pytest.raises(errors.FinGateError, match="^url: .*not an allowed target"):
            await client.get(f"{base}/Patient/p")
    assert recorder.sent == []


async def test_private_networks_are_fetched_when_the_setting_allows_them(names: None) -> None:
    recorder = Recorder()
    allowed = policy_from(Settings(hooks_allow_private=True))
    base = "https://payer.internal.example/fhir"
    async with PayerClient(base, token="t", policy=allowed, transport=httpx.MockTransport(recorder)) as client:
        await client.check()
        assert await client.get(f"{base}/Patient/p") == {"resourceType": "Patient", "id": "p"}
    assert [str(r.url) for r in recorder.sent] == [f"{base}/Patient/p"]


async def test_a_token_url_on_a_refused_address_gets_no_credentials(names: None) -> None:
    recorder = Recorder()
    async with PayerClient(
        "https://payer.example/fhir",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_url="https://payer.internal.example/token",
        transport=httpx.MockTransport(recorder),
    ) as client:
        with pytest.raises(errors.FinGateError, match="^tokenUrl: .*10.0.0.7") as refused:
            await client.check()
        assert refused.value.issues[0]["expression"] == ["tokenUrl"]
        with pytest.raises(errors.FinGateError, match="^tokenUrl: "):
            await client.get("https://payer.example/fhir/Patient/p")
    assert recorder.sent == []


async def test_a_next_link_to_another_origin_is_not_followed(names: None) -> None:
    recorder = Recorder()
    async with PayerClient("https://payer.example/fhir", token="t", transport=httpx.MockTransport(recorder)) as client:
        with pytest.raises(PayerError, match="not on the payer's origin"):
            await client.get("https://elsewhere.example/fhir/Coverage?page=2")
        with pytest.raises(errors.FinGateError, match="^url: .*must be an https URL"):
            await client.get("http://payer.example/fhir/Coverage?page=2")
        with pytest.raises(errors.FinGateError, match="^url: a URL with credentials"):
            await client.get("https://user:pw@payer.example/fhir/Coverage?page=2")
        assert await client.get("https://payer.example/fhir/Coverage?page=2") == {"resourceType": "Patient", "id": "p"}
    assert [r.headers["Authorization"] for r in recorder.sent] == ["Bearer t"]


async def test_timeouts_and_dropped_connections_are_tried_again_a_bounded_number_of_times(names: None) -> None:
    # A transport that raises what httpx raises when a request times out or a connection drops: deterministic,
    # where a slow server would make the test depend on timing (the real-server paths are the tests above).
    failures = [httpx.ReadTimeout("timed out"), httpx.RemoteProtocolError("dropped")]
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        if failures:
            raise failures.pop(0)
        return httpx.Response(200, json={"resourceType": "Patient", "id": "p"})

    sleep = Sleeps()
    async with PayerClient(
        "https://payer.example/fhir", token="t", sleep=sleep, transport=httpx.MockTransport(answer)
    ) as client:
        assert await client.get("https://payer.example/fhir/Patient/p") == {"resourceType": "Patient", "id": "p"}
        assert len(sent) == 3 and len(sleep.asked) == 2
        failures.extend(httpx.ConnectTimeout("timed out") for _ in range(ATTEMPTS))
        with pytest.raises(PayerError, match=f"ConnectTimeout after {ATTEMPTS} tries"):
            await client.get("https://payer.example/fhir/Patient/p")
        assert len(sent) == 3 + ATTEMPTS
        assert all(0 < s <= MAX_WAIT for s in sleep.asked)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_the_command_imports_with_progress_and_resumes(
    mongo_uri: str, fake: tuple[FakePayer, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served, base = fake
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("FINGATE_DB", f"test_cli_import_{served.token[:8].lower().replace('-', 'x')}")
    served.faults = {("ExplanationOfBenefit", 1): [500] * ATTEMPTS}
    served.retry_after = "0"
    monkeypatch.setattr("app.payers.client._BACKOFF", lambda state: 0.0)  # no real waits between the 500s
    args = ["import-payer", "--base", base, "--patient", MEMBER, "--allow-loopback"]
    oauth = ["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET, "--token-url", base[:-5] + "/token"]
    assert main([*args, *oauth]) == 1
    out = capsys.readouterr()
    assert "Coverage page 3: 2 (created 2)" in out.err  # progress, page by page
    assert out.out.startswith("failed: created 5,")
    job_id = out.out.split("--resume ")[1].split()[0]
    assert main(["import-payer", "--base", base, "--resume", job_id, "--allow-loopback", *oauth]) == 0
    out = capsys.readouterr()
    assert "ExplanationOfBenefit page 4: 2 (created 2)" in out.err
    assert out.out.startswith("completed: created 7, updated 0, unchanged 0, rejected 0")
    assert CLIENT_SECRET not in out.out + out.err
    assert main([*args, "--token", served.token]) == 0
    assert capsys.readouterr().out.startswith("completed: created 0, updated 0, unchanged 7, rejected 0")
    with pymongo.MongoClient(mongo_uri) as mongo:
        mongo.drop_database(os.environ["FINGATE_DB"])


def test_the_command_refuses_a_payer_on_a_private_address(
    mongo_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("FINGATE_DB", "test_cli_import_refused")
    args = ["import-payer", "--base", "https://10.0.0.1/fhir", "--patient", MEMBER, "--token", "the-token"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "base: '10.0.0.1' resolves to 10.0.0.1: not an allowed target" in err and "the-token" not in err
    with pymongo.MongoClient(mongo_uri) as mongo:
        assert mongo["test_cli_import_refused"]["payer_imports"].count_documents({}) == 0
        mongo.drop_database("test_cli_import_refused")


async def test_a_cancelled_job_is_left_failed_and_resumable(store: Store, fake: tuple[FakePayer, str]) -> None:
    served, base = fake
    entered, release = asyncio.Event(), asyncio.Event()

    class Held(PayerClient):
        async def get(self, url: str) -> Any:
            if "ExplanationOfBenefit" in url:
                entered.set()
                await release.wait()  # held here until cancelled, as a stopping server cancels its tasks
            return await super().get(url)

    client = Held(base, token=served.token, policy=LOOPBACK)
    job = payer.new_job(client.base, MEMBER)
    task = payer.start(Writer(store), client, job, payer.saver(store))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = await payer.find(store, job["id"])
    assert kept is not None
    assert (kept["status"], kept["error"], kept["created"]) == (payer.FAILED, "interrupted: the server stopped", 5)
    resumed = await _import(store, base, await payer.resumable(store, job["id"], base), token=served.token)
    assert (resumed["status"], resumed["created"]) == (payer.COMPLETED, 7)
