"""The status lifecycle and cross-resource rules: tables in `tables`, applied by `engine`."""

from app.rules.describe import describe_rules
from app.rules.engine import (
    ALL,
    DEFERRED,
    FINAL,
    Reads,
    check_create,
    check_delete,
    check_delete_references,
    check_document,
    check_references,
    check_update,
    lifecycle,
    references_read,
)

__all__ = [
    "ALL",
    "DEFERRED",
    "FINAL",
    "Reads",
    "check_create",
    "check_delete",
    "check_delete_references",
    "check_document",
    "check_references",
    "check_update",
    "describe_rules",
    "lifecycle",
    "references_read",
]
