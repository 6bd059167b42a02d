"""FHIR references: which point inside this server, parsed once."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from app.fhir.model import SERVED

# A relative literal reference `Type/id`, optionally versioned (`Type/id/_history/v`). Absolute URLs (even
# to ourselves: the server does not know the base clients use), `#contained`, `urn:uuid:` (rewritten by
# the Bundle loader) and identifier-only references are external: FinGate neither follows nor refuses them.
_RELATIVE = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?")
_LONGEST = 200  # longer than any `Type/id/_history/v`


@lru_cache(maxsize=16_384)  # a billing list parses the same few hundred references on every request
def relative_reference(text: str) -> tuple[str, str] | None:
    """`(type, id)` of a relative literal reference of any type, else None."""
    m = _RELATIVE.fullmatch(text) if len(text) <= _LONGEST else None
    return None if m is None else (m.group(1), m.group(2))


# The `Type/id` tail of an absolute URL to a FHIR server (`https://x.org/fhir/Claim/1`, optionally versioned).
_ABSOLUTE = re.compile(
    r"[a-z][a-z0-9+.\-]*://\S*?/([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)


def typed_reference(text: str) -> str | None:
    """The resource type a literal reference names (relative or absolute RESTful URL), else None."""
    parsed = relative_reference(text)
    if parsed is not None:
        return parsed[0]
    m = _ABSOLUTE.fullmatch(text) if len(text) <= 2 * _LONGEST else None
    return None if m is None else m.group(1)


@lru_cache(maxsize=16_384)
def _versioned(text: str) -> tuple[str, str] | None:
    m = _RELATIVE.fullmatch(text) if len(text) <= _LONGEST else None
    return None if m is None else (m.group(1), m.group(2) + (m.group(3) or ""))


def local_version(reference: Any) -> tuple[str, str] | None:
    """`(type, id)`, or `(type, "id/_history/v")` for a versioned reference (FHIR's vread path), when a
    Reference dict points at a served resource on this server, else None."""
    if not isinstance(reference, dict) or not isinstance(text := reference.get("reference"), str):
        return None
    parsed = _versioned(text)
    return parsed if parsed is not None and parsed[0] in SERVED else None


def local_reference(reference: Any) -> tuple[str, str] | None:
    """`(type, id)` when a Reference dict points at a served resource on this server, else None."""
    if not isinstance(reference, dict) or not isinstance(text := reference.get("reference"), str):
        return None
    parsed = relative_reference(text)
    return parsed if parsed is not None and parsed[0] in SERVED else None


def by_type(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(type, id) keys as {type: [ids]}, in their order: the shape every batched read takes."""
    out: dict[str, list[str]] = {}
    for rtype, id in keys:
        out.setdefault(rtype, []).append(id)
    return out
