"""Strawberry object types assembled while the schema is built, from (name, annotation, description) rows."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types.field import StrawberryField

Row = tuple[str, object, StrawberryField]


def field(python: str, annotation: object, description: str) -> Row:
    return python, annotation, strawberry.field(name=python, description=description)


def object_type(name: str, description: str, fields: list[Row]) -> Any:
    cls = type(name, (), {"__module__": __name__})
    cls.__annotations__ = {python: annotation for python, annotation, _ in fields}
    for python, _, row_field in fields:
        setattr(cls, python, row_field)
    return strawberry.type(cls, name=name, description=description)
