"""Reading FinGate's PDFs back (pypdf): each page's texts by grid position, and the whole text."""

from __future__ import annotations

import io
from typing import Any

import pypdf

from app.documents.cms1500 import BOXES, LEADING, LEFT, LINE_BOXES, PITCH, SERVICE_LINES


def pages(data: bytes) -> list[pypdf.PageObject]:
    assert data.startswith(b"%PDF-"), data[:40]
    return list(pypdf.PdfReader(io.BytesIO(data)).pages)


def texts(data: bytes) -> list[str]:
    return [page.extract_text() for page in pages(data)]


def by_position(page: pypdf.PageObject) -> dict[tuple[int, int], str]:
    """Every text drawn on the form's grid, keyed by (line, column) worked back from its PDF coordinates."""
    found: dict[tuple[int, int], str] = {}

    def visit(text: str, cm: Any, tm: Any, font: Any, size: float) -> None:
        if not text.strip():
            return
        x, y = tm[4] + cm[4], tm[5] + cm[5]
        column = (x - LEFT) / PITCH + 1
        line = (792 - y + 3) / LEADING
        if abs(column - round(column)) < 0.01 and abs(line - round(line)) < 0.01:
            found[(round(line), round(column))] = text.strip()

    page.extract_text(visitor_text=visit)
    return found


def position(box: str) -> tuple[int, int]:
    """Where a box's text starts: `24D line 2` is the second service line's CPT column."""
    if " line " in box:
        name, n = box.rsplit(" line ", 1)
        column = next(b.column for b in LINE_BOXES if b.box == name)
        return SERVICE_LINES[int(n) - 1], column
    found = next(b for b in BOXES if b.box == box)
    return found.line, found.column


def check_box(box: str, option: str) -> tuple[int, int]:
    found = next(b for b in BOXES if b.box == box)
    return found.line, found.options[option]
