"""The CMS-1500 (NUCC 02/12) professional claim form: box → FHIR path → rule, placed on the form's 10-pitch grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.billing.sums import add
from app.documents.pdf import MONO, SANS, Document
from app.documents.sources import Sources
from app.documents.values import (
    DASH,
    NPI,
    SSN,
    TAX_ID,
    address,
    amount,
    code,
    coding,
    first,
    human_name,
    identifier,
    mmddyy,
    money_text,
    phone,
    text,
)
from app.fhir.decimals import plain_text

# The form is a character grid: 10 characters per inch, 6 lines per inch on 8.5 x 11 in (NUCC 1500 Claim
# Form Reference Instruction Manual, 02/12, "Print specifications"). Line 1 is the top line of the sheet.
FORM_LINES = 66
FORM_COLUMNS = 80  # the grid's columns, from LEFT
PITCH = 7.2  # points per column (10 cpi)
LEADING = 12.0  # points per line (6 lpi)
LEFT = 18.0  # column 1 starts a quarter inch in (printers do not print at the sheet's edge)
# DejaVu Sans Mono advances 1233/2048 em per character: at this size a character is one column wide.
GRID_FONT_SIZE = PITCH * 2048 / 1233
SERVICE_LINES = (46, 48, 50, 52, 54, 56)  # the unshaded part of box 24's six service lines
DIAGNOSIS_LETTERS = "ABCDEFGHIJKL"

Fill = Callable[["Claim1500"], str | None]


@dataclass(frozen=True)
class Box:
    """One box (or part of one) of the form: where its text goes and how FinGate fills it."""

    box: str  # NUCC's box number, with the part (`5 city`)
    label: str
    path: str  # the FHIR data it comes from
    rule: str  # how, in words (the README prints it)
    line: int
    column: int
    width: int
    fill: Fill | None = None  # None: FinGate cannot fill it (`rule` says why)
    required: bool = False  # a claim without it gets "—" in the box and a note
    options: dict[str, int] = field(default_factory=dict)  # a check box: option -> column of its X
    money: bool = False  # printed whole, never cut at the box's width


@dataclass(frozen=True)
class LineBox:
    """One column of box 24's service lines, filled from one Claim.item."""

    box: str
    label: str
    path: str
    rule: str
    column: int
    width: int
    fill: Callable[[Claim1500, dict[str, Any]], str | None] | None
    required: bool = False


@dataclass
class Claim1500:
    """A Claim and what it references, with the readers the table's rules use."""

    sources: Sources

    @property
    def claim(self) -> dict[str, Any]:
        return self.sources.main

    def role(self, name: str) -> dict[str, Any]:
        return self.sources.get(name) or {}

    @property
    def billing_provider(self) -> dict[str, Any]:
        """The Claim's provider; a PractitionerRole bills as its Organization (else its Practitioner)."""
        provider = self.role("provider")
        if provider.get("resourceType") == "PractitionerRole":
            return self.role("provider/organization") or self.role("provider/practitioner")
        return provider

    def rendering(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """The care team member the item's first careTeamSequence names, then a PractitionerRole's Practitioner."""
        sequence = first(item.get("careTeamSequence"))
        if sequence is None:
            return []
        return [self.role(f"careTeam/{sequence}"), self.role(f"careTeam/{sequence}/practitioner")]

    def supporting(self, category: str) -> dict[str, Any]:
        for info in self.claim.get("supportingInfo") or ():
            if isinstance(info, dict) and code(info.get("category")) == category:
                return info
        return {}

    def coverage_class(self, kind: str, coverage: str = "coverage") -> dict[str, Any]:
        for c in self.role(coverage).get("class") or ():
            if isinstance(c, dict) and code(c.get("type")) == kind:
                return c
        return {}

    def focal_insurance(self) -> dict[str, Any]:
        insurance = [i for i in self.claim.get("insurance") or () if isinstance(i, dict)]
        return next((i for i in insurance if i.get("focal")), first(insurance)) or {}

    def diagnoses(self) -> list[dict[str, Any]]:
        found = [d for d in self.claim.get("diagnosis") or () if isinstance(d, dict)]
        return sorted(found, key=_sequence)


def _sequence(entry: dict[str, Any]) -> int:
    value = entry.get("sequence")
    return value if isinstance(value, int) else 0


# -- the rules' small readers ---------------------------------------------------------------------------------


def _addr(c: Claim1500, role: str, part: str) -> str | None:
    found = address(c.role(role))
    return text(found[part]) if found else None


def _billing_addr(c: Claim1500, part: str) -> str | None:
    found = address(c.billing_provider)
    return text(found[part]) if found else None


def _city_state_zip(found: dict[str, str] | None) -> str | None:
    if not found:
        return None
    return text(" ".join(p for p in (found["city"], found["state"], found["zip"]) if p))


def _sex(resource: dict[str, Any]) -> str | None:
    return {"male": "M", "female": "F"}.get(str(resource.get("gender")))


def insured_id(c: Claim1500, role: str = "coverage") -> str | None:
    coverage = c.role(role)
    subscriber_id = first(coverage.get("subscriberId"))  # R5: 0..* Identifier
    if isinstance(subscriber_id, dict) and text(subscriber_id.get("value")):
        return str(subscriber_id["value"])
    ident = first(coverage.get("identifier"))
    return text(ident.get("value")) if isinstance(ident, dict) else None


# Source of Payment Typology (PHDSC) codes on Coverage.type -> the box 1 check box.
PAYMENT_TYPOLOGY = "https://nahdo.org/sopt"
_BOX1_BY_TYPOLOGY = (("311", "TRICARE"), ("32", "CHAMPVA"), ("1", "Medicare"), ("2", "Medicaid"))
_BOX1_GROUP = ("5", "6", "7")  # private, Blue Cross/Blue Shield, managed care: a group health plan


def _program(c: Claim1500) -> str | None:
    found = coding(c.role("coverage").get("type"))
    if not found or found.get("system") not in (PAYMENT_TYPOLOGY, "urn:oid:2.16.840.1.113883.3.221.5"):
        return None
    value = str(found.get("code") or "")
    for prefix, option in _BOX1_BY_TYPOLOGY:
        if value.startswith(prefix):
            return option
    return "Group" if value.startswith(_BOX1_GROUP) else "Other"


_RELATIONSHIP = {"self": "Self", "spouse": "Spouse", "child": "Child"}


def _relationship(c: Claim1500) -> str | None:
    found = code(c.role("coverage").get("relationship"))
    return None if found is None else _RELATIONSHIP.get(found, "Other")


def _accident(c: Claim1500, kind: str) -> str | None:
    """10a–c: YES when Claim.accident.type is that kind (WPA work, MVA auto, any other: other), else NO."""
    accident = c.claim.get("accident")
    found = code(accident.get("type")) if isinstance(accident, dict) else None
    if kind == "other":
        return "YES" if found is not None and found not in ("WPA", "MVA") else "NO"
    return "YES" if found == kind else "NO"


def _accident_state(c: Claim1500) -> str | None:
    accident = c.claim.get("accident")
    if _accident(c, "MVA") != "YES" or not isinstance(accident, dict):
        return None
    place = accident.get("locationAddress")
    return text(place.get("state")) if isinstance(place, dict) else None


def _other_insurance(c: Claim1500) -> str:
    insurance = [i for i in c.claim.get("insurance") or () if isinstance(i, dict)]
    return "YES" if len(insurance) > 1 else "NO"


def _icd_indicator(c: Claim1500) -> str | None:
    systems = {(coding(d.get("diagnosisCodeableConcept")) or {}).get("system") for d in c.diagnoses()}
    if systems == {"http://hl7.org/fhir/sid/icd-10-cm"}:
        return "0"
    if systems == {"http://hl7.org/fhir/sid/icd-9-cm"}:
        return "9"
    return None


def _diagnosis(index: int) -> Fill:
    def fill(c: Claim1500) -> str | None:
        found = c.diagnoses()
        return code(found[index].get("diagnosisCodeableConcept")) if index < len(found) else None

    return fill


def _timing(c: Claim1500, category: str, end: bool = False) -> str | None:
    info = c.supporting(category)
    period = info.get("timingPeriod")
    if isinstance(period, dict):
        return mmddyy(period.get("end" if end else "start"))
    return None if end else mmddyy(info.get("timingDate"))


def _tax_id(c: Claim1500) -> str | None:
    """The EIN when the billing provider has one, else its SSN: the kind `25 kind` checks (in whatever order listed)."""
    return identifier(c.billing_provider, TAX_ID) or identifier(c.billing_provider, SSN)


def _tax_kind(c: Claim1500) -> str | None:
    provider = c.billing_provider
    if identifier(provider, TAX_ID):
        return "EIN"
    return "SSN" if identifier(provider, SSN) else None


def _account_number(c: Claim1500) -> str | None:
    for ident in c.role("patient").get("identifier") or ():
        if isinstance(ident, dict) and code(ident.get("type")) == "MR" and text(ident.get("value")):
            return str(ident["value"])
    return None


def _assignment(c: Claim1500) -> str | None:
    payee = c.claim.get("payee")
    found = code(payee.get("type")) if isinstance(payee, dict) else None
    return {"provider": "YES", "subscriber": "NO"}.get(str(found))


def plan_name(c: Claim1500, coverage: str = "coverage") -> str | None:
    plan = c.coverage_class("plan", coverage)
    return text(plan.get("name")) or (text((plan.get("value") or {}).get("value")) if plan else None)


def group_number(c: Claim1500, coverage: str = "coverage") -> str | None:
    group = c.coverage_class("group", coverage)
    value = group.get("value") if group else None
    return text(value.get("value")) if isinstance(value, dict) else None


def _prior_authorization(c: Claim1500) -> str | None:
    found = first(c.focal_insurance().get("preAuthRef"))
    return text(found)


def _additional(c: Claim1500) -> str | None:
    info = c.supporting("info")
    return text(info.get("valueString"))


def _payer_line(index: int) -> Fill:
    def fill(c: Claim1500) -> str | None:
        payer = c.role("insurer")
        found = address(payer)
        lines = [human_name(payer) or text((c.claim.get("insurer") or {}).get("display"))]
        if found:
            lines += [text(found["street"]), _city_state_zip(found)]
        lines = [line for line in lines if line]
        return lines[index] if index < len(lines) else None

    return fill


def _facility_line(index: int) -> Fill:
    def fill(c: Claim1500) -> str | None:
        facility = c.role("facility")
        found = address(facility)
        lines = [text(facility.get("name")), text(found["street"]) if found else None, _city_state_zip(found)]
        return lines[index]

    return fill


def _billing_line(index: int) -> Fill:
    def fill(c: Claim1500) -> str | None:
        provider = c.billing_provider
        found = address(provider)
        name = human_name(provider) or text((c.claim.get("provider") or {}).get("display"))
        lines = [name, text(found["street"]) if found else None, _city_state_zip(found)]
        return lines[index]

    return fill


def _patient_paid(c: Claim1500) -> str | None:
    return money_text(c.claim.get("patientPaid"), currency=False)


def _signed_on(c: Claim1500) -> str | None:
    return mmddyy(c.claim.get("created"))


def _unfilled(why: str) -> str:
    return f"not filled: {why}"


_NO_ELEMENT = "R5 Claim has no element for it"
_RESERVED = "reserved for NUCC use"
_SIGNATURE = "a signature (or 'signature on file') is not recorded in R5; sign the printed form"

# fmt: off
BOXES: tuple[Box, ...] = (
    Box("carrier", "PAYER NAME", "Claim.insurer → Organization.name", "the insurer's name (else the reference's display)", 3, 50, 30, _payer_line(0), required=True),
    Box("carrier street", "PAYER ADDRESS", "Organization.address.line", "the insurer's first address", 4, 50, 30, _payer_line(1)),
    Box("carrier city", "PAYER CITY STATE ZIP", "Organization.address.city, state, postalCode", "", 5, 50, 30, _payer_line(2)),
    Box("1", "INSURANCE TYPE", "Claim.insurance (focal) → Coverage.type", f"X on the program a Source of Payment Typology code ({PAYMENT_TYPOLOGY}) names: 1 Medicare, 2 Medicaid, 311 TRICARE, 32 CHAMPVA, 5/6/7 group health plan, others Other", 8, 1, 49, _program, required=True, options={"Medicare": 2, "Medicaid": 9, "TRICARE": 16, "CHAMPVA": 25, "Group": 32, "FECA": 40, "Other": 46}),
    Box("1a", "INSURED'S I.D. NUMBER", "Coverage.subscriberId", "the first subscriberId, else Coverage.identifier", 8, 50, 29, insured_id, required=True),
    Box("2", "PATIENT'S NAME", "Claim.patient → Patient.name", "official name, else the first: LAST, FIRST MIDDLE", 10, 1, 29, lambda c: human_name(c.role("patient")), required=True),
    Box("3", "PATIENT'S BIRTH DATE", "Patient.birthDate", "MM DD YY", 10, 31, 8, lambda c: mmddyy(c.role("patient").get("birthDate")), required=True),
    Box("3 sex", "SEX", "Patient.gender", "male M, female F; other genders have no box", 10, 40, 9, lambda c: _sex(c.role("patient")), required=True, options={"M": 42, "F": 47}),
    Box("4", "INSURED'S NAME", "Coverage.subscriber → Patient/RelatedPerson.name", "as box 2", 10, 50, 29, lambda c: human_name(c.role("subscriber")), required=True),
    Box("5", "PATIENT'S ADDRESS", "Patient.address.line", "home address, else the first", 12, 1, 29, lambda c: _addr(c, "patient", "street"), required=True),
    Box("5 city", "CITY", "Patient.address.city", "", 14, 1, 25, lambda c: _addr(c, "patient", "city"), required=True),
    Box("5 state", "STATE", "Patient.address.state", "", 14, 27, 3, lambda c: _addr(c, "patient", "state"), required=True),
    Box("5 zip", "ZIP CODE", "Patient.address.postalCode", "", 16, 1, 12, lambda c: _addr(c, "patient", "zip"), required=True),
    Box("5 phone", "TELEPHONE", "Patient.telecom (phone)", "the first phone", 16, 15, 15, lambda c: phone(c.role("patient"))),
    Box("6", "PATIENT RELATIONSHIP TO INSURED", "Coverage.relationship", "self, spouse, child; any other code: Other", 12, 31, 18, _relationship, required=True, options={"Self": 33, "Spouse": 38, "Child": 43, "Other": 47}),
    Box("7", "INSURED'S ADDRESS", "Coverage.subscriber → address.line", "as box 5", 12, 50, 29, lambda c: _addr(c, "subscriber", "street")),
    Box("7 city", "CITY", "subscriber address.city", "", 14, 50, 23, lambda c: _addr(c, "subscriber", "city")),
    Box("7 state", "STATE", "subscriber address.state", "", 14, 75, 3, lambda c: _addr(c, "subscriber", "state")),
    Box("7 zip", "ZIP CODE", "subscriber address.postalCode", "", 16, 50, 12, lambda c: _addr(c, "subscriber", "zip")),
    Box("7 phone", "TELEPHONE", "subscriber telecom (phone)", "", 16, 64, 15, lambda c: phone(c.role("subscriber"))),
    Box("8", "RESERVED FOR NUCC USE", "—", _unfilled(_RESERVED), 14, 31, 18),
    Box("9", "OTHER INSURED'S NAME", "Claim.insurance (the first after the focal one) → Coverage.subscriber.name", "as box 2", 18, 1, 29, lambda c: human_name(c.role("otherCoverage/subscriber"))),
    Box("9a", "OTHER INSURED'S POLICY OR GROUP NUMBER", "that Coverage.class (type group).value", "else its first subscriberId", 20, 1, 29, lambda c: group_number(c, "otherCoverage") or insured_id(c, "otherCoverage")),
    Box("9b", "RESERVED FOR NUCC USE", "—", _unfilled(_RESERVED), 22, 1, 29),
    Box("9c", "RESERVED FOR NUCC USE", "—", _unfilled(_RESERVED), 24, 1, 29),
    Box("9d", "INSURANCE PLAN NAME OR PROGRAM NAME", "that Coverage.class (type plan).name", "its name, else its value", 26, 1, 29, lambda c: plan_name(c, "otherCoverage")),
    Box("10a", "EMPLOYMENT? (CURRENT OR PREVIOUS)", "Claim.accident.type", "YES when the accident type is WPA (workplace), else NO", 20, 31, 18, lambda c: _accident(c, "WPA"), options={"YES": 35, "NO": 41}),
    Box("10b", "AUTO ACCIDENT?", "Claim.accident.type", "YES when the accident type is MVA (motor vehicle), else NO", 22, 31, 12, lambda c: _accident(c, "MVA"), options={"YES": 35, "NO": 41}),
    Box("10b state", "PLACE (State)", "Claim.accident.locationAddress.state", "for an auto accident", 22, 45, 3, _accident_state),
    Box("10c", "OTHER ACCIDENT?", "Claim.accident.type", "YES for any other accident type, else NO", 24, 31, 18, lambda c: _accident(c, "other"), options={"YES": 35, "NO": 41}),
    Box("10d", "CLAIM CODES (Designated by NUCC)", "—", _unfilled("NUCC condition codes are not an R5 Claim element"), 26, 31, 18),
    Box("11", "INSURED'S POLICY GROUP OR FECA NUMBER", "Coverage.class (type group).value", "", 18, 50, 29, group_number),
    Box("11a", "INSURED'S DATE OF BIRTH", "subscriber birthDate", "MM DD YY", 20, 53, 8, lambda c: mmddyy(c.role("subscriber").get("birthDate"))),
    Box("11a sex", "SEX", "subscriber gender", "as box 3", 20, 66, 13, lambda c: _sex(c.role("subscriber")), options={"M": 68, "F": 75}),
    Box("11b", "OTHER CLAIM ID", "—", _unfilled("a property and casualty claim number; " + _NO_ELEMENT), 22, 50, 29),
    Box("11c", "INSURANCE PLAN NAME OR PROGRAM NAME", "Coverage.class (type plan).name", "its name, else its value", 24, 50, 29, plan_name),
    Box("11d", "IS THERE ANOTHER HEALTH BENEFIT PLAN?", "Claim.insurance", "YES when the Claim lists more than one insurance", 26, 50, 29, _other_insurance, options={"YES": 52, "NO": 57}),
    Box("12", "PATIENT'S OR AUTHORIZED PERSON'S SIGNATURE", "—", _unfilled(_SIGNATURE), 30, 6, 26),
    Box("13", "INSURED'S OR AUTHORIZED PERSON'S SIGNATURE", "—", _unfilled(_SIGNATURE), 30, 56, 23),
    Box("14", "DATE OF CURRENT ILLNESS, INJURY, OR PREGNANCY", "Claim.supportingInfo (category onset).timing", "MM DD YY", 32, 2, 8, lambda c: _timing(c, "onset")),
    Box("15", "OTHER DATE", "—", _unfilled(_NO_ELEMENT), 32, 37, 12),
    Box("16", "DATES PATIENT UNABLE TO WORK", "Claim.supportingInfo (category employmentimpacted).timingPeriod.start", "MM DD YY", 32, 54, 8, lambda c: _timing(c, "employmentimpacted")),
    Box("16 to", "TO", "... .timingPeriod.end", "MM DD YY", 32, 68, 8, lambda c: _timing(c, "employmentimpacted", end=True)),
    Box("17", "NAME OF REFERRING PROVIDER OR OTHER SOURCE", "Claim.referral", _unfilled("Claim.referral is a ServiceRequest, which FinGate does not serve"), 34, 1, 26),
    Box("17b", "NPI", "—", _unfilled("as box 17"), 34, 34, 11),
    Box("18", "HOSPITALIZATION DATES", "Claim.supportingInfo (category hospitalized).timingPeriod.start", "MM DD YY", 34, 54, 8, lambda c: _timing(c, "hospitalized")),
    Box("18 to", "TO", "... .timingPeriod.end", "MM DD YY", 34, 68, 8, lambda c: _timing(c, "hospitalized", end=True)),
    Box("19", "ADDITIONAL CLAIM INFORMATION", "Claim.supportingInfo (category info).valueString", "", 36, 1, 48, _additional),
    Box("20", "OUTSIDE LAB?", "—", _unfilled(_NO_ELEMENT), 36, 52, 27),
    Box("21 ind", "ICD IND.", "Claim.diagnosis.diagnosisCodeableConcept.coding.system", "0 when every diagnosis is ICD-10-CM, 9 when ICD-9-CM", 38, 37, 1, _icd_indicator, required=True),
    *(
        Box(
            f"21{letter}",
            f"DIAGNOSIS {letter}",
            f"Claim.diagnosis[{i}] (by sequence).diagnosisCodeableConcept.coding.code",
            "the code as stored",
            38 + i // 4,
            3 + 13 * (i % 4),
            8,
            _diagnosis(i),
            required=(i == 0),
        )
        for i, letter in enumerate(DIAGNOSIS_LETTERS)
    ),
    Box("22", "RESUBMISSION CODE / ORIGINAL REF. NO.", "—", _unfilled("a frequency code (7 replace, 8 void) is not an R5 element; Claim.related does not say which"), 38, 50, 29),
    Box("23", "PRIOR AUTHORIZATION NUMBER", "Claim.insurance (focal).preAuthRef", "the first", 40, 50, 29, _prior_authorization),
    Box("25", "FEDERAL TAX I.D. NUMBER", "billing provider identifier (EIN urn:oid:2.16.840.1.113883.4.4, else SSN)", "", 58, 1, 15, _tax_id, required=True),
    Box("25 kind", "SSN EIN", "the identifier's system", "X on EIN or SSN", 58, 16, 5, _tax_kind, options={"SSN": 17, "EIN": 19}),
    Box("26", "PATIENT'S ACCOUNT NO.", "Patient.identifier (type MR)", "the medical record number", 58, 23, 14, _account_number),
    Box("27", "ACCEPT ASSIGNMENT?", "Claim.payee.type", "provider: YES, subscriber: NO", 58, 37, 12, _assignment, options={"YES": 37, "NO": 42}),
    Box("28", "TOTAL CHARGE", "Σ Claim.item.net on the page", "exact, with the currency", 58, 51, 12, None, required=True),
    Box("29", "AMOUNT PAID", "Claim.patientPaid", "exact, as stored", 58, 64, 9, _patient_paid, money=True),
    Box("30", "RSVD FOR NUCC USE", "—", _unfilled(_RESERVED), 58, 74, 6),
    Box("31", "SIGNATURE OF PHYSICIAN OR SUPPLIER", "—", _unfilled(_SIGNATURE), 61, 1, 20),
    Box("31 date", "DATE", "Claim.created", "MM DD YY", 63, 12, 8, _signed_on),
    Box("32", "SERVICE FACILITY LOCATION INFORMATION", "Claim.facility → Location.name", "", 60, 23, 26, _facility_line(0)),
    Box("32 street", "", "Location.address.line", "", 61, 23, 26, _facility_line(1)),
    Box("32 city", "", "Location.address.city, state, postalCode", "", 62, 23, 26, _facility_line(2)),
    Box("32a", "NPI", "Location.identifier (us-npi)", "", 63, 23, 10, lambda c: identifier(c.role("facility"), NPI)),
    Box("33", "BILLING PROVIDER INFO & PH #", "Claim.provider → Organization, Practitioner or PractitionerRole (its organization)", "name", 60, 50, 29, _billing_line(0), required=True),
    Box("33 phone", "PH #", "billing provider telecom (phone)", "", 59, 66, 14, lambda c: phone(c.billing_provider)),
    Box("33 street", "", "billing provider address.line", "", 61, 50, 29, _billing_line(1), required=True),
    Box("33 city", "", "billing provider address.city, state, postalCode", "", 62, 50, 29, _billing_line(2), required=True),
    Box("33a", "NPI", "billing provider identifier (us-npi)", "", 63, 51, 10, lambda c: identifier(c.billing_provider, NPI), required=True),
    Box("33b", "OTHER ID", "—", _unfilled("payer-assigned ids have no agreed identifier system"), 63, 62, 17),
)
# fmt: on


def _line_dates(item: dict[str, Any], end: bool) -> str | None:
    period = item.get("servicedPeriod")
    if isinstance(period, dict):
        return mmddyy(period.get("end" if end else "start"))
    return mmddyy(item.get("servicedDate"))


def _modifier(index: int) -> Callable[[Claim1500, dict[str, Any]], str | None]:
    def fill(c: Claim1500, item: dict[str, Any]) -> str | None:
        found = [m for m in item.get("modifier") or () if isinstance(m, dict)]
        return code(found[index]) if index < len(found) else None

    return fill


def _pointers(c: Claim1500, item: dict[str, Any]) -> str | None:
    sequences = [d.get("sequence") for d in c.diagnoses()]
    letters = [
        DIAGNOSIS_LETTERS[sequences.index(s)]
        for s in item.get("diagnosisSequence") or ()
        if s in sequences and sequences.index(s) < len(DIAGNOSIS_LETTERS)
    ]
    return "".join(letters[:4]) or None


def _units(c: Claim1500, item: dict[str, Any]) -> str:
    value = amount(item.get("quantity"))
    return plain_text(value) if value is not None else "1"


def _rendering_npi(c: Claim1500, item: dict[str, Any]) -> str | None:
    return next((npi for member in c.rendering(item) if (npi := identifier(member, NPI))), None)


# fmt: off
LINE_BOXES: tuple[LineBox, ...] = (
    LineBox("24A from", "DATE(S) OF SERVICE From", "Claim.item.servicedDate or servicedPeriod.start", "MM DD YY", 1, 8, lambda c, i: _line_dates(i, False), required=True),
    LineBox("24A to", "To", "Claim.item.servicedDate or servicedPeriod.end", "MM DD YY", 10, 8, lambda c, i: _line_dates(i, True), required=True),
    LineBox("24B", "PLACE OF SERVICE", "Claim.item.locationCodeableConcept.coding.code", "the CMS place of service code as stored", 19, 2, lambda c, i: code(i.get("locationCodeableConcept")), required=True),
    LineBox("24C", "EMG", "—", _unfilled(_NO_ELEMENT), 22, 2, None),
    LineBox("24D", "CPT/HCPCS", "Claim.item.productOrService.coding.code", "the code as stored", 25, 6, lambda c, i: code(i.get("productOrService")), required=True),
    *(LineBox(f"24D modifier {n + 1}", "MODIFIER", f"Claim.item.modifier[{n}].coding.code", "", 32 + 3 * n, 2, _modifier(n)) for n in range(4)),
    LineBox("24E", "DIAGNOSIS POINTER", "Claim.item.diagnosisSequence", "the letters of box 21 the sequences name", 45, 4, _pointers),
    LineBox("24F", "$ CHARGES", "Claim.item.net", "exact, as stored (the currency is box 28's unless printed)", 50, 9, None, required=True),
    LineBox("24G", "DAYS OR UNITS", "Claim.item.quantity.value", "as stored; 1 when absent", 60, 3, _units),
    LineBox("24H", "EPSDT Family Plan", "—", _unfilled(_NO_ELEMENT), 64, 2, None),
    LineBox("24J", "RENDERING PROVIDER ID. #", "Claim.item.careTeamSequence → careTeam.provider identifier (us-npi)", "the member's NPI, else (a PractitionerRole) its Practitioner's", 68, 11, _rendering_npi),
)
# fmt: on


@dataclass(frozen=True)
class Placed:
    """One text on the form: the box it fills, its grid position and what it says."""

    box: str
    line: int
    column: int
    text: str
    check: bool = False  # an X in a check box


@dataclass
class Page:
    placed: list[Placed] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # boxes the claim lacks data for ("—" printed)
    withheld: list[str] = field(default_factory=list)  # boxes whose source the caller may not read


_ROLE_OF_PATH = {
    "Claim.patient": "patient",
    "Patient.": "patient",
    "Coverage": "coverage",
    "subscriber": "subscriber",
    "Claim.insurer": "insurer",
    "Organization.address": "insurer",
    "billing provider": "provider",
    "Claim.provider": "provider",
    "Claim.facility": "facility",
    "Location.": "facility",
}


def _role_of(box: Box) -> str | None:
    return next((role for prefix, role in _ROLE_OF_PATH.items() if box.path.startswith(prefix)), None)


def _cut(value: str, width: int) -> str:
    return value if len(value) <= width else value[:width]


def _charge(item: dict[str, Any], currency: str | None) -> str | None:
    net = item.get("net")
    value = amount(net)
    if value is None or not isinstance(net, dict):
        return None
    shown = plain_text(value)
    cur = net.get("currency")
    return shown if cur == currency else f"{shown} {cur}" if cur else shown


def fill_cms1500(sources: Sources) -> list[Page]:
    """The form's pages: six service lines each, every header box repeated; box 28 totals its page's lines."""
    c = Claim1500(sources)
    items = [i for i in c.claim.get("item") or () if isinstance(i, dict)] or [{}]
    total: dict[str, Any] = c.claim["total"] if isinstance(c.claim.get("total"), dict) else {}
    currency = total.get("currency") or next(
        ((i.get("net") or {}).get("currency") for i in items if isinstance(i.get("net"), dict)), None
    )
    pages = []
    for start in range(0, len(items), len(SERVICE_LINES)):
        page = Page()
        for box in BOXES:
            if box.box == "28":
                continue
            value = box.fill(c) if box.fill is not None else None
            if value is None:
                if box.required:
                    role = _role_of(box)
                    (page.withheld if role in sources.withheld else page.missing).append(box.box)
                    page.placed.append(Placed(box.box, box.line, box.column, DASH))
                continue
            if box.options:
                if value in box.options:
                    page.placed.append(Placed(box.box, box.line, box.options[value], "X", check=True))
                continue
            page.placed.append(Placed(box.box, box.line, box.column, value if box.money else _cut(value, box.width)))
        nets: list[dict[str | None, Decimal]] = []
        for line, item in zip(SERVICE_LINES, items[start : start + len(SERVICE_LINES)], strict=False):
            for col in LINE_BOXES:
                name = f"{col.box} line {SERVICE_LINES.index(line) + 1}"
                if col.box == "24F":
                    value = _charge(item, currency)
                    if (net := amount(item.get("net"))) is not None:
                        nets.append({item["net"].get("currency"): net})
                else:
                    value = col.fill(c, item) if col.fill is not None else None
                if value is None:
                    if col.required:
                        page.missing.append(name)
                        page.placed.append(Placed(name, line, col.column, DASH))
                    continue
                page.placed.append(
                    Placed(name, line, col.column, value if col.box == "24F" else _cut(value, col.width))
                )
        summed = add(*nets)
        box28 = next(b for b in BOXES if b.box == "28")
        if summed:
            shown = " + ".join(
                f"{plain_text(v)} {k}" if k else plain_text(v)
                for k, v in sorted(summed.items(), key=lambda kv: kv[0] or "")
            )
            page.placed.append(Placed("28", box28.line, box28.column, shown))
        else:
            page.missing.append("28")
            page.placed.append(Placed("28", box28.line, box28.column, DASH))
        pages.append(page)
    return pages


def _xy(line: int, column: int) -> tuple[float, float]:
    """The baseline of a character cell: column 1 a quarter inch in, line 1 at the sheet's top."""
    return LEFT + (column - 1) * PITCH, line * LEADING - 3


def render_cms1500(sources: Sources, layout: str = "plain") -> bytes:
    """The form as PDF. `form`: the data alone, to print on the red NUCC form; `plain`: with light box
    outlines and labels, to read on plain paper. A note at the foot lists the boxes left at "—"."""
    claim = sources.main
    pdf = Document(f"CMS-1500 Claim {claim.get('id')}")
    pdf.set_auto_page_break(auto=False)
    pages = fill_cms1500(sources)
    for number, page in enumerate(pages, start=1):
        pdf.add_page()
        if layout == "plain":
            _outlines(pdf)
        pdf.set_font(MONO, size=GRID_FONT_SIZE)
        pdf.set_text_color(0, 0, 0)
        for placed in page.placed:
            x, y = _xy(placed.line, placed.column)
            pdf.text(x, y, placed.text)
        _notes(pdf, claim, page, number, len(pages))
    return pdf.bytes()


def _outlines(pdf: Document) -> None:
    pdf.set_draw_color(200, 120, 120)
    pdf.set_line_width(0.4)
    pdf.set_text_color(170, 80, 80)
    pdf.set_font(SANS, size=5)
    pdf.text(
        LEFT,
        LEADING * 1.2,
        "HEALTH INSURANCE CLAIM FORM  ·  APPROVED BY NATIONAL UNIFORM CLAIM COMMITTEE (NUCC) 02/12  ·  plain-paper copy",
    )
    for box in BOXES:
        x, y = _xy(box.line, box.column)
        pdf.rect(x - 1, y - LEADING - 2, box.width * PITCH + 2, LEADING + 5)
        if box.label:
            pdf.text(x, y - LEADING + 3.5, f"{box.box.split(' ')[0]}  {box.label}"[: int(box.width * 2.2)])
        for option, column in box.options.items():
            ox, _ = _xy(box.line, column)
            pdf.rect(ox - 0.5, y - 8.5, PITCH + 1, 10)
            pdf.text(ox + PITCH + 1.5, y - 1, option)
    top = _xy(SERVICE_LINES[0] - 2, 1)[1]
    pdf.text(
        LEFT,
        top + 4,
        "24. A. DATE(S) OF SERVICE     B. POS  C. EMG  D. CPT/HCPCS  MODIFIER     E. DIAG. PTR   F. $ CHARGES   G. UNITS  H. EPSDT   J. RENDERING PROVIDER ID #",
    )
    for line in SERVICE_LINES:
        x0, y = _xy(line, 1)
        pdf.rect(x0, y - 2 * LEADING + 1, 79 * PITCH, 2 * LEADING + 1)
    pdf.set_draw_color(0, 0, 0)


def _notes(pdf: Document, claim: dict[str, Any], page: Page, number: int, pages: int) -> None:
    pdf.set_font(SANS, size=6)
    pdf.set_text_color(60, 60, 60)
    notes = [f"FinGate CMS-1500 for Claim/{claim.get('id')} · page {number} of {pages}"]
    kind = code(claim.get("type"))
    if kind != "professional":
        notes[0] += f" · this Claim's type is {kind or 'not given'}: the CMS-1500 is the professional claim form"
    if page.missing:
        notes.append("Missing (—): " + ", ".join(page.missing))
    if page.withheld:
        notes.append("Not readable with this token's scopes (—): " + ", ".join(page.withheld))
    y = 63.4 * LEADING  # under the last line of boxes (63), within the sheet
    for note in notes:
        pdf.set_xy(LEFT, y)
        pdf.multi_cell(80 * PITCH, 6.3, note)
        y = pdf.get_y()
