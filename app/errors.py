"""The errors FinGate reports to clients, each with its `extensions.code`."""

from __future__ import annotations

from typing import Any

# The contract's `errors[].extensions.code` values (README "The API in brief").
BAD_USER_INPUT = "BAD_USER_INPUT"
NOT_FOUND = "NOT_FOUND"
CONFLICT = "CONFLICT"
STATUS_RULE = "STATUS_RULE"
UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
INTERNAL = "INTERNAL"
# The database is down or stalled: nothing was done; the same request may be sent again.
UNAVAILABLE = "UNAVAILABLE"
# A write whose commit the database never confirmed nor denied: read the resource before retrying.
UNKNOWN_OUTCOME = "UNKNOWN_OUTCOME"
RETRY_AFTER_SECONDS = 2
# A conditional create (`ifNoneExist`) whose criteria match more than one resource.
PRECONDITION_FAILED = "PRECONDITION_FAILED"
# An Idempotency-Key sent again with a different request (query, variables, operationName).
IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
# Automatic persisted queries (Apollo's protocol; clients match on these exact codes).
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_NOT_ALLOWED = "PERSISTED_QUERY_NOT_ALLOWED"


def outcome_issue(
    diagnostics: str,
    expression: str | None = None,
    code: str = "invalid",
    severity: str = "error",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One R5 OperationOutcome.issue (`details`: a CodeableConcept, e.g. the invariant's key)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if details:
        issue["details"] = details
    if expression:
        issue["expression"] = [expression]
    return issue


def operation_outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": issues}


class FinGateError(Exception):
    """An error a client caused or must know about; never carries a traceback out."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        issues: list[dict[str, Any]] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.issues = issues
        self.extra = extensions or {}

    @property
    def extensions(self) -> dict[str, Any]:
        ext: dict[str, Any] = {"code": self.code, **self.extra}
        if self.issues:
            ext["operationOutcome"] = operation_outcome(self.issues)
        return ext


class RanOutOfTime(FinGateError):
    """The request's time ran out: QUERY_TOO_COMPLEX, unless the database then proves unresponsive
    (app.graphql.limits.within reports that as UNAVAILABLE)."""

    def __init__(self, message: str) -> None:
        super().__init__(QUERY_TOO_COMPLEX, message)


def bad_input(message: str, expression: str | None = None, issues: list[dict[str, Any]] | None = None) -> FinGateError:
    return FinGateError(BAD_USER_INPUT, message, issues=issues or [outcome_issue(message, expression)])


def not_found(resource_type: str, id: str, deleted: str | None = None) -> FinGateError:
    """NOT_FOUND; `deleted` (an instant) when the resource was deleted then: its history still answers."""
    message = f"{resource_type}/{id} not found"
    if deleted is not None:
        message = f"{resource_type}/{id} not found: it was deleted at {deleted} (its history keeps every version)"
    return FinGateError(NOT_FOUND, message, issues=[outcome_issue(message, code="not-found")])


def forbidden(resource_type: str, action: str) -> FinGateError:
    """A scope the token lacks: the message names the SMART scope that would allow it."""
    letter = {"read": "r", "create": "c", "update": "u", "delete": "d"}.get(action, action)
    message = (
        f"the token's scopes do not allow {action} on {resource_type}: it needs e.g. user/{resource_type}.{letter}"
    )
    return FinGateError(FORBIDDEN, message, issues=[outcome_issue(message, code="forbidden")])


def unavailable() -> FinGateError:
    """The database did not answer in time (down, restarting or stalled); retryable."""
    message = f"the database is unavailable; nothing was written: retry in {RETRY_AFTER_SECONDS} s"
    return FinGateError(
        UNAVAILABLE,
        message,
        issues=[outcome_issue(message, code="transient")],
        extensions={"retryable": True, "retryAfter": RETRY_AFTER_SECONDS},
    )


def unknown_outcome(written: dict[str, str] | None) -> FinGateError:
    """A commit the database lost contact during: it may or may not have been stored.

    `written` names what to check: operation, resourceType, id and the version it would have.
    """
    if written is None:
        message = "the database did not confirm whether the transaction was stored: check before retrying"
    else:
        what = f"{written['resourceType']}/{written['id']}"
        message = (
            f"the database did not confirm whether the {written['operation']} of {what} (version"
            f" {written['version']}) was stored: read {what} and check meta.versionId before retrying"
        )
    return FinGateError(
        UNKNOWN_OUTCOME,
        message,
        issues=[outcome_issue(message, code="transient")],
        extensions={"retryable": False, **(written or {})},
    )
