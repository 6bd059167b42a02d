"""Renders the R4 -> R5 mapping table as Markdown for the README: every row that is not a plain copy, from the data."""

from __future__ import annotations

from app.payers.mapping import COPY, ROWS, TYPES


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def describe_mapping() -> str:
    """What the payer import changes or drops of R4's Patient, Coverage and ExplanationOfBenefit (deterministic)."""
    copied = {t: sum(1 for r in ROWS if r.rule == COPY and r.r4.split(".")[0] == t) for t in TYPES}
    total = {t: sum(1 for r in ROWS if r.r4.split(".")[0] == t) for t in TYPES}
    counts = ", ".join(f"{t} {copied[t]} of {total[t]}" for t in TYPES)
    out = [
        f"The table has a row for each of the {len(ROWS)} element paths of R4's Patient, Coverage and "
        f"ExplanationOfBenefit (`app/payers/mapping.py`). {counts} are copied as they are (same path, same JSON; "
        "a contentReference element's children follow the rows of the element it names). The others:",
        "",
        "| R4 element | R5 element | rule | what and why |",
        "|---|---|---|---|",
    ]
    for row in ROWS:
        if row.rule == COPY:
            continue
        r5 = f"`{row.r5}`" if row.r5 else "—"
        codes = ""
        if row.codes:
            codes = " (" + ", ".join(f"`{a}` → `{b}`" for a, b in row.codes.items()) + ")"
        out.append(f"| `{row.r4}` | {r5} | {row.rule} | {_cell(row.note)}{codes} |")
    return "\n".join(out) + "\n"
