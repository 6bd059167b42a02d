"""Outbound HTTP to integrations (webhooks, clearinghouses): the SSRF guard, the https rule, a timeout, a size cap."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

LOOPBACK_NAMES = frozenset({"127.0.0.1", "::1", "localhost"})


def endpoint_problem(url: str) -> str | None:
    """What is wrong with `url` as an endpoint before any setting or DNS is consulted (those are checked at each
    POST): it must be https, or plain http to a loopback name; None when it may be stored."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        return f"the endpoint {url!r} carries credentials: they would be logged and shown; use a header instead"
    if parts.hostname and (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_NAMES)):
        return None
    return f"the endpoint {url!r} must be an https URL (plain http only to 127.0.0.1, ::1 or localhost)"


@dataclass(frozen=True)
class Policy:
    """Where FinGate may send requests: https only (plain http to loopback when `allow_loopback`), never to a
    private, link-local, multicast or reserved address unless `allow_private` (loopback needs `allow_loopback`)."""

    allow_loopback: bool = False
    allow_private: bool = False
    timeout: float = 10.0
    max_response_bytes: int = 65_536
    verify: Any = True  # TLS verification as httpx takes it: the default CAs, or an SSLContext (a private CA)


class Refused(Exception):
    """A target the policy does not allow (the message says why)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most the policy's cap
    headers: dict[str, str]


def _address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: Policy) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return policy.allow_loopback
    if ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return policy.allow_private
    return True


async def resolve(url: str, policy: Policy) -> tuple[str, str]:
    """The URL checked against `policy`, and the address to connect to: every address its host resolves to is
    checked, and a request through `Guarded` connects to the first of them (pinned)."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host:
        raise Refused(f"{url!r} is not an http(s) URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise Refused(f"{url!r} has a bad port") from exc
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"{host!r} does not resolve: {exc}") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    refused = [str(a) for a in addresses if not _address_allowed(a, policy)]
    if refused or not addresses:
        raise Refused(f"{host!r} resolves to {', '.join(refused) or 'nothing'}: not an allowed target")
    if parts.scheme == "http" and not all(a.is_loopback for a in addresses):
        raise Refused(f"{url!r}: plain http is allowed only to loopback; use https")
    return url, str(addresses[0])


class Guarded(httpx.AsyncBaseTransport):
    """An httpx transport that checks each request's URL against `policy` (`resolve`) and connects to the address
    it checked, the URL's host kept for the Host header, TLS's SNI and the certificate check: a DNS answer that
    changes between the check and the connect (DNS rebinding) cannot move the request to a refused address."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = httpx.AsyncHTTPTransport(verify=policy.verify, trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _, address = await resolve(str(request.url), self.policy)
        host = request.url.host  # the Host header was made from it already
        request.url = request.url.copy_with(host=address)
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def post(url: str, body: bytes, headers: dict[str, str], policy: Policy) -> Answer:
    """POST `body` to `url` within the policy: Refused before connecting, else the answer (its body cut at the
    cap); a network failure or timeout raises httpx.HTTPError."""
    client = httpx.AsyncClient(transport=Guarded(policy), timeout=policy.timeout, follow_redirects=False)
    async with client, client.stream("POST", url, content=body, headers=headers) as response:
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk[: policy.max_response_bytes - len(data)]
            if len(data) >= policy.max_response_bytes:
                break
        return Answer(response.status_code, bytes(data), dict(response.headers))
