"""Connection cursors: a whole search (parameters, sort, page size, tenant, compartment) and a keyset position, signed."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any

from itsdangerous import BadData, URLSafeSerializer

from app.store.search import bad_cursor

SALT = "fingate.connection-cursor"  # a key signing cursors signs nothing else
MAX_LENGTH = 8192  # the longest cursor made or read: a search's arguments, its sort keys, a few numbers
_FIELDS = {"type": "t", "params": "q", "sort": "s", "count": "n", "tenant": "u", "patient": "p", "position": "k"}
_FIELDS |= {"backward": "b", "offset": "o"}


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after `position` (before it when `backward`); no position: an end of the results."""

    type: str
    params: dict[str, Any]  # code -> a value or a list of values (AND)
    sort: str | None
    count: int
    tenant: str
    patient: str | None  # the compartment the search was confined to, if any
    position: list[Any] | None = None
    backward: bool = False
    offset: int = 0  # forward: the page's first match; backward: the match right after the page

    def at(self, position: list[Any] | None, backward: bool, offset: int) -> Cursor:
        return replace(self, position=position, backward=backward, offset=offset)


class Signer:
    """Signs and checks cursors with `keys`, newest first: the newest signs, every one still verifies."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("a cursor signer needs a key")
        newest_last = list(reversed(keys))  # itsdangerous's order
        self._serializer = URLSafeSerializer(newest_last, salt=SALT, signer_kwargs={"digest_method": hashlib.sha256})

    def dumps(self, cursor: Cursor) -> str:
        payload = {_FIELDS[name]: value for name, value in asdict(cursor).items()}
        text = self._serializer.dumps(payload)
        if len(text) > MAX_LENGTH:
            raise bad_cursor(
                f"this search is too long to page by cursor ({len(text)} characters, at most {MAX_LENGTH})"
            )
        return text  # type: ignore[no-any-return]

    def loads(self, text: str) -> Cursor:
        """The cursor `text` signs; BAD_USER_INPUT when it is not one this server made."""
        try:
            if len(text) > MAX_LENGTH:
                raise BadData("too long")
            payload = self._serializer.loads(text)
            return _checked(Cursor(**{name: payload[short] for name, short in _FIELDS.items()}))
        except (BadData, KeyError, TypeError, ValueError):
            raise bad_cursor() from None


def page_size(text: Any) -> int | None:
    """A cursor's page size, unverified: what the query limits charge for a Connection given only `_cursor`."""
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        return None
    try:
        ok, payload = URLSafeSerializer("unverified", salt=SALT).loads_unsafe(text)
    except Exception:  # noqa: BLE001 - a broken cursor is refused where it is used; here it costs the default
        return None
    count = payload.get("n") if isinstance(payload, dict) else None
    return count if type(count) is int and count >= 0 else None


def _is_value(value: Any) -> bool:
    """A search value: one string, or a list of them (ANDed)."""
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _checked(cursor: Cursor) -> Cursor:
    """A signed payload is ours, but of a possibly older shape: its types are checked all the same."""
    if not (
        isinstance(cursor.type, str)
        and isinstance(cursor.params, dict)
        and all(isinstance(k, str) and _is_value(v) for k, v in cursor.params.items())
        and (cursor.sort is None or isinstance(cursor.sort, str))
        and type(cursor.count) is int
        and isinstance(cursor.tenant, str)
        and (cursor.patient is None or isinstance(cursor.patient, str))
        and (cursor.position is None or isinstance(cursor.position, list))
        and isinstance(cursor.backward, bool)
        and type(cursor.offset) is int
    ):
        raise ValueError(cursor)
    return cursor


__all__ = ["MAX_LENGTH", "Cursor", "Signer", "page_size"]
