"""The CMS-1500 box table as README markdown (between the markers below; a test keeps the README in step)."""

from __future__ import annotations

from app.documents.cms1500 import BOXES, LINE_BOXES, SERVICE_LINES

BEGIN = "<!-- generated from app/documents by describe_cms1500(); a test keeps it in step -->"
END = "<!-- end of generated CMS-1500 table -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "—"


def describe_cms1500() -> str:
    """Every box: where it is printed (line, column, width on the 10 cpi / 6 lpi grid), its FHIR source, the rule."""
    rows = [
        "| box | label | line | column | width | from | rule |",
        "|---|---|---|---|---|---|---|",
    ]
    for box in BOXES:
        where = ", ".join(f"{o} at {c}" for o, c in box.options.items()) if box.options else str(box.column)
        rule = box.rule or ("as stored" if box.fill is not None or box.box == "28" else "")
        if box.required:
            rule += " (required: “—” when absent)"
        rows.append(
            f"| {box.box} | {_cell(box.label)} | {box.line} | {where} | {box.width} | {_cell(box.path)} | {_cell(rule.strip())} |"
        )
    lines = ", ".join(str(line) for line in SERVICE_LINES)
    for col in LINE_BOXES:
        rule = col.rule or "as stored"
        if col.required:
            rule += " (required: “—” when absent)"
        rows.append(
            f"| {col.box} | {_cell(col.label)} | {lines} | {col.column} | {col.width} | {_cell(col.path)} | {_cell(rule.strip())} |"
        )
    return "\n".join(rows) + "\n"
