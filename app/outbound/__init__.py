"""Outbound HTTP to integrations (webhooks, clearinghouses): the SSRF guard, the https rule, a timeout, a size cap."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
    """The URL checked against `policy`, and the address it will connect to (resolved once, then pinned for
    plain http; https keeps the host name for TLS, so a DNS change between check and connect is its risk)."""
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


async def post(url: str, body: bytes, headers: dict[str, str], policy: Policy) -> Answer:
    """POST `body` to `url` within the policy: Refused before connecting, else the answer (its body cut at the
    cap); a network failure or timeout raises httpx.HTTPError."""
    checked, address = await resolve(url, policy)
    parts = urlsplit(checked)
    target = checked
    extra: dict[str, Any] = {}
    if parts.scheme == "http":  # pinned: connect to the address checked, name the host in the Host header
        pinned = f"[{address}]" if ":" in address else address
        target = urlunsplit(parts._replace(netloc=f"{pinned}:{parts.port or 80}"))
        extra["headers"] = {**headers, "host": parts.netloc}
    async with httpx.AsyncClient(timeout=policy.timeout, follow_redirects=False, trust_env=False) as client:
        async with client.stream("POST", target, content=body, headers=extra.get("headers", headers)) as response:
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk[: policy.max_response_bytes - len(data)]
                if len(data) >= policy.max_response_bytes:
                    break
            return Answer(response.status_code, bytes(data), dict(response.headers))
