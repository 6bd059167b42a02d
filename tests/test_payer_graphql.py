"""`importPayer` and `PayerImport` over HTTP: an admin starts the import as a background job, polls it, then reads the
payer's EOBs with their Coverage like any other resources."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.payers.fake import CLIENT_ID, CLIENT_SECRET, MEMBER, FakePayer, serving
from app.payers.job import fingate_id
from app.settings import Settings
from app.store import Store
from tests.harness import client_for, error_codes, gql, ok
from tests.tokens import authed_client, bearer, token

START = """
mutation($base: String!, $patient: String, $token: String, $id: String, $secret: String, $url: String, $resume: ID) {
  importPayer(base: $base, patient: $patient, token: $token, clientId: $id, clientSecret: $secret, tokenUrl: $url,
              resume: $resume) { id status step pages }
}"""
JOB = """query($id: ID!) {
  PayerImport(id: $id) { id base patient status step next pages created updated unchanged rejected { source reason }
                         dropped error started finished }
}"""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakePayer, str]]:
    monkeypatch.setenv("FINGATE_PAYER_ALLOW_LOOPBACK", "true")
    served = FakePayer()
    with serving(served) as base:
        yield served, base


def _readme_query() -> str:
    """The README's example query of an imported patient's EOBs (it names the fake payer on port 8090)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b.split("```")[0] for b in readme.split("```graphql\n")[1:]]
    (query,) = [b for b in blocks if 'PatientList(identifier: "http://127.0.0.1:8090' in b]
    return query


def _oauth(base: str) -> dict[str, str]:
    return {"base": base, "patient": MEMBER, "id": CLIENT_ID, "secret": CLIENT_SECRET, "url": base[:-5] + "/token"}


async def _finished(client: Any, id: str, **headers: str) -> dict[str, Any]:
    """Poll the job until it leaves `running` (a generous bound on polls, no timing assumption)."""
    for _ in range(2_000):
        job = ok(await gql(client, JOB, {"id": id}, **headers))["PayerImport"]
        if job["status"] != "running":
            return job  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError(f"payer import {id} still running")


async def test_an_admin_imports_in_the_background_and_reads_the_eobs_with_their_coverage(
    store: Store, fake: tuple[FakePayer, str], caplog: pytest.LogCaptureFixture
) -> None:
    served, base = fake
    async with client_for(store) as client:
        with caplog.at_level(logging.DEBUG):
            started = ok(await gql(client, START, _oauth(base)))["importPayer"]
            assert (started["status"], started["step"], started["pages"]) == ("running", "Patient", 0)
            job = await _finished(client, started["id"])
        assert CLIENT_SECRET not in caplog.text and served.token not in caplog.text
        assert job["status"] == "completed", job
        assert (job["created"], job["updated"], job["unchanged"], job["rejected"]) == (7, 0, 0, [])
        assert (job["step"], job["next"], job["error"], job["pages"]) == (None, None, None, 4)
        assert job["finished"] >= job["started"]

        patient = f"Patient/{fingate_id(base, 'Patient', MEMBER)}"
        query = """query($p: [String!]) {
          ExplanationOfBenefitList(patient: $p, _sort: "_id") {
            meta { source } identifier { system value }
            billing { submitted { value currency } adjudicated { value } paid { value } patientShare { value currency } }
            total { category { coding { code } } amount { value currency } }
            insurance { coverage { resource { ... on Coverage { kind status insurer { reference }
                                                                identifier { system value } } } } }
          }
        }"""
        eobs = ok(await gql(client, query, {"p": [patient]}))["ExplanationOfBenefitList"]
        assert sorted(e["meta"]["source"] for e in eobs) == [
            f"{base}/ExplanationOfBenefit/{i}" for i in ("EB3500", "EB3501")
        ]
        for eob in eobs:
            coverage = eob["insurance"][0]["coverage"]["resource"]
            assert coverage["kind"] == "insurance"
            assert {"system": f"{base}/Coverage", "value": "9876B1"} in coverage["identifier"]
        amounts = {e["meta"]["source"].rsplit("/", 1)[1]: [t["amount"]["value"] for t in e["total"]] for e in eobs}
        assert amounts["EB3500"][0] == "135.57"  # the Decimal scalar: the payer's digits, as a string
        views = {e["meta"]["source"].rsplit("/", 1)[1]: e["billing"] for e in eobs}
        assert views["EB3500"] == {
            "submitted": [{"value": "135.57", "currency": "USD"}],
            "adjudicated": [{"value": "96.00"}],
            "paid": [],
            "patientShare": [{"value": "39.57", "currency": "USD"}],
        }
        assert views["EB3501"]["patientShare"] == [{"value": "2478.57", "currency": "USD"}]

        async with client_for(store, settings=Settings(compiled=False)) as plain:  # the graphql-core path agrees
            assert ok(await gql(plain, query, {"p": [patient]}))["ExplanationOfBenefitList"] == eobs

        readme_query = _readme_query().replace("http://127.0.0.1:8090/fhir", base)
        (patient_read,) = ok(await gql(client, readme_query))["PatientList"]
        assert patient_read["meta"]["source"] == f"{base}/Patient/{MEMBER}"
        listed = patient_read["ExplanationOfBenefitList"]
        assert len(listed) == 2 and all(e["insurance"][0]["coverage"]["resource"]["kind"] for e in listed)

        again = ok(await gql(client, START, _oauth(base)))["importPayer"]
        job = await _finished(client, again["id"])
        assert (job["status"], job["created"], job["updated"], job["unchanged"]) == ("completed", 0, 0, 7)


async def test_a_failed_import_is_resumed_by_id_with_the_credentials_again(
    store: Store, fake: tuple[FakePayer, str]
) -> None:
    served, base = fake
    served.faults = {("ExplanationOfBenefit", 1): [401]}  # a bearer token cannot be renewed: the job fails there
    async with client_for(store) as client:
        started = ok(await gql(client, START, {"base": base, "patient": MEMBER, "token": served.token}))["importPayer"]
        job = await _finished(client, started["id"])
        assert (job["status"], job["step"], job["created"]) == ("failed", "ExplanationOfBenefit", 5)
        assert "401" in job["error"] and job["next"] == f"{base}/ExplanationOfBenefit?patient={MEMBER}"
        resumed = ok(await gql(client, START, {"base": base, "token": served.token, "resume": job["id"]}))
        assert resumed["importPayer"]["id"] == job["id"]
        job = await _finished(client, job["id"])
        assert (job["status"], job["created"], job["pages"]) == ("completed", 7, 4)
        again = await gql(client, START, {"base": base, "token": served.token, "resume": job["id"]})
        assert error_codes(again) == ["CONFLICT"]  # only a failed job resumes


async def test_bad_input_is_refused_before_any_job_exists(store: Store, fake: tuple[FakePayer, str]) -> None:
    _, base = fake
    async with client_for(store) as client:
        for variables, code in [
            ({"base": "http://payer.example/fhir", "patient": MEMBER, "token": "t"}, "BAD_USER_INPUT"),
            ({"base": base, "token": "t"}, "BAD_USER_INPUT"),
            ({"base": base, "patient": MEMBER}, "BAD_USER_INPUT"),
            ({"base": base, "token": "t", "resume": "nope"}, "NOT_FOUND"),
        ]:
            result = await gql(client, START, variables)
            assert error_codes(result) == [code], result
            assert result["data"] is None
        for variables, field in [  # the shared network guard, before any request or job
            ({"base": "https://169.254.169.254/fhir", "patient": MEMBER, "token": "t"}, "base"),
            ({"base": "https://10.0.0.1/fhir", "patient": MEMBER, "token": "t"}, "base"),
            ({**_oauth(base), "url": "https://10.0.0.1/token"}, "tokenUrl"),
        ]:
            result = await gql(client, START, variables)
            assert error_codes(result) == ["BAD_USER_INPUT"], result
            issue = result["errors"][0]["extensions"]["operationOutcome"]["issue"][0]
            assert issue["expression"] == [field] and "not an allowed target" in issue["diagnostics"]
        assert await store.db["payer_imports"].count_documents({}) == 0
        assert error_codes(await gql(client, JOB, {"id": "nope"})) == ["NOT_FOUND"]


async def test_only_an_admin_token_may_import_or_read_jobs(store: Store, fake: tuple[FakePayer, str]) -> None:
    _, base = fake
    async with authed_client(store) as client:
        for scope in ("user/*.cruds", "patient/*.cruds system/AuditEvent.r", "system/AuditEvent.r user/Patient.cruds"):
            headers = bearer(token(scope=scope, patient=MEMBER))
            assert error_codes(await gql(client, START, _oauth(base), **headers)) == ["FORBIDDEN"], scope
            assert error_codes(await gql(client, JOB, {"id": "x"}, **headers)) == ["FORBIDDEN"], scope
        admin = bearer(token(scope="system/*.cruds system/AuditEvent.r"))
        started = ok(await gql(client, START, _oauth(base), **admin))["importPayer"]
        job = await _finished(client, started["id"], **admin)
        assert job["status"] == "completed"
        other_tenant = bearer(token(scope="system/*.cruds system/AuditEvent.r", tenant="other"))
        assert error_codes(await gql(client, JOB, {"id": started["id"]}, **other_tenant)) == ["NOT_FOUND"]
