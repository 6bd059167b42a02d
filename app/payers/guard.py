"""Where the payer import may send requests: https anywhere, plain http only to a loopback address when allowed.

A minimal guard of its own (the webhooks' shared network guard is being written beside it; merge the two then).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from app import errors

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, allow_loopback: bool, field: str = "base") -> str:
    """`url` if the import may fetch it, else a BAD_USER_INPUT naming `field`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.username or parts.password:
        raise errors.bad_input(f"{field}: a URL with credentials in it is refused (pass them as options)", field)
    if not host:
        raise errors.bad_input(f"{field}: {url!r} is not an absolute URL", field)
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and is_loopback(host):
        if allow_loopback:
            return url
        raise errors.bad_input(
            f"{field}: plain http to a loopback address needs FINGATE_PAYER_ALLOW_LOOPBACK=true", field
        )
    raise errors.bad_input(f"{field}: only https URLs are fetched (http only to loopback, when allowed)", field)


def same_origin(url: str, base: str) -> bool:
    """Whether `url` (a page's `next` link) is on the payer's own origin: the token is never sent elsewhere."""
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
