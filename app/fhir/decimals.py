"""FHIR decimals: the R5 grammar (schema/decimal.json), the range FinGate stores exactly, and plain notation."""

from __future__ import annotations

import json
import re
from decimal import Decimal

from app.fhir.model import SCHEMA_DIR

GRAMMAR = re.compile(json.loads((SCHEMA_DIR / "decimal.json").read_text())["regex"])

# The grammar's own bounds, which a value written in plain notation must keep too ("1e400" is
# grammatical but its plain form is not): an integer part of at most 18 digits, at most 17 decimals.
INTEGER_DIGITS = 18
FRACTION_DIGITS = 17
SIGNIFICANT_DIGITS = 34  # what Decimal128 holds exactly: 18 + 17 digits would be one too many

GRAMMAR_RULE = (
    "a FHIR decimal is ASCII digits with an optional leading '-', an optional '.' with digits on both sides"
    " and an optional exponent ('100.10', '-5', '1.5e3'): no spaces, '+' sign, '_' or leading zeros"
)
RANGE_RULE = (
    f"at most {INTEGER_DIGITS} digits before the decimal point, {FRACTION_DIGITS} after it"
    f" and {SIGNIFICANT_DIGITS} in all"
)


def grammatical(text: str) -> bool:
    """`text` is a decimal in FHIR R5's grammar."""
    return GRAMMAR.fullmatch(text) is not None


def range_problem(value: Decimal | int) -> str | None:
    """Why `value` is outside what FinGate stores (finite, within the grammar's digits, exact in Decimal128), or None."""
    if isinstance(value, int):
        value = Decimal(value)
    if not value.is_finite():
        return f"{value} is not a decimal: only finite numbers are"
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    whole = len(digits) + exponent if any(digits) else 1  # digits before the point in plain notation
    if whole > INTEGER_DIGITS or -exponent > FRACTION_DIGITS or len(digits) > SIGNIFICANT_DIGITS:
        shown = _clip(plain_text(value)) if abs(exponent) < 100 else str(value)
        return f"{shown} is outside the decimal range FinGate stores exactly: {RANGE_RULE}"
    return None


def fraction_digits(value: Decimal | int) -> int:
    """Decimal places as written (`10.50` has 2, `1E+2` none)."""
    if isinstance(value, int):
        return 0
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def plain(value: Decimal) -> Decimal:
    """The same number and decimal places without a positive exponent (`1E+2` -> `100`); other values,
    and those too long for Decimal128 written plainly, unchanged."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or exponent <= 0 or len(digits) + exponent > SIGNIFICANT_DIGITS:
        return value
    if not any(digits):
        return Decimal((sign, (0,), 0))
    return Decimal((sign, digits + (0,) * exponent, 0))


def plain_text(value: Decimal | int) -> str:
    """Plain notation, every written digit kept: `100.10`, `100` (never `1E+2`), `0.00000010` (never `1.0E-7`)."""
    text = str(value)
    return text if "E" not in text else format(value, "f")  # str() is 3x faster and almost always plain


def _clip(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
