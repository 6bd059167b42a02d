"""A payer import: page through a patient's R4 Patient, Coverage and ExplanationOfBenefit, convert, store idempotently.

The job document (app.store.jobs) is the whole state: the step, the URL of the page to fetch next, the counts, what was
rejected. A failed page leaves the job `failed` with that page's URL, so running the job again resumes there.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from app import errors
from app.fhir.references import relative_reference
from app.payers.client import PayerClient, PayerError
from app.payers.convert import ConversionError, convert
from app.store import Store
from app.store.jobs import PAYER_IMPORTS, get_job, save_job
from app.writes import Writer

log = logging.getLogger("fingate.payers")

# In this order, so a Coverage's beneficiary and an EOB's patient and coverage are stored before what points at them.
STEPS: tuple[tuple[str, str], ...] = (
    ("Patient", "Patient/{patient}"),
    ("Coverage", "Coverage?beneficiary=Patient/{patient}"),
    ("ExplanationOfBenefit", "ExplanationOfBenefit?patient={patient}"),
)
OUTCOMES = ("created", "updated", "unchanged")
_JOB_FAILS = (errors.UNAVAILABLE, errors.UNKNOWN_OUTCOME)  # the database, not the resource: stop, resume later
RUNNING, FAILED, COMPLETED = "running", "failed", "completed"

Job = dict[str, Any]
Save = Callable[[Job], Awaitable[None]]
Progress = Callable[[Job, str], None]


def fingate_id(base: str, resource_type: str, payer_id: str) -> str:
    """The FinGate id of a payer's resource: the same on every import, different for every payer and id."""
    return hashlib.sha256(f"{base}/{resource_type}/{payer_id}".encode()).hexdigest()[:40]


def identifier_system(base: str, resource_type: str) -> str:
    """The system of the identifier that carries the payer's id (`https://payer.example/fhir/Coverage`)."""
    return f"{base}/{resource_type}"


def new_job(base: str, patient: str) -> Job:
    return {
        "id": uuid.uuid4().hex,
        "base": base,
        "patient": patient,
        "status": RUNNING,
        "step": 0,
        "next": None,
        "pages": 0,
        **dict.fromkeys(OUTCOMES, 0),
        "rejected": [],
        "dropped": [],
        "known": [],  # the payer's `Type/id` of every resource stored, for rewriting references to them
        "error": None,
        "started": datetime.now(UTC),
        "finished": None,
    }


def running(job: Job) -> Job:
    """`job` as it is while it runs (a resumed one forgets its last failure)."""
    job.update(status=RUNNING, error=None, finished=None)
    return job


def _page(data: Any, resource_type: str, url: str) -> tuple[list[dict[str, Any]], str | None]:
    """The resources of one answer (a search Bundle, or the resource read) and its `next` link."""
    if not isinstance(data, dict):
        raise PayerError(f"GET {url}: not a FHIR resource")
    if data.get("resourceType") == resource_type:
        return [data], None
    if data.get("resourceType") != "Bundle":
        raise PayerError(f"GET {url}: a {data.get('resourceType')!r}, not a Bundle of {resource_type}")
    entries = [e.get("resource") for e in data.get("entry") or [] if isinstance(e, dict)]
    resources = [r for r in entries if isinstance(r, dict) and r.get("resourceType") == resource_type]
    links = [link for link in data.get("link") or [] if isinstance(link, dict) and link.get("relation") == "next"]
    next_url = links[0].get("url") if links else None
    return resources, next_url if isinstance(next_url, str) and next_url else None


def _rewrite(node: Any, base: str, known: set[str]) -> Any:
    """References to what this import stored become FinGate's `Type/id`; other relative ones point at the payer."""
    if isinstance(node, list):
        return [_rewrite(v, base, known) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rewrite(v, base, known) for k, v in node.items()}
    ref = out.get("reference")
    if isinstance(ref, str) and not ref.startswith("#"):
        local = ref.removeprefix(base + "/") if ref.startswith(base + "/") else ref
        parsed = relative_reference(local)
        if parsed is not None and local in known:
            out["reference"] = f"{parsed[0]}/{fingate_id(base, *parsed)}"
        elif "://" not in local and not local.startswith(("urn:", "#")):
            out["reference"] = f"{base}/{local}"
    return out


def as_imported(base: str, resource_type: str, r4: dict[str, Any], known: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The R5 resource FinGate stores for a payer's R4 one: its id, `meta.source`, an identifier of the payer's id,
    references rewritten; and the R4 paths dropped."""
    payer_id = str(r4["id"])
    converted = convert(r4)
    resource = _rewrite(converted.resource, base, known)
    resource["id"] = fingate_id(base, resource_type, payer_id)
    resource["meta"] = {**resource.get("meta", {}), "source": f"{base}/{resource_type}/{payer_id}"}
    mine = {"system": identifier_system(base, resource_type), "value": payer_id}
    identifiers = [i for i in resource.get("identifier") or [] if i != mine]
    resource["identifier"] = [*identifiers, mine]
    return resource, converted.dropped


async def _store(writer: Writer, job: Job, resource_type: str, r4: dict[str, Any], known: set[str]) -> str:
    base = job["base"]
    payer_id = r4.get("id")
    source = f"{base}/{resource_type}/{payer_id}"
    if not isinstance(payer_id, str) or not payer_id:
        job["rejected"].append({"source": f"{base}/{resource_type}", "reason": "a resource without an id"})
        return "rejected"
    try:
        resource, dropped = as_imported(base, resource_type, r4, known)
        outcome, _ = await writer.put(resource_type, resource)
    except ConversionError as exc:
        job["rejected"].append({"source": source, "reason": f"not R4: {exc}"})
        return "rejected"
    except errors.FinGateError as exc:
        if exc.code in _JOB_FAILS:
            raise
        details = "; ".join(i.get("diagnostics", "") for i in exc.issues or [] if i.get("diagnostics")) or exc.message
        job["rejected"].append({"source": source, "reason": f"{exc.code}: {details}"})
        return "rejected"
    job[outcome] += 1
    job["dropped"] = sorted({*job["dropped"], *dropped})
    known.add(f"{resource_type}/{payer_id}")
    return outcome


async def run(writer: Writer, client: PayerClient, job: Job, save: Save, progress: Progress | None = None) -> Job:
    """Run (or resume) `job` to its end: `completed`, or `failed` with `error` and the page to resume from."""
    running(job)
    known = set(job["known"])
    await save(job)
    try:
        while job["step"] < len(STEPS):
            resource_type, template = STEPS[job["step"]]
            url = job["next"] or f"{client.base}/{template.format(patient=quote(job['patient'], safe=''))}"
            job["next"] = url  # kept while the page is fetched and stored: a failure resumes here
            resources, next_url = _page(await client.get(url), resource_type, url)
            outcomes = [await _store(writer, job, resource_type, r, known) for r in resources]
            job["known"] = sorted(known)
            job["pages"] += 1
            if next_url is None:
                job["step"], job["next"] = job["step"] + 1, None
            else:
                job["next"] = next_url
            await save(job)
            if progress is not None:
                counts = ", ".join(f"{o} {outcomes.count(o)}" for o in (*OUTCOMES, "rejected") if outcomes.count(o))
                progress(job, f"{resource_type} page {job['pages']}: {len(resources)} ({counts or 'none'})")
        job["status"] = COMPLETED
    except (PayerError, errors.FinGateError) as exc:
        job["status"], job["error"] = FAILED, str(exc)
    except asyncio.CancelledError:  # the server is stopping: leave the job resumable, not `running` forever
        job.update(status=FAILED, error="interrupted: the server stopped", finished=datetime.now(UTC))
        await asyncio.shield(save(job))
        raise
    except Exception as exc:  # a background job must end in a state, whatever happened
        log.exception("payer import %s failed", job["id"])
        job["status"], job["error"] = FAILED, f"internal error: {type(exc).__name__}"
    job["finished"] = datetime.now(UTC)
    await save(job)
    return job


def saver(store: Store) -> Save:
    """Where a job keeps its state: its document in the store (per tenant)."""

    async def save(job: Job) -> None:
        await save_job(store, PAYER_IMPORTS, job)

    return save


async def find(store: Store, id: str) -> Job | None:
    return await get_job(store, PAYER_IMPORTS, id)


async def resumable(store: Store, id: str, base: str) -> Job:
    """The job `id` to run again: it must exist, be failed and be of the same payer (credentials are never kept)."""
    job = await find(store, id)
    if job is None:
        raise errors.FinGateError(errors.NOT_FOUND, f"no payer import {id}")
    if job["status"] != FAILED:
        raise errors.FinGateError(errors.CONFLICT, f"payer import {id} is {job['status']}: only a failed one resumes")
    if job["base"] != base:
        raise errors.bad_input(f"payer import {id} is of {job['base']}, not {base}", "base")
    return job


_BACKGROUND: set[asyncio.Task[Job]] = set()  # running jobs, kept referenced until they end


def start(writer: Writer, client: PayerClient, job: Job, save: Save) -> asyncio.Task[Job]:
    """Run `job` in the background (the server's event loop); the client is closed when it ends."""

    async def body() -> Job:
        try:
            return await run(writer, client, job, save)
        finally:
            await client.close()

    task = asyncio.create_task(body(), name=f"payer-import-{job['id']}")
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task
