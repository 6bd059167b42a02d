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
