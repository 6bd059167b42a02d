"""The `Idempotency-Key` header: a mutation request's first response is stored and replayed byte for byte to a retry."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from graphql import GraphQLError, OperationType, parse
from graphql.language import OperationDefinitionNode
from starlette.responses import Response

from app import errors
from app.store.idempotency import DONE, IdempotencyKeys

log = logging.getLogger("fingate.idempotency")

HEADER = "idempotency-key"
REPLAYED = "idempotent-replayed"  # on a replayed response: `true`
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII without spaces, as Stripe's and the IETF draft's
# Answers that stored nothing and say "send it again": the key is given up, so the retry runs.
_RETRYABLE = frozenset({errors.UNAVAILABLE, errors.CONFLICT})
_POLL_SECONDS = (0.02, 0.5)  # a waiting retry reads the record this often: doubling from the first to the second


def is_mutation(data: Any) -> bool:
    """Whether a GraphQL request body runs a mutation (the operation `operationName` picks, or the only one)."""
    if not isinstance(data, dict) or not isinstance(data.get("query"), str):
        return False  # a persisted query's hash alone: the HTTP layer puts its stored text in first
    try:
        document = parse(data["query"])
    except GraphQLError:
        return False  # the normal path answers the syntax error
    name = data.get("operationName")
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [o for o in operations if name is None or (o.name is not None and o.name.value == name)]
    return len(chosen) == 1 and chosen[0].operation == OperationType.MUTATION


def request_hash(data: dict[str, Any]) -> str:
    """SHA-256 of the canonical request: query, variables and operationName as sorted, compact JSON (a decimal
    keeps its digits and stays apart from the string of the same digits)."""
    canonical = {k: data.get(k) for k in ("query", "variables", "operationName")}
    text = json.dumps(
        canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=lambda d: {"$decimal": str(d)}
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _codes(body: bytes) -> set[str]:
    try:
        data = json.loads(body)
    except ValueError:
        return set()
    found = data.get("errors") if isinstance(data, dict) else None
    return {str((e.get("extensions") or {}).get("code")) for e in found or () if isinstance(e, dict)}


class Idempotency:
    """Runs a mutation request once per (tenant, key): the first request claims the key (a `pending` record,
    unique on tenant and key), runs, and stores its response; a retry with the same request gets that
    response again, byte for byte, with `Idempotent-Replayed: true`; a retry while the first still runs waits
    for it (up to `wait` seconds, then a retryable CONFLICT); the same key with another request is
    IDEMPOTENCY_KEY_REUSED (HTTP 422)."""

    def __init__(self, keys: IdempotencyKeys, wait: float) -> None:
        self.keys = keys
        self.wait = wait

    async def run(
        self,
        tenant: str,
        key: str,
        data: Any,
        execute: Callable[[], Awaitable[Response]],
        refuse: Callable[[int, str, str, dict[str, str] | None], Response],
    ) -> Response:
        """`execute` once for `key` (when `data` is a mutation); `refuse(status, code, message, headers)` answers
        the refusals in the HTTP layer's error shape."""
        if not is_mutation(data):
            return await execute()  # queries ignore the header
        if not _KEY.match(key):
            return refuse(
                400, errors.BAD_USER_INPUT, "Idempotency-Key must be 1 to 255 printable ASCII characters", None
            )
        wanted = request_hash(data)
        try:
            held = await self.keys.claim(tenant, key, wanted)
        except errors.FinGateError as exc:
            return self._refuse_error(exc, refuse)
        if held is None:
            return await self._first(tenant, key, execute)
        until = time.monotonic() + self.wait
        pause = _POLL_SECONDS[0]
        while True:
            if held.request_hash != wanted:
                message = (
                    f"Idempotency-Key {key!r} was sent with a different request (query, variables or operationName):"
                    " use a new key for a new request"
                )
                return refuse(422, errors.IDEMPOTENCY_KEY_REUSED, message, None)
            if held.state == DONE and held.body is not None:
                return Response(
                    held.body,
                    status_code=held.status or 200,
                    media_type=held.content_type,
                    headers={REPLAYED: "true"},
                )
            if time.monotonic() >= until:
                message = (
                    f"the first request with Idempotency-Key {key!r} is still running: retry after "
                    f"{errors.RETRY_AFTER_SECONDS} s with the same key"
                )
                return refuse(409, errors.CONFLICT, message, {"retry-after": str(errors.RETRY_AFTER_SECONDS)})
            await asyncio.sleep(pause)
            pause = min(pause * 2, _POLL_SECONDS[1])
            try:
                found = await self.keys.get(tenant, key)
                if found is None:  # the first request stored nothing and gave the key up: this one runs
                    found = await self.keys.claim(tenant, key, wanted)
                    if found is None:
                        return await self._first(tenant, key, execute)
            except errors.FinGateError as exc:
                return self._refuse_error(exc, refuse)
            held = found

    async def _first(self, tenant: str, key: str, execute: Callable[[], Awaitable[Response]]) -> Response:
        try:
            response = await execute()
        except BaseException:
            await asyncio.shield(self.keys.release(tenant, key))
            raise
        body = bytes(response.body)
        try:
            if response.status_code >= 500 or _codes(body) & _RETRYABLE:
                await self.keys.release(tenant, key)  # nothing stored: the retry runs again
            else:
                content_type = response.headers.get("content-type", "application/json")
                await self.keys.complete(tenant, key, response.status_code, body, content_type)
        except errors.FinGateError:
            # The answer stands; its record stays pending until it expires (a retry meanwhile gets CONFLICT).
            log.warning("Idempotency-Key %r: the response could not be kept", key, exc_info=True)
        return response

    @staticmethod
    def _refuse_error(
        exc: errors.FinGateError, refuse: Callable[[int, str, str, dict[str, str] | None], Response]
    ) -> Response:
        status = 503 if exc.code == errors.UNAVAILABLE else 409
        return refuse(status, exc.code, exc.message, {"retry-after": str(errors.RETRY_AFTER_SECONDS)})
