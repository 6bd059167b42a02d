"""Who is asking: JWT bearer verification (PyJWT), SMART v1/v2 scopes, the caller's tenant and patient."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from app.fhir.model import SERVED_RESOURCES, patient_compartment
from app.settings import Settings

log = logging.getLogger("fingate.auth")

READ, CREATE, UPDATE, DELETE = "read", "create", "update", "delete"
ACTIONS = (READ, CREATE, UPDATE, DELETE)
AUDIT_TYPE = "AuditEvent"  # `system/AuditEvent.r` (or `.read`) reads the audit log
ASYMMETRIC = ("RS256", "ES256")

# SMART v2 letters and v1 words -> FinGate actions. Reads need `r` or `s`: a search returns what a read would.
_V2 = {"c": CREATE, "r": READ, "u": UPDATE, "d": DELETE, "s": READ}
_V1 = {"read": (READ,), "write": (CREATE, UPDATE, DELETE), "*": ACTIONS}
_SCOPE = re.compile(r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Za-z]+)\.(?P<perms>[a-z*]+)$")
_V2_ORDER = "cruds"
_TENANT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KNOWN_TYPES = frozenset([*SERVED_RESOURCES, AUDIT_TYPE])
_FHIR_ID = re.compile(r"[A-Za-z0-9.-]{1,64}")
_FHIR_USER_PATIENT = re.compile(r"(?:^|/)Patient/(?P<id>[A-Za-z0-9.-]{1,64})\Z")  # `Patient/1`, `https://.../Patient/1`


@dataclass(frozen=True)
class Principal:
    """The caller: `sub`, tenant, the (resource type or `*`, action) pairs its scopes grant, and which
    of those only `patient/` scopes grant: they stop at the compartment of the token's `patient`."""

    sub: str
    tenant: str
    grants: frozenset[tuple[str, str]]
    audit: bool = False  # a `system/` scope granting AuditEvent read
    patient: str | None = None  # the token's patient: its `patient` claim, or a `fhirUser` naming a Patient
    narrow: frozenset[tuple[str, str]] = frozenset()  # (type, action) in `grants` from `patient/` scopes only
    expires: float | None = None  # the token's `exp` (POSIX seconds): a WebSocket closes then

    def can(self, resource_type: str, action: str) -> bool:
        return (resource_type, action) in self.grants or ("*", action) in self.grants

    @property
    def reads_anything(self) -> bool:
        return self.audit or any(action == READ for _, action in self.grants)

    def compartment_types(self, action: str) -> frozenset[str]:
        """The types whose `action` is limited to Patient/`patient`'s compartment."""
        return frozenset(t for t, a in self.narrow if a == action)


def anonymous(tenant: str) -> Principal:
    """The caller when auth is off: everything, in the one tenant. Only the HTTP layer makes it, and only
    when no authenticator is configured; a request with auth on has a verified Principal or no Context."""
    return Principal("anonymous", tenant, frozenset(("*", a) for a in ACTIONS), audit=True)


def _permissions(perms: str) -> tuple[str, ...] | None:
    """`rs` (v2, letters in `cruds` order), `read`/`write`/`*` (v1); None if neither."""
    if perms in _V1:
        return _V1[perms]
    if (
        perms
        and all(p in _V2 for p in perms)
        and "".join(sorted(perms, key=_V2_ORDER.index)) == perms
        and len(set(perms)) == len(perms)
    ):
        return tuple(dict.fromkeys(_V2[p] for p in perms))
    return None


def _scopes(
    scope: str | list[str] | None, patient: str | None
) -> tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]], bool]:
    """SMART scopes -> (grants, the grants only `patient/` scopes give, audit).

    `user/` and `system/` grant type permissions over the tenant. A `patient/` scope grants them within
    the patient's compartment only, so it grants nothing without a patient in the token, nor on a type
    with no Patient-compartment parameters (Organization, PaymentReconciliation, ...); `patient/*` is
    every type that has some. A `user/` or `system/` grant of the same type and action is broader and
    wins. Unknown types, malformed scopes and granular `?param=` scopes grant nothing. The audit log
    needs a `system/` scope on AuditEvent (or `*`).
    """
    items = scope.split() if isinstance(scope, str) else [s for s in scope or [] if isinstance(s, str)]
    broad: set[tuple[str, str]] = set()
    patient_only: set[tuple[str, str]] = set()
    audit = False
    for item in items:
        m = _SCOPE.match(item)
        if m is None:
            continue  # openid, fhirUser, launch, offline_access, granular scopes ...
        rtype, actions = m["type"], _permissions(m["perms"])
        if actions is None or (rtype != "*" and rtype not in _KNOWN_TYPES):
            continue
        if rtype != AUDIT_TYPE:
            (patient_only if m["context"] == "patient" else broad).update((rtype, a) for a in actions)
        if m["context"] == "system" and rtype in ("*", AUDIT_TYPE) and READ in actions:
            audit = True
    in_compartment = [t for t, params in patient_compartment().items() if params]
    narrow = {
        (t, action)
        for rtype, action in (patient_only if patient is not None else ())
        for t in (in_compartment if rtype == "*" else [rtype])
        if t in in_compartment and (t, action) not in broad and ("*", action) not in broad
    }
    return frozenset(broad | narrow), frozenset(narrow), audit


def parse_scopes(scope: str | list[str] | None, patient: str | None = None) -> tuple[frozenset[tuple[str, str]], bool]:
    """SMART scopes -> (grants, audit), for a token whose patient is `patient` (see `_scopes`)."""
    grants, _, audit = _scopes(scope, patient)
    return grants, audit


def token_patient(claims: dict[str, Any]) -> str | None:
    """The token's patient: its `patient` claim (SMART launch context), else a `fhirUser` claim naming a
    Patient (`Patient/123`, or a URL ending in it); a `patient` claim that is not a FHIR id is refused."""
    patient = claims.get("patient")
    if patient is not None:
        if not isinstance(patient, str) or not _FHIR_ID.fullmatch(patient):
            raise AuthError("the token's 'patient' claim must be a FHIR id (letters, digits, '-', '.'; up to 64)")
        return patient
    user = claims.get("fhirUser")
    m = _FHIR_USER_PATIENT.search(user) if isinstance(user, str) else None
    return m["id"] if m is not None else None


def principal_for(sub: str, tenant: str, scope: str | list[str] | None, patient: str | None) -> Principal:
    """The caller a verified token names."""
    grants, narrow, audit = _scopes(scope, patient)
    return Principal(sub, tenant, grants, audit, patient, narrow)


class AuthError(Exception):
    """A request without a valid bearer token: HTTP 401."""


class Authenticator:
    """Verifies bearer tokens against the configured keys; built once at start-up."""

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self.jwks_url = settings.jwks_url
        self.refresh_seconds = settings.jwks_refresh_seconds
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.tenant_claim = settings.tenant_claim
        self.keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched: float | None = None  # monotonic time of the last JWKS fetch; None: never
        self._lock = asyncio.Lock()
        if settings.jwks_file is not None:
            self.keys = _key_set(json.loads(Path(settings.jwks_file).read_text()))

    @property
    def algorithms(self) -> list[str]:
        return (["HS256"] if self.secret else []) + (list(ASYMMETRIC) if self.keys or self.jwks_url else [])

    async def start(self) -> None:
        """Fetch the JWKS URL (start-up)."""
        if self.jwks_url:
            await self._refresh(force=True)

    async def _refresh(self, force: bool = False) -> None:
        async with self._lock:
            # `monotonic()` may start near zero on a machine that has just booted: "never fetched"
            # must not look like "fetched at time zero".
            if not force and self._fetched is not None and time.monotonic() - self._fetched < self.refresh_seconds:
                return
            self._fetched = time.monotonic()
            try:
                self.keys = _key_set(await asyncio.to_thread(_fetch_json, self.jwks_url or ""))
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                log.error("JWKS %s could not be read: %s", self.jwks_url, exc)

    async def _key(self, header: dict[str, Any]) -> Any:
        alg = header.get("alg")
        if alg == "HS256" and self.secret:
            return self.secret
        if alg not in ASYMMETRIC:
            raise AuthError(f"token algorithm {alg!r} is not accepted; use one of {', '.join(self.algorithms)}")
        kid = header.get("kid")
        if kid not in self.keys and self.jwks_url:
            await self._refresh()
        key = self.keys.get(kid) or (next(iter(self.keys.values())) if kid is None and len(self.keys) == 1 else None)
        if key is None:
            raise AuthError(f"no key with kid {kid!r} in the JWKS")
        return key

    async def principal(self, authorization: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("send Authorization: Bearer <JWT>")
        try:
            header = jwt.get_unverified_header(token.strip())
            claims = jwt.decode(
                token.strip(),
                await self._key(header),
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
                leeway=30,
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise AuthError(f"invalid token: {exc}") from None
        tenant = claims.get(self.tenant_claim)
        if not isinstance(tenant, str) or not _TENANT.match(tenant):
            raise AuthError(f"the token's {self.tenant_claim!r} claim must name a tenant (letters, digits, . _ -)")
        principal = principal_for(str(claims["sub"]), tenant, claims.get("scope"), token_patient(claims))
        return dataclasses.replace(principal, expires=float(claims["exp"]))


def _key_set(data: Any) -> dict[str | None, jwt.PyJWK]:
    keys = {}
    for jwk in data.get("keys", []) if isinstance(data, dict) else []:
        if jwk.get("kty") in ("RSA", "EC") and jwk.get("use", "sig") == "sig":
            keys[jwk.get("kid")] = jwt.PyJWK.from_dict(jwk)
    return keys


def _fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (an operator-configured URL)
        return json.loads(response.read())


def configured(settings: Settings) -> bool:
    return bool(settings.jwt_secret or settings.jwks_file or settings.jwks_url)


def authenticator(settings: Settings) -> Authenticator | None:
    """The app's authenticator, or None when auth is off (`FINGATE_AUTH=off`, or `auto` without keys)."""
    if settings.auth == "off" or not configured(settings):
        return None
    return Authenticator(settings)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_startup(settings: Settings) -> None:
    """The secure default: no auth only on loopback, or when `FINGATE_AUTH=off` says so."""
    if settings.auth == "on" and not configured(settings):
        raise SystemExit("fingate: FINGATE_AUTH=on needs FINGATE_JWT_SECRET, FINGATE_JWKS_FILE or FINGATE_JWKS_URL")
    if configured(settings) and settings.auth != "off":
        return
    if settings.auth == "off":
        log.warning(
            "FINGATE_AUTH=off: no authentication, every caller reads and writes tenant %r", settings.default_tenant
        )
    elif is_loopback(settings.host):
        log.info("no auth configured: serving loopback only, one tenant %r", settings.default_tenant)
    else:
        raise SystemExit(
            f"fingate: refusing to serve {settings.host} without authentication; set FINGATE_JWT_SECRET, "
            "FINGATE_JWKS_FILE or FINGATE_JWKS_URL, bind to 127.0.0.1, or set FINGATE_AUTH=off explicitly"
        )
