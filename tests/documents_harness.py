"""Reading FinGate's PDFs back (pypdf): each page's texts by grid position, and the whole text."""

from __future__ import annotations

import io
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pypdf

from app.documents.cms1500 import BOXES, LEADING, LEFT, LINE_BOXES, PITCH, SERVICE_LINES
from app.documents.values import DASH


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


def rows_of(data: bytes) -> list[list[str]]:
    """Every drawn line of a flowing document (superbill, statement), page after page: its texts left to right
    (texts within 4 pt of a line's baseline are on that line: a cell printed smaller sits a little lower)."""
    out: list[list[str]] = []
    for page in pages(data):
        drawn: list[tuple[float, float, str]] = []

        def visit(text: str, cm: Any, tm: Any, font: Any, size: float, drawn: list[Any] = drawn) -> None:
            if text.strip():
                drawn.append((tm[5] + cm[5], tm[4] + cm[4], text.strip()))

        page.extract_text(visitor_text=visit)
        lines: list[tuple[float, list[tuple[float, str]]]] = []
        for y, x, text in sorted(drawn, key=lambda d: -d[0]):
            if lines and lines[-1][0] - y < 4:
                lines[-1][1].append((x, text))
            else:
                lines.append((y, [(x, text)]))
        out += [[t for _, t in sorted(cells)] for _, cells in lines]
    return out


# -- what each CMS-1500 box must say, worked out from the stored FHIR JSON alone ------------------------------
# Deliberately written apart from app/documents: simple readers of the JSON, one per kind of box, following the
# rules the box table states in words (its `path` and `rule`), so a slip in the form's code shows as a difference.

Json = dict[str, Any]
Resolve = Callable[[Any], "Json | None"]

SOPT_SYSTEMS = ("https://nahdo.org/sopt", "urn:oid:2.16.840.1.113883.3.221.5")
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9_SYSTEM = "http://hl7.org/fhir/sid/icd-9-cm"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
EIN_SYSTEM = "urn:oid:2.16.840.1.113883.4.4"
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"


def _s(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _first_code(concept: Any) -> tuple[str | None, str | None]:
    """(system, code) of a CodeableConcept's first coding."""
    codings = (
        [c for c in (concept or {}).get("coding") or [] if isinstance(c, dict)] if isinstance(concept, dict) else []
    )
    return (codings[0].get("system"), _s(codings[0].get("code"))) if codings else (None, None)


def _date(value: Any) -> str | None:
    """YYYY-MM-DD... as MM DD YY."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    year, month, dd = value[:10].split("-")
    return f"{month} {dd} {year[2:]}"


def _number(value: Any) -> str:
    return format(Decimal(str(value)), "f")


def _person(resource: Json | None) -> str | None:
    """LAST, FIRST MIDDLE of the official name (else the first); an Organization's or Location's name."""
    if not resource:
        return None
    if isinstance(resource.get("name"), str):
        return _s(resource["name"])
    names = [n for n in resource.get("name") or [] if isinstance(n, dict)]
    official = [n for n in names if n.get("use") == "official"]
    if not names:
        return None
    name = (official or names)[0]
    family, given = _s(name.get("family")), " ".join(name.get("given") or [])
    if family and given:
        return f"{family}, {given}"
    return family or given or _s(name.get("text"))


def _addresses(resource: Json | None) -> Json | None:
    if not resource:
        return None
    found = resource.get("address")
    candidates = [found] if isinstance(found, dict) else [a for a in found or [] if isinstance(a, dict)]
    candidates += [c["address"] for c in resource.get("contact") or [] if isinstance(c.get("address"), dict)]
    preferred = [a for a in candidates if a.get("use") in ("home", "work")]
    return next(iter(preferred or candidates), None)


def _street(resource: Json | None) -> str | None:
    found = _addresses(resource)
    return _s(", ".join(found.get("line") or [])) if found else None


def _part(resource: Json | None, key: str) -> str | None:
    found = _addresses(resource)
    return _s(found.get(key)) if found else None


def _city_line(resource: Json | None) -> str | None:
    found = _addresses(resource)
    if not found:
        return None
    return _s(" ".join(p for p in (found.get("city"), found.get("state"), found.get("postalCode")) if p))


def _phone(resource: Json | None) -> str | None:
    if not resource:
        return None
    telecom = list(resource.get("telecom") or [])
    for contact in resource.get("contact") or []:
        telecom += contact.get("telecom") or []
    return next((t["value"] for t in telecom if t.get("system") == "phone" and _s(t.get("value"))), None)


def _id(resource: Json | None, system: str) -> str | None:
    for ident in (resource or {}).get("identifier") or []:
        if ident.get("system") == system and _s(ident.get("value")):
            return str(ident["value"])
    return None


def _sex(resource: Json | None) -> str | None:
    gender = (resource or {}).get("gender")
    return "M" if gender == "male" else "F" if gender == "female" else None


def _class(coverage: Json | None, kind: str) -> Json:
    for entry in (coverage or {}).get("class") or []:
        if _first_code(entry.get("type"))[1] == kind:
            return dict(entry)
    return {}


def _group(coverage: Json | None) -> str | None:
    return _s((_class(coverage, "group").get("value") or {}).get("value"))


def _plan(coverage: Json | None) -> str | None:
    plan = _class(coverage, "plan")
    return _s(plan.get("name")) or _s((plan.get("value") or {}).get("value"))


def _member_id(coverage: Json | None) -> str | None:
    coverage = coverage or {}
    for key in ("subscriberId", "identifier"):
        values = coverage.get(key) or []
        if values and _s(values[0].get("value")):
            return str(values[0]["value"])
    return None


def _info(claim: Json, category: str) -> Json:
    return next((i for i in claim.get("supportingInfo") or [] if _first_code(i.get("category"))[1] == category), {})


def _when(claim: Json, category: str, end: bool = False) -> str | None:
    info = _info(claim, category)
    if isinstance(info.get("timingPeriod"), dict):
        return _date(info["timingPeriod"].get("end" if end else "start"))
    return None if end else _date(info.get("timingDate"))


def _money_digits(money: Any) -> str | None:
    value = money.get("value") if isinstance(money, dict) else None
    return _number(value) if isinstance(value, Decimal | int) and not isinstance(value, bool) else None


class ClaimData:
    """A stored Claim and what it references, resolved by the test (contained `#id` from the Claim)."""

    def __init__(self, claim: Json, resolve: Resolve) -> None:
        self.claim = claim
        self._resolve = resolve
        insurance = [i for i in claim.get("insurance") or [] if isinstance(i, dict)]
        self.insurance = insurance
        self.focal = next((i for i in insurance if i.get("focal")), insurance[0] if insurance else {})
        others = [i for i in insurance if i.get("coverage") != self.focal.get("coverage")]
        self.coverage = self.get(self.focal.get("coverage"))
        self.other = self.get(others[0].get("coverage")) if others else None
        self.patient = self.get(claim.get("patient"))
        self.subscriber = self.get((self.coverage or {}).get("subscriber"))
        self.other_subscriber = self.get((self.other or {}).get("subscriber"))
        self.insurer = self.get(claim.get("insurer") or (self.coverage or {}).get("insurer"))
        provider = self.get(claim.get("provider"))
        if (provider or {}).get("resourceType") == "PractitionerRole":
            provider = self.get(provider.get("organization")) or self.get(provider.get("practitioner"))  # type: ignore[union-attr]
        self.billing = provider
        self.facility = self.get(claim.get("facility"))
        self.diagnoses = sorted(
            [d for d in claim.get("diagnosis") or [] if isinstance(d, dict)],
            key=lambda d: d["sequence"] if isinstance(d.get("sequence"), int) else 0,
        )

    def get(self, reference: Any) -> Json | None:
        if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
            return None
        return self._resolve(reference["reference"])

    def payer_lines(self) -> list[str]:
        name = _person(self.insurer) or _s((self.claim.get("insurer") or {}).get("display"))
        lines = [name] + ([_street(self.insurer), _city_line(self.insurer)] if _addresses(self.insurer) else [])
        return [line for line in lines if line]

    def billing_name(self) -> str | None:
        return _person(self.billing) or _s((self.claim.get("provider") or {}).get("display"))

    def program(self) -> str | None:
        system, value = _first_code((self.coverage or {}).get("type"))
        if system not in SOPT_SYSTEMS or value is None:
            return None
        for prefix, option in (("311", "TRICARE"), ("32", "CHAMPVA"), ("1", "Medicare"), ("2", "Medicaid")):
            if value.startswith(prefix):
                return option
        return "Group" if value[:1] in ("5", "6", "7") else "Other"

    def relationship(self) -> str | None:
        found = _first_code((self.coverage or {}).get("relationship"))[1]
        return None if found is None else {"self": "Self", "spouse": "Spouse", "child": "Child"}.get(found, "Other")

    def accident(self, kind: str) -> str:
        found = _first_code((self.claim.get("accident") or {}).get("type"))[1]
        if kind == "other":
            return "YES" if found is not None and found not in ("WPA", "MVA") else "NO"
        return "YES" if found == kind else "NO"

    def accident_state(self) -> str | None:
        if self.accident("MVA") != "YES":
            return None
        return _s(((self.claim.get("accident") or {}).get("locationAddress") or {}).get("state"))

    def icd(self) -> str | None:
        systems = {_first_code(d.get("diagnosisCodeableConcept"))[0] for d in self.diagnoses}
        return "0" if systems == {ICD10_SYSTEM} else "9" if systems == {ICD9_SYSTEM} else None

    def diagnosis(self, index: int) -> str | None:
        if index >= len(self.diagnoses):
            return None
        return _first_code(self.diagnoses[index].get("diagnosisCodeableConcept"))[1]

    def tax_id(self) -> str | None:
        return _id(self.billing, EIN_SYSTEM) or _id(self.billing, SSN_SYSTEM)

    def tax_kind(self) -> str | None:
        return "EIN" if _id(self.billing, EIN_SYSTEM) else "SSN" if _id(self.billing, SSN_SYSTEM) else None

    def account(self) -> str | None:
        for ident in (self.patient or {}).get("identifier") or []:
            if _first_code(ident.get("type"))[1] == "MR" and _s(ident.get("value")):
                return str(ident["value"])
        return None

    def assignment(self) -> str | None:
        payee = _first_code((self.claim.get("payee") or {}).get("type"))[1]
        return {"provider": "YES", "subscriber": "NO"}.get(payee or "")

    def prior_authorization(self) -> str | None:
        refs = self.focal.get("preAuthRef") or []
        return _s(refs[0]) if refs else None

    def items(self) -> list[Json]:
        return [i for i in self.claim.get("item") or [] if isinstance(i, dict)] or [{}]

    def currency(self) -> str | None:
        total = self.claim.get("total") if isinstance(self.claim.get("total"), dict) else {}
        nets = [i["net"].get("currency") for i in self.items() if isinstance(i.get("net"), dict)]
        return (total or {}).get("currency") or (nets[0] if nets else None)

    def charge(self, item: Json) -> str | None:
        digits = _money_digits(item.get("net"))
        if digits is None:
            return None
        currency = item["net"].get("currency")
        return digits if currency == self.currency() or not currency else f"{digits} {currency}"

    def pointers(self, item: Json) -> str | None:
        sequences = [d.get("sequence") for d in self.diagnoses][:12]
        letters = "".join(
            "ABCDEFGHIJKL"[sequences.index(s)] for s in item.get("diagnosisSequence") or [] if s in sequences
        )
        return letters[:4] or None

    def rendering_npi(self, item: Json) -> str | None:
        sequences = item.get("careTeamSequence") or []
        if not sequences:
            return None
        members = [m for m in self.claim.get("careTeam") or [] if m.get("sequence") == sequences[0]]
        member = self.get(members[-1].get("provider")) if members else None
        if _id(member, NPI_SYSTEM):
            return _id(member, NPI_SYSTEM)
        if (member or {}).get("resourceType") == "PractitionerRole":
            return _id(self.get(member.get("practitioner")), NPI_SYSTEM)  # type: ignore[union-attr]
        return None

    def total(self, items: list[Json]) -> str | None:
        sums: dict[str, Decimal] = {}
        for item in items:
            if _money_digits(item.get("net")) is not None:
                currency = item["net"].get("currency") or ""
                sums[currency] = sums.get(currency, Decimal(0)) + Decimal(str(item["net"]["value"]))
        return " + ".join(f"{_number(v)} {k}".strip() for k, v in sorted(sums.items())) or None


def _nth(values: list[str], n: int) -> str | None:
    return values[n] if n < len(values) else None


def _period(item: Json, end: bool) -> str | None:
    if isinstance(item.get("servicedPeriod"), dict):
        return _date(item["servicedPeriod"].get("end" if end else "start"))
    return _date(item.get("servicedDate"))


def _modifier(item: Json, n: int) -> str | None:
    modifiers = [m for m in item.get("modifier") or [] if isinstance(m, dict)]
    return _first_code(modifiers[n])[1] if n < len(modifiers) else None


# Box -> what it must say (None: the claim has no data for it). Boxes the table marks "not filled" are not here.
HEADER_EXPECTED: dict[str, Callable[[ClaimData], str | None]] = {
    "carrier": lambda d: _nth(d.payer_lines(), 0),
    "carrier street": lambda d: _nth(d.payer_lines(), 1),
    "carrier city": lambda d: _nth(d.payer_lines(), 2),
    "1": ClaimData.program,
    "1a": lambda d: _member_id(d.coverage),
    "2": lambda d: _person(d.patient),
    "3": lambda d: _date((d.patient or {}).get("birthDate")),
    "3 sex": lambda d: _sex(d.patient),
    "4": lambda d: _person(d.subscriber),
    "5": lambda d: _street(d.patient),
    "5 city": lambda d: _part(d.patient, "city"),
    "5 state": lambda d: _part(d.patient, "state"),
    "5 zip": lambda d: _part(d.patient, "postalCode"),
    "5 phone": lambda d: _phone(d.patient),
    "6": ClaimData.relationship,
    "7": lambda d: _street(d.subscriber),
    "7 city": lambda d: _part(d.subscriber, "city"),
    "7 state": lambda d: _part(d.subscriber, "state"),
    "7 zip": lambda d: _part(d.subscriber, "postalCode"),
    "7 phone": lambda d: _phone(d.subscriber),
    "9": lambda d: _person(d.other_subscriber),
    "9a": lambda d: _group(d.other) or _member_id(d.other),
    "9d": lambda d: _plan(d.other),
    "10a": lambda d: d.accident("WPA"),
    "10b": lambda d: d.accident("MVA"),
    "10b state": ClaimData.accident_state,
    "10c": lambda d: d.accident("other"),
    "11": lambda d: _group(d.coverage),
    "11a": lambda d: _date((d.subscriber or {}).get("birthDate")),
    "11a sex": lambda d: _sex(d.subscriber),
    "11c": lambda d: _plan(d.coverage),
    "11d": lambda d: "YES" if len(d.insurance) > 1 else "NO",
    "14": lambda d: _when(d.claim, "onset"),
    "16": lambda d: _when(d.claim, "employmentimpacted"),
    "16 to": lambda d: _when(d.claim, "employmentimpacted", end=True),
    "18": lambda d: _when(d.claim, "hospitalized"),
    "18 to": lambda d: _when(d.claim, "hospitalized", end=True),
    "19": lambda d: _s(_info(d.claim, "info").get("valueString")),
    "21 ind": ClaimData.icd,
    **{f"21{letter}": (lambda d, i=i: d.diagnosis(i)) for i, letter in enumerate("ABCDEFGHIJKL")},
    "23": ClaimData.prior_authorization,
    "25": ClaimData.tax_id,
    "25 kind": ClaimData.tax_kind,
    "26": ClaimData.account,
    "27": ClaimData.assignment,
    "29": lambda d: _money_digits(d.claim.get("patientPaid")),
    "31 date": lambda d: _date(d.claim.get("created")),
    "32": lambda d: _s((d.facility or {}).get("name")),
    "32 street": lambda d: _street(d.facility),
    "32 city": lambda d: _city_line(d.facility),
    "32a": lambda d: _id(d.facility, NPI_SYSTEM),
    "33": ClaimData.billing_name,
    "33 phone": lambda d: _phone(d.billing),
    "33 street": lambda d: _street(d.billing),
    "33 city": lambda d: _city_line(d.billing),
    "33a": lambda d: _id(d.billing, NPI_SYSTEM),
}
LINE_EXPECTED: dict[str, Callable[[ClaimData, Json], str | None]] = {
    "24A from": lambda d, i: _period(i, False),
    "24A to": lambda d, i: _period(i, True),
    "24B": lambda d, i: _first_code(i.get("locationCodeableConcept"))[1],
    "24D": lambda d, i: _first_code(i.get("productOrService"))[1],
    **{f"24D modifier {n + 1}": (lambda d, i, n=n: _modifier(i, n)) for n in range(4)},
    "24E": ClaimData.pointers,
    "24F": ClaimData.charge,
    "24G": lambda d, i: _number(i["quantity"]["value"]) if _money_digits(i.get("quantity")) else "1",
    "24J": ClaimData.rendering_npi,
}


def unfillable(rule: str) -> bool:
    return rule.startswith("not filled: ")


def expected_form(data: ClaimData) -> list[tuple[dict[tuple[int, int], str], list[str]]]:
    """Each page's grid (position -> text) and its missing boxes, from the box table's places and the oracle's values."""
    items = data.items()
    out = []
    for start in range(0, len(items), len(SERVICE_LINES)):
        grid: dict[tuple[int, int], str] = {}
        missing: list[str] = []
        page_items = items[start : start + len(SERVICE_LINES)]

        def put(
            name: str,
            line: int,
            column: int,
            width: int,
            value: str | None,
            box: Any,
            grid: dict[tuple[int, int], str] = grid,
            missing: list[str] = missing,
        ) -> None:
            if value is None:
                if box.required:
                    missing.append(name)
                    grid[(line, column)] = DASH
            elif getattr(box, "options", None):
                if value in box.options:
                    grid[(line, box.options[value])] = "X"
            else:
                uncut = getattr(box, "money", False) or name == "28" or name.startswith("24F")  # money: exact, whole
                grid[(line, column)] = (value if uncut else value[:width]).strip()

        for box in BOXES:
            if box.box == "28":
                put("28", box.line, box.column, box.width, data.total(page_items), box)
            elif not unfillable(box.rule):
                put(box.box, box.line, box.column, box.width, HEADER_EXPECTED[box.box](data), box)
        for n, item in enumerate(page_items):
            for col in LINE_BOXES:
                if not unfillable(col.rule):
                    value = LINE_EXPECTED[col.box](data, item)
                    put(f"{col.box} line {n + 1}", SERVICE_LINES[n], col.column, col.width, value, col)
        out.append((grid, missing))
    return out


def missing_listed(page_text: str) -> list[str]:
    """The boxes a page's foot note lists as missing (the note may wrap over lines)."""
    if "Missing (—): " not in page_text:
        return []
    listed = page_text.split("Missing (—): ", 1)[1].split("Not readable", 1)[0]
    return [b.strip() for b in " ".join(listed.split()).split(", ") if b.strip()]
