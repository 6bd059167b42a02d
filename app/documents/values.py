"""FHIR values as a printed document shows them: names, addresses, dates, codes and exact money."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from app.fhir.decimals import plain_text

NPI = "http://hl7.org/fhir/sid/us-npi"
TAX_ID = "urn:oid:2.16.840.1.113883.4.4"  # the US Employer Identification Number (EIN)
SSN = "http://hl7.org/fhir/sid/us-ssn"
DASH = "—"  # printed in a box FinGate has no data for


def first(values: Any) -> Any:
    return values[0] if isinstance(values, list) and values else None


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def human_name(resource: dict[str, Any] | None, *, last_first: bool = True) -> str | None:
    """A Patient's or Practitioner's name (official first), `LAST, FIRST MIDDLE`; an Organization's `name`."""
    if not resource:
        return None
    if isinstance(resource.get("name"), str):
        return text(resource["name"])
    names = [n for n in resource.get("name") or () if isinstance(n, dict)]
    name = next((n for n in names if n.get("use") == "official"), first(names))
    if not name:
        return None
    family = text(name.get("family"))
    given = " ".join(g for g in name.get("given") or () if isinstance(g, str))
    if not family and not given:
        return text(name.get("text"))
    if last_first:
        return ", ".join(p for p in (family, given) if p)
    return " ".join(p for p in (given, family) if p)


def address(resource: dict[str, Any] | None) -> dict[str, str] | None:
    """The first address (`home`/`work` preferred; an Organization's are in `contact`) as street, city, state, zip."""
    if not resource:
        return None
    found = [a for a in resource.get("address") or () if isinstance(a, dict)]
    if isinstance(resource.get("address"), dict):  # Location.address is one Address
        found = [resource["address"]]
    for contact in resource.get("contact") or ():  # R5 Organization: contact.address (ExtendedContactDetail)
        if isinstance(contact, dict) and isinstance(contact.get("address"), dict):
            found.append(contact["address"])
    chosen = next((a for a in found if a.get("use") in ("home", "work")), first(found))
    if not chosen:
        return None
    return {
        "street": ", ".join(line for line in chosen.get("line") or () if isinstance(line, str)),
        "city": chosen.get("city") or "",
        "state": chosen.get("state") or "",
        "zip": chosen.get("postalCode") or "",
    }


def phone(resource: dict[str, Any] | None) -> str | None:
    if not resource:
        return None
    telecoms = list(resource.get("telecom") or ())
    for contact in resource.get("contact") or ():  # Organization.contact.telecom
        if isinstance(contact, dict):
            telecoms.extend(contact.get("telecom") or ())
    return next(
        (t["value"] for t in telecoms if isinstance(t, dict) and t.get("system") == "phone" and text(t.get("value"))),
        None,
    )


def identifier(resource: dict[str, Any] | None, *systems: str) -> str | None:
    """The value of the first identifier in one of `systems`."""
    if not resource:
        return None
    for ident in resource.get("identifier") or ():
        if isinstance(ident, dict) and ident.get("system") in systems and text(ident.get("value")):
            return str(ident["value"])
    return None


def mmddyy(value: Any) -> str | None:
    """A FHIR date or dateTime as the form's `MM DD YY` (a partial date has no such form)."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    return f"{value[5:7]} {value[8:10]} {value[2:4]}"


def day(value: Any) -> str | None:
    return value[:10] if isinstance(value, str) and len(value) >= 10 else text(value)


def coding(concept: Any) -> dict[str, Any] | None:
    if isinstance(concept, dict):
        return first([c for c in concept.get("coding") or () if isinstance(c, dict)])
    return None


def code(concept: Any) -> str | None:
    c = coding(concept)
    return text(c.get("code")) if c else None


def display(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    c = coding(concept)
    return text(concept.get("text")) or (text(c.get("display")) if c else None)


def amount(money: Any) -> Decimal | None:
    value = money.get("value") if isinstance(money, dict) else None
    if isinstance(value, bool):
        return None
    return Decimal(value) if isinstance(value, Decimal | int) else None


def money_text(money: Any, *, currency: bool = True) -> str | None:
    """A Money exactly as stored: its digits in plain notation, then its currency."""
    value = amount(money)
    if value is None:
        return None
    shown = plain_text(value)
    cur = money.get("currency") if currency else None
    return f"{shown} {cur}" if cur else shown


def amounts_text(amounts: Iterable[dict[str, Any]]) -> str:
    """A billing view's amounts (one per currency) as `10.00 USD + 5.00 EUR`; `0` when there are none."""
    parts = [money_text(a) or "" for a in amounts]
    return " + ".join(p for p in parts if p) or "0"


def reference_key(reference: Any) -> str | None:
    ref = reference.get("reference") if isinstance(reference, dict) else None
    return ref if isinstance(ref, str) else None
