"""What each document reads, through the caller's door to data (its scopes, compartment and tenant)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from app import errors
from app.documents.values import first, reference_key
from app.fhir.values import Resource

LISTED = 100  # a superbill or statement reads at most this many Claims or Invoices (and says so when cut)


class Reader(Protocol):
    """The door a document reads through (the GraphQL layer's per-request Context): it checks scopes and
    compartments, and raises FORBIDDEN for a type the caller may not read."""

    async def read(self, resource_type: str, id: str) -> Resource | None: ...

    async def resolve(self, reference: Resource) -> Resource | None: ...

    async def search(
        self, resource_type: str, params: dict[str, Any], count: int | None, offset: int | None, sort: str | None
    ) -> list[Resource]: ...

    async def billing(self, resource: Resource) -> dict[str, Any]: ...


@dataclass
class Sources:
    """A document's resources: the one it is for, and those it names by role (`patient`, `coverage`, ...)."""

    main: Resource
    related: dict[str, Resource | None] = field(default_factory=dict)
    withheld: set[str] = field(default_factory=set)  # roles the caller's scopes do not reach
    claims: list[Resource] = field(default_factory=list)
    invoices: list[tuple[Resource, dict[str, Any] | None]] = field(default_factory=list)
    billing: dict[str, Any] | None = None
    more: bool = False  # more Claims or Invoices than LISTED matched

    def get(self, role: str) -> Resource | None:
        return self.related.get(role)


async def _main(reader: Reader, resource_type: str, id: str) -> Resource:
    found = await reader.read(resource_type, id)
    if found is None:
        raise errors.not_found(resource_type, id)
    return found


async def _resolve(reader: Reader, sources: Sources, roles: dict[str, Any]) -> None:
    """Resolve each role's reference together; a type the caller may not read is `withheld`, not an error."""

    async def one(role: str, reference: Any) -> tuple[str, Resource | None]:
        if reference_key(reference) is None:  # no reference (an identifier or display only): nothing to read
            return role, None
        try:
            return role, await reader.resolve(reference)
        except errors.FinGateError as exc:
            if exc.code != errors.FORBIDDEN:
                raise
            sources.withheld.add(role)
            return role, None

    for role, resource in await asyncio.gather(*(one(r, ref) for r, ref in roles.items())):
        sources.related[role] = resource


def _focal_coverage(claim: Resource) -> Any:
    insurance = [i for i in claim.get("insurance") or () if isinstance(i, dict)]
    chosen = next((i for i in insurance if i.get("focal")), first(insurance))
    return chosen.get("coverage") if chosen else None


def _other_coverage(claim: Resource) -> Any:
    """The first insurance after the focal one (the CMS-1500's "other insured")."""
    focal = _focal_coverage(claim)
    others = [i for i in claim.get("insurance") or () if isinstance(i, dict) and i.get("coverage") != focal]
    return others[0].get("coverage") if others else None


async def _claim_parties(reader: Reader, sources: Sources, claim: Resource) -> None:
    """Patient, Coverage, insurer, billing provider, facility and care team; then the subscriber and,
    for a PractitionerRole, its Practitioner and Organization."""
    roles: dict[str, Any] = {
        "patient": claim.get("patient"),
        "coverage": _focal_coverage(claim),
        "otherCoverage": _other_coverage(claim),
        "insurer": claim.get("insurer"),
        "provider": claim.get("provider"),
        "facility": claim.get("facility"),
        "referral": claim.get("referral"),
    }
    for member in claim.get("careTeam") or ():
        if isinstance(member, dict):
            roles[f"careTeam/{member.get('sequence')}"] = member.get("provider")
    await _resolve(reader, sources, roles)
    coverage = sources.get("coverage") or {}
    provider = sources.get("provider") or {}
    second: dict[str, Any] = {
        "subscriber": coverage.get("subscriber"),
        "otherCoverage/subscriber": (sources.get("otherCoverage") or {}).get("subscriber"),
    }
    if not claim.get("insurer"):
        second["insurer"] = coverage.get("insurer")
    if provider.get("resourceType") == "PractitionerRole":
        second["provider/practitioner"] = provider.get("practitioner")
        second["provider/organization"] = provider.get("organization")
    for role, member in list(sources.related.items()):
        if role.startswith("careTeam/") and (member or {}).get("resourceType") == "PractitionerRole":
            second[f"{role}/practitioner"] = (member or {}).get("practitioner")
    await _resolve(reader, sources, second)


async def claim_sources(reader: Reader, id: str) -> Sources:
    claim = await _main(reader, "Claim", id)
    sources = Sources(claim)
    await _claim_parties(reader, sources, claim)
    return sources


async def encounter_sources(reader: Reader, id: str) -> Sources:
    """An Encounter, its patient and practice, and the Claims whose items name it (their services and fees)."""
    encounter = await _main(reader, "Encounter", id)
    sources = Sources(encounter)
    claims = await reader.search("Claim", {"encounter": [f"Encounter/{id}"]}, LISTED + 1, 0, "created")
    sources.more, sources.claims = len(claims) > LISTED, claims[:LISTED]
    roles: dict[str, Any] = {"patient": encounter.get("subject"), "provider": encounter.get("serviceProvider")}
    if sources.claims:
        roles["coverage"] = _focal_coverage(sources.claims[0])
        roles["insurer"] = sources.claims[0].get("insurer")
        if not encounter.get("serviceProvider"):
            roles["provider"] = sources.claims[0].get("provider")
    await _resolve(reader, sources, roles)
    await _resolve(reader, sources, {"subscriber": (sources.get("coverage") or {}).get("subscriber")})
    return sources


async def _billing(reader: Reader, sources: Sources, resource: Resource) -> dict[str, Any] | None:
    try:
        return await reader.billing(resource)
    except errors.FinGateError as exc:
        if exc.code != errors.FORBIDDEN:
            raise
        sources.withheld.add("payments")
        return None


async def invoice_sources(reader: Reader, id: str) -> Sources:
    invoice = await _main(reader, "Invoice", id)
    sources = Sources(invoice)
    sources.billing = await _billing(reader, sources, invoice)
    await _resolve(
        reader,
        sources,
        {
            "patient": invoice.get("recipient") or invoice.get("subject"),
            "issuer": invoice.get("issuer"),
            "account": invoice.get("account"),
        },
    )
    return sources


async def patient_sources(reader: Reader, id: str) -> Sources:
    """A Patient and its open (`issued`) Invoices, oldest first, each with its billing view."""
    patient = await _main(reader, "Patient", id)
    sources = Sources(patient)
    sources.related["patient"] = patient
    found = await reader.search(
        "Invoice", {"recipient": [f"Patient/{id}"], "status": ["issued"]}, LISTED + 1, 0, "date"
    )
    sources.more, found = len(found) > LISTED, found[:LISTED]
    views = await asyncio.gather(*(_billing(reader, sources, invoice) for invoice in found))
    sources.invoices = list(zip(found, views, strict=True))
    if found:
        await _resolve(reader, sources, {"issuer": found[0].get("issuer")})
    return sources
