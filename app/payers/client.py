"""Talks to a payer's FHIR R4 API with httpx: bearer token or OAuth2 client credentials, bounded retries (tenacity)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential

from app import errors, outbound
from app.settings import Settings

log = logging.getLogger("fingate.payers")

ATTEMPTS = 4  # tries of one request: a 429, a 5xx, a timeout or a dropped connection is tried again
MAX_WAIT = 60.0  # seconds: a longer Retry-After is waited this long, no more
TIMEOUT = 30.0  # seconds per request
_BACKOFF = wait_exponential(multiplier=0.5, max=MAX_WAIT)
_STRICT = outbound.Policy()  # no loopback, no private networks
_ALLOWED_BY = (
    "loopback is allowed by FINGATE_PAYER_ALLOW_LOOPBACK=true, private networks by FINGATE_HOOKS_ALLOW_PRIVATE=true"
)


def policy_from(settings: Settings) -> outbound.Policy:
    """The payer import's network policy: the webhooks' guard, loopback allowed by its own setting (or the flag)."""
    return outbound.Policy(allow_loopback=settings.payer_allow_loopback, allow_private=settings.hooks_allow_private)


def _checked_form(url: str, field: str, policy: outbound.Policy) -> str:
    """`url` if its form may be fetched (its addresses are checked before each request), else BAD_USER_INPUT at `field`."""
    parts = urlsplit(url)
    if parts.username or parts.password:  # said without the URL, which holds them
        raise errors.bad_input(f"{field}: a URL with credentials in it is refused (pass them as options)", field)
    problem = outbound.endpoint_problem(url)
    if problem is not None:
        raise errors.bad_input(f"{field}: {problem}", field)
    if parts.scheme == "http" and not policy.allow_loopback:
        raise errors.bad_input(
            f"{field}: plain http to a loopback address needs FINGATE_PAYER_ALLOW_LOOPBACK=true (or --allow-loopback)",
            field,
        )
    return url


def same_origin(url: str, base: str) -> bool:
    """Whether `url` (a page's `next` link) is on the payer's own origin: the token is never sent elsewhere."""
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


class PayerError(Exception):
    """The payer's API failed for good (after the retries): a status, a timeout, or an answer that is not FHIR JSON.

    Its message names the URL and the status, never a credential.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Again(Exception):
    """A response worth trying again: 429 or 5xx, with the Retry-After the payer gave."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, _Again) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_WAIT)
    return float(_BACKOFF(state))


class PayerClient:
    """One payer: GETs FHIR JSON (numbers as `Decimal`) with a bearer token, fetched by client credentials if needed."""

    def __init__(
        self,
        base: str,
        *,
        token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        token_url: str | None = None,
        policy: outbound.Policy = _STRICT,
        timeout: float = TIMEOUT,
        attempts: int = ATTEMPTS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base = _checked_form(base.rstrip("/"), "base", policy)
        if token is None and not (client_id and client_secret and token_url):
            raise ValueError("a bearer token, or client id, client secret and token URL")
        self.token_url = _checked_form(token_url, "tokenUrl", policy) if token_url else None
        self._token = token
        self._credentials = (client_id or "", client_secret or "")
        self.policy = policy
        self.attempts = attempts
        self.sleep = sleep
        # Each request is checked again and sent to the address checked (app.outbound.Guarded: no DNS rebinding).
        self.http = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False, transport=transport or outbound.Guarded(policy)
        )
        self.requests = 0  # sent, retries included

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> PayerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def check(self) -> None:
        """Resolve the base and the token URL now, before a job is started: BAD_USER_INPUT naming the one refused."""
        await self._resolve(self.base, "base")
        if self.token_url is not None:
            await self._resolve(self.token_url, "tokenUrl")

    async def _resolve(self, url: str, field: str) -> None:
        """The shared outbound guard on every address `url`'s host resolves to (private, link-local, reserved...)."""
        try:
            await outbound.resolve(url, self.policy)
        except outbound.Refused as exc:
            raise errors.bad_input(f"{field}: {exc} ({_ALLOWED_BY})", field) from None

    async def _fetch_token(self) -> str:
        """OAuth2 client credentials (RFC 6749 4.4): client id and secret by HTTP Basic, as 2.3.1 prefers."""
        assert self.token_url is not None
        response = await self._send(
            "POST",
            self.token_url,
            "tokenUrl",
            data={"grant_type": "client_credentials"},
            auth=httpx.BasicAuth(*self._credentials),
        )
        token = response.get("access_token") if isinstance(response, dict) else None
        if not isinstance(token, str) or not token:
            raise PayerError(f"the token endpoint {self.token_url} answered without an access_token")
        return token

    async def _send(self, method: str, url: str, field: str, **kwargs: Any) -> Any:
        await self._resolve(url, field)  # before anything is sent, the token or the client secret above all
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=_wait,
            retry=retry_if_exception_type((_Again, httpx.TimeoutException, httpx.TransportError)),
            sleep=self.sleep,
            reraise=True,
        ):
            with attempt:
                self.requests += 1
                try:
                    response = await self.http.request(method, url, **kwargs)
                except outbound.Refused as exc:  # the host now resolves elsewhere than when it was checked
                    raise PayerError(f"{method} {url}: {exc}") from None
                if response.status_code == 429 or response.status_code >= 500:
                    log.info("payer answered %d to %s %s: trying again", response.status_code, method, url)
                    raise _Again(f"{response.status_code}", retry_after(response.headers.get("Retry-After")))
                if response.status_code >= 400:
                    raise PayerError(f"{method} {url}: the payer answered {response.status_code}", response.status_code)
                try:
                    return json.loads(response.content, parse_float=Decimal)
                except ValueError as exc:
                    raise PayerError(f"{method} {url}: not JSON ({exc})") from None
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def get(self, url: str) -> Any:
        """The JSON at `url`, which must be on the payer's origin (a `next` link elsewhere would get the token)."""
        if not same_origin(_checked_form(url, "url", self.policy), self.base):
            raise PayerError(f"{url} is not on the payer's origin {self.base}: not followed")
        try:
            if self._token is None:
                self._token = await self._fetch_token()
            try:
                return await self._send("GET", url, "url", headers=self._headers())
            except PayerError as exc:
                if self.token_url is None or exc.status != 401:
                    raise
                self._token = await self._fetch_token()  # expired: one new token, one more try
                return await self._send("GET", url, "url", headers=self._headers())
        except _Again as exc:
            raise PayerError(f"GET {url}: the payer still answered {exc} after {self.attempts} tries") from None
        except httpx.HTTPError as exc:
            raise PayerError(f"GET {url}: {type(exc).__name__} after {self.attempts} tries") from None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Accept": "application/fhir+json"}
