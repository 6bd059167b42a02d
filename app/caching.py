"""Conditional GET for GraphQL responses: an ETag over the body, 304 on If-None-Match, and Cache-Control."""

from __future__ import annotations

import base64
import hashlib

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_CACHE_CONTROL = "private, no-cache"
# Kept on a 304 (RFC 9110 §15.4.5); the body's own headers (length, type) are not.
_NOT_MODIFIED_HEADERS = ("cache-control", "etag", "vary", "x-request-id")


def etag(body: bytes) -> str:
    """Weak, because gzip may re-encode the body on its way out while its meaning stays the same."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()[:18]).decode()
    return f'W/"{digest}"'


def _matches(if_none_match: str, tag: str) -> bool:
    """Weak comparison, as If-None-Match requires."""
    wanted = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in wanted or tag.removeprefix("W/") in wanted


class ConditionalGET:
    """Wraps the GraphQL endpoint; only whole JSON answers to GET are buffered (streams pass through)."""

    def __init__(self, app: ASGIApp, cache_control: str = DEFAULT_CACHE_CONTROL) -> None:
        self.app = app
        self.cache_control = cache_control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if_none_match = Headers(scope=scope).get("if-none-match")
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffered(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] == 200 and Headers(raw=message["headers"]).get("content-type", "").startswith(
                    "application/json"
                ):
                    start = message
                    return
            elif start is not None:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await self._finish(start, b"".join(chunks), if_none_match, send)
                return
            await send(message)

        await self.app(scope, receive, buffered)

    async def _finish(self, start: Message, body: bytes, if_none_match: str | None, send: Send) -> None:
        headers = MutableHeaders(raw=list(start["headers"]))
        headers["etag"] = tag = etag(body)
        headers["cache-control"] = self.cache_control
        if if_none_match is not None and _matches(if_none_match, tag):
            kept = [(k, v) for k, v in headers.raw if k.decode("latin-1") in _NOT_MODIFIED_HEADERS]
            await send({"type": "http.response.start", "status": 304, "headers": kept})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({**start, "headers": headers.raw})
        await send({"type": "http.response.body", "body": body})
