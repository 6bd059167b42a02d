"""Documents people look at, as PDFs: the CMS-1500 claim form, superbills and patient statements."""

from app.documents.cms1500 import BOXES, FORM_LINES, fill_cms1500, render_cms1500
from app.documents.sources import (
    Reader,
    Sources,
    claim_sources,
    encounter_sources,
    invoice_sources,
    patient_sources,
)
from app.documents.statement import render_statement
from app.documents.superbill import render_superbill

__all__ = [
    "BOXES",
    "FORM_LINES",
    "Reader",
    "Sources",
    "claim_sources",
    "encounter_sources",
    "fill_cms1500",
    "invoice_sources",
    "patient_sources",
    "render_cms1500",
    "render_statement",
    "render_superbill",
]
