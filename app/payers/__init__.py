"""Payer import: fetching a patient's R4 Patient, Coverage and ExplanationOfBenefit from a payer's FHIR API, converting them to R5, storing them."""
