"""The `transaction` and `batch` mutations' types: FHIR Bundle entries in, each entry's outcome out."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types.base import StrawberryList, StrawberryOptional

from app import bundles, errors
from app.graphql.scalars import JSON

ENTRY_INPUT = "BundleEntryInput"
REQUEST_INPUT = "BundleEntryRequestInput"
OUTCOME = "BundleEntryOutcome"
ERROR = "BundleEntryError"
NAMES = (ENTRY_INPUT, REQUEST_INPUT, OUTCOME, ERROR)


@strawberry.input(name=REQUEST_INPUT, description="Bundle.entry.request: what to do with the entry's resource.")
class BundleEntryRequestInput:
    method: str = strawberry.field(description="POST (create), PUT (update, or create with that id), PATCH, DELETE.")
    url: str = strawberry.field(
        description="POST: the type (`Claim`); PUT, PATCH, DELETE: `Type/id`, where the id may be another entry's "
        "`urn:uuid:` fullUrl (`Claim/urn:uuid:...`, or the fullUrl alone); a PUT may also be `Type?criteria`, a "
        "conditional update (the one match updated, none: created, several: PRECONDITION_FAILED)."
    )
    ifMatch: str | None = strawberry.field(  # noqa: N815 - FHIR's name
        default=None, description='The expected meta.versionId (`1` or `W/"1"`): a CONFLICT when it differs.'
    )
    ifNoneExist: str | None = strawberry.field(  # noqa: N815 - FHIR's name
        default=None,
        description="POST only: a search string (`identifier=http://example.org|123`); a match is returned, not created.",
    )


@strawberry.input(name=ENTRY_INPUT, description="One Bundle.entry of a transaction or batch.")
class BundleEntryInput:
    request: BundleEntryRequestInput = strawberry.field(description="What to do.")
    fullUrl: str | None = strawberry.field(  # noqa: N815 - FHIR's name
        default=None,
        description="`urn:uuid:...`: other entries' references to it are rewritten to the id it gets.",
    )
    resource: JSON | None = strawberry.field(
        default=None,
        description="POST, PUT: the resource as FHIR JSON; PATCH: the JSON Patch (RFC 6902), a list of operations.",
    )


def entries(given: list[BundleEntryInput]) -> list[bundles.Entry]:
    return [
        bundles.Entry(
            method=e.request.method,
            url=e.request.url,
            resource=e.resource,
            full_url=e.fullUrl,
            if_match=e.request.ifMatch,
            if_none_exist=e.request.ifNoneExist,
        )
        for e in given
    ]


def outcome(o: bundles.Outcome) -> dict[str, Any]:
    """An entry's outcome as the `BundleEntryOutcome` type reads it (Bundle.entry.response's fields, and more)."""
    error = None
    if o.error is not None:
        ext = o.error.extensions
        error = {"code": o.error.code, "message": o.error.message, "operationOutcome": ext.get("operationOutcome")}
    resource = o.resource
    return {
        "fullUrl": o.full_url,
        "status": o.status,
        "outcome": o.action,
        "location": o.location,
        "etag": f'W/"{o.version}"' if o.version and o.action != "deleted" else None,
        "lastModified": (resource or {}).get("meta", {}).get("lastUpdated") if o.action != "deleted" else None,
        "resourceType": o.resource_type,
        "id": o.id,
        "versionId": o.version,
        "resource": resource if o.action != "deleted" else None,
        "error": error,
    }


def outcome_type(resource_union: Any) -> Any:
    """`BundleEntryOutcome`, whose `resource` is any served resource (the schema's `Resource` union)."""
    error_cls: Any = type(ERROR, (), {"__module__": __name__})
    text = StrawberryOptional(str)
    error_cls.__annotations__ = {"code": str, "message": str, "operationOutcome": StrawberryOptional(JSON)}
    error_cls.code = strawberry.field(name="code", description=f"As `extensions.code`: {errors.BAD_USER_INPUT}, ...")
    error_cls.message = strawberry.field(name="message", description="What went wrong, and how to fix it.")
    error_cls.operationOutcome = strawberry.field(
        name="operationOutcome", description="An R5 OperationOutcome, one issue per problem."
    )
    error_type = strawberry.type(error_cls, name=ERROR, description="Why a batch entry failed (nothing stored).")
    fields: list[tuple[str, Any, str]] = [
        ("fullUrl", text, "The entry's fullUrl, as sent."),
        ("status", str, "Bundle.entry.response.status: `201 Created`, `200 OK`, `204 No Content`, or an error's."),
        ("outcome", text, "created, updated, unchanged, matched (ifNoneExist found it) or deleted; null on error."),
        ("location", text, "Bundle.entry.response.location: `Type/id/_history/version`."),
        ("etag", text, 'Bundle.entry.response.etag: `W/"version"`.'),
        ("lastModified", text, "Bundle.entry.response.lastModified: the version's meta.lastUpdated."),
        ("resourceType", text, "The entry's resource type."),
        ("id", StrawberryOptional(strawberry.ID), "The resource id (assigned, for a create)."),
        ("versionId", text, "Its meta.versionId now (a delete: the version removed)."),
        ("resource", StrawberryOptional(resource_union), "The resource as stored; null for a delete or an error."),
        ("error", StrawberryOptional(error_type), "A batch entry's failure; null when it succeeded."),
    ]
    cls = type(OUTCOME, (), {"__module__": __name__})
    cls.__annotations__ = {name: kind for name, kind, _ in fields}
    for name, _, description in fields:
        setattr(cls, name, strawberry.field(name=name, description=description))
    return strawberry.type(cls, name=OUTCOME, description="What one Bundle entry did (Bundle.entry.response).")


def outcomes_type(resource_union: Any) -> Any:
    return StrawberryOptional(StrawberryList(outcome_type(resource_union)))
