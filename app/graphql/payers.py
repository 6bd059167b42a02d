"""The payer import in GraphQL: the `importPayer` mutation (a background job) and the `PayerImport` job query."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry

from app import errors
from app.auth import CREATE, READ, UPDATE
from app.fhir.values import instant
from app.payers import job as payer
from app.payers.client import PayerClient, policy_from
from app.payers.mapping import TYPES
from app.settings import Settings
from app.writes import Writer

JOB = "PayerImport"
REJECTION = "PayerImportRejection"
NAMES = (JOB, REJECTION)
ADMIN = (
    "Needs an admin token: a system/AuditEvent.r scope (as AuditLog does) and create and update on Patient, Coverage "
    "and ExplanationOfBenefit over the whole tenant (not patient/ scopes)."
)


@strawberry.type(name=REJECTION, description="A payer resource the import did not store, and why.")
class Rejection:
    source: str = strawberry.field(description="The payer's URL of the resource.")
    reason: str = strawberry.field(description="The error code and what was wrong.")


@strawberry.type(
    name=JOB,
    description="A payer import job (README 'Importing from a payer'): its progress while it runs, then its outcome.",
)
class PayerImportJob:
    id: strawberry.ID = strawberry.field(description="The job id; `importPayer(resume:)` continues a failed job.")
    base: str = strawberry.field(description="The payer's FHIR base URL.")
    patient: str = strawberry.field(description="The payer's Patient id.")
    status: str = strawberry.field(description="`running`, `failed` (see `error`; it can be resumed) or `completed`.")
    step: str | None = strawberry.field(description="The resource type being fetched; null once completed.")
    next: str | None = strawberry.field(description="The page fetched next: a failed job resumes there.")
    pages: int = strawberry.field(description="Pages fetched and stored.")
    created: int = strawberry.field(description="Resources stored for the first time.")
    updated: int = strawberry.field(description="Resources the payer changed since the last import (a new version).")
    unchanged: int = strawberry.field(description="Resources already stored as the payer has them (no new version).")
    rejected: list[Rejection] = strawberry.field(description="Resources not stored (conversion or validation).")
    dropped: list[str] = strawberry.field(description="R4 elements the import met that R5 has no place for.")
    error: str | None = strawberry.field(description="Why the job failed (a status and a URL, never a credential).")
    started: str = strawberry.field(description="When it started, a FHIR instant.")
    finished: str | None = strawberry.field(description="When it ended, a FHIR instant; null while it runs.")


def _when(value: Any) -> str | None:
    return instant(value) if isinstance(value, datetime) else None


def _view(job: dict[str, Any]) -> dict[str, Any]:
    """The job document as the GraphQL type reads it (plain fields resolve from dicts)."""
    step = job["step"]
    return {
        **{k: job[k] for k in ("id", "base", "patient", "status", "next", "pages", "created", "updated", "unchanged")},
        "step": payer.STEPS[step][0] if step < len(payer.STEPS) else None,
        "rejected": [{"source": r["source"], "reason": r["reason"]} for r in job["rejected"]],
        "dropped": list(job["dropped"]),
        "error": job["error"],
        "started": _when(job["started"]) or "",
        "finished": _when(job.get("finished")),
    }


def _admin(context: Any) -> None:
    principal = context.principal
    for rtype in TYPES:
        for action in (CREATE, UPDATE, READ):
            if not principal.can(rtype, action) or rtype in principal.compartment_types(action):
                raise errors.forbidden(rtype, action)
    if not principal.audit:
        raise errors.FinGateError(
            errors.FORBIDDEN,
            "a payer import needs an admin token (a system/AuditEvent.r scope)",
            issues=[errors.outcome_issue("a payer import needs an admin token", code="forbidden")],
        )


async def import_payer(
    info: strawberry.Info,
    base: str,
    patient: str | None = None,
    token: str | None = None,
    client_id: Annotated[str | None, strawberry.argument(name="clientId")] = None,
    client_secret: Annotated[str | None, strawberry.argument(name="clientSecret")] = None,
    token_url: Annotated[str | None, strawberry.argument(name="tokenUrl")] = None,
    resume: strawberry.ID | None = None,
) -> dict[str, Any]:
    context = info.context
    _admin(context)
    if not (patient or resume):
        raise errors.bad_input("give the payer's patient id, or the id of a failed import to resume", "patient")
    if not (token or (client_id and client_secret and token_url)):
        raise errors.bad_input("give a bearer token, or clientId, clientSecret and tokenUrl", "token")
    client = PayerClient(
        base,
        token=token,
        client_id=client_id,
        client_secret=client_secret,
        token_url=token_url,
        policy=policy_from(Settings()),
    )
    store = context.tenant
    try:
        await client.check()  # a refused base or token URL is the caller's error, before any job exists
        job = (
            await payer.resumable(store, str(resume), client.base)
            if resume
            else payer.new_job(client.base, patient or "")
        )
        save = payer.saver(store)
        await save(payer.running(job))  # queryable, as running, before this answer
    except BaseException:
        await client.close()
        raise
    writer = Writer(store, context.principal.sub, context.request_id, context.client_request_id)
    payer.start(writer, client, job, save)
    return _view(job)


async def payer_import(info: strawberry.Info, id: strawberry.ID) -> dict[str, Any] | None:
    _admin(info.context)
    job = await payer.find(info.context.tenant, str(id))
    if job is None:
        raise errors.FinGateError(errors.NOT_FOUND, f"no payer import {id}")
    return _view(job)


def query_field() -> tuple[str, None, Any]:
    return (
        JOB,
        None,
        strawberry.field(
            resolver=payer_import,
            name=JOB,
            graphql_type=PayerImportJob | None,
            description=f"A payer import job by id. {ADMIN}",
        ),
    )


def mutation_field() -> tuple[str, None, Any]:
    description = (
        "Start importing a patient's Patient, Coverage and ExplanationOfBenefit from a payer's FHIR R4 API "
        "(converted to R5, validated, stored idempotently) as a background job; query its progress with "
        f"`PayerImport(id:)`. Credentials are used, never stored: a resumed job needs them again. {ADMIN}"
    )
    return (
        "importPayer",
        None,
        strawberry.field(
            resolver=import_payer,
            graphql_type=PayerImportJob,
            name="importPayer",
            description=description,
        ),
    )
