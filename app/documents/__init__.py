"""Documents people look at, as PDFs: the CMS-1500 claim form, superbills and patient statements."""

from __future__ import annotations

from datetime import date

from app.documents.sources import (
    Reader,
    Sources,
    claim_sources,
    encounter_sources,
    invoice_sources,
    patient_sources,
)

# The renderers import fpdf2 (with fontTools and numpy: about 0.3 s) when the first document is drawn, not
# when the app is imported: `fingate serve` answers /readyz without them.


def render_cms1500(sources: Sources, layout: str = "plain") -> bytes:
    from app.documents.cms1500 import render_cms1500 as render

    return render(sources, layout)


def render_superbill(sources: Sources) -> bytes:
    from app.documents.superbill import render_superbill as render

    return render(sources)


def render_statement(sources: Sources, as_of: date) -> bytes:
    from app.documents.statement import render_statement as render

    return render(sources, as_of)


__all__ = [
    "Reader",
    "Sources",
    "claim_sources",
    "encounter_sources",
    "invoice_sources",
    "patient_sources",
    "render_cms1500",
    "render_statement",
    "render_superbill",
]
