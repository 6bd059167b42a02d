"""The link fields to the PDF documents (app/documents): `Claim.cms1500Url`, `Invoice.statementUrl`, ..."""

from __future__ import annotations

import urllib.parse
from typing import Any

import strawberry
from strawberry.types.base import StrawberryOptional
from strawberry.types.field import StrawberryField

# Per type: (field, operation, what it is). The HTTP layer serves GET [base]/{Type}/{id}/${operation}.
LINKS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "Claim": (
        ("cms1500Url", "cms1500", "the CMS-1500 (NUCC 02/12) claim form; `?layout=form` prints on the red form"),
        ("superbillUrl", "superbill", "the superbill: practice, patient, insurance, diagnoses, procedures and fees"),
    ),
    "Encounter": (("superbillUrl", "superbill", "the superbill of the Claims whose items name this Encounter"),),
    "Invoice": (("statementUrl", "statement", "the patient statement: charges, payments, balance due, aging"),),
    "Patient": (("statementUrl", "statement", "the statement of the patient's open (issued) Invoices"),),
}


def _resolver(resource_type: str, operation: str) -> Any:
    def resolve(root: Any, info: strawberry.Info) -> str | None:
        id = root.get("id") if isinstance(root, dict) else None
        if not isinstance(id, str) or root.get("__inside__"):  # a contained resource has no document of its own
            return None
        return f"/{resource_type}/{urllib.parse.quote(id, safe='')}/${operation}"

    return resolve


def document_fields(resource_type: str) -> list[tuple[str, object, StrawberryField]]:
    """The link fields of `resource_type` (none for most types)."""
    out: list[tuple[str, object, StrawberryField]] = []
    for name, operation, what in LINKS.get(resource_type, ()):
        description = (
            f"FinGate's link (not a FHIR element) to {what}, as application/pdf: a path on this server, "
            "fetched with the same Authorization header (README 'Documents')."
        )
        resolve = _resolver(resource_type, operation)
        resolve.__annotations__ = {"root": Any, "info": strawberry.Info, "return": StrawberryOptional(str)}
        out.append((name, None, strawberry.field(resolver=resolve, name=name, description=description)))
    return out
