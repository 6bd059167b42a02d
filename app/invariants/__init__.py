"""FHIR invariants: the R5 definitions' error-severity constraints, checked on every write."""

from app.invariants.check import invariant_issues

__all__ = ["invariant_issues"]
