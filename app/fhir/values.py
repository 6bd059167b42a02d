"""FHIR JSON as FinGate handles it: a resource is a plain dict, an instant is UTC text with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Resource = dict[str, Any]


def instant(when: datetime) -> str:
    """A FHIR instant in UTC with milliseconds: `2026-11-23T09:30:00.123Z`."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_instant() -> str:
    return instant(datetime.now(UTC))


# FHIR's code for a history entry's request method (Bundle.entry.request.method, R5 CodeSystem http-verb).
DELETE_TAG = {"system": "http://hl7.org/fhir/http-verb", "code": "DELETE", "display": "DELETE"}


def deletion(resource_type: str, id: str, when: datetime) -> Resource:
    """The entry that starts a deleted resource's history: no content, no version, the delete's time and tag."""
    return {"resourceType": resource_type, "id": id, "meta": {"lastUpdated": instant(when), "tag": [dict(DELETE_TAG)]}}
