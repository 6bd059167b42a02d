"""Test harness for auth: real signed JWTs (HS256 secret, RSA and EC keys made here), JWKS files, authed clients."""

from __future__ import annotations

import base64
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.settings import Settings
from app.store import Store
from tests.harness import client_for

SECRET = "fingate-test-secret-" + "0123456789abcdef" * 4  # HS256 wants >= 32 bytes
ALL = "user/*.cruds"


@cache
def rsa_key(name: str = "main") -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key(name: str = "main") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwks(path: Path, keys: dict[str, Any]) -> Path:
    """Write the public halves of `keys` ({kid: private key}) as a JWKS file."""
    out = []
    for kid, key in keys.items():
        algorithm: Any = (
            jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
        )
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        out.append({**jwk, "kid": kid, "use": "sig"})
    path.write_text(json.dumps({"keys": out}))
    return path


def token(
    *,
    key: Any = SECRET,
    alg: str = "HS256",
    kid: str | None = None,
    scope: str | None = ALL,
    tenant: str | None = "acme",
    sub: str = "alice",
    lifetime: int = 300,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + lifetime, **claims}
    if scope is not None:
        payload["scope"] = scope
    if tenant is not None:
        payload["tenant"] = tenant
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def unsigned(**claims: Any) -> str:
    """An `alg: none` token: what an attacker sends hoping the server skips the signature."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    now = int(time.time())
    payload = {"sub": "mallory", "tenant": "acme", "scope": ALL, "exp": now + 300, **claims}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def authed_client(store: Store, **settings: Any) -> httpx.AsyncClient:
    """The app with auth on (the HS256 secret unless other keys are given)."""
    if not {"jwks_file", "jwks_url"} & settings.keys():
        settings.setdefault("jwt_secret", SECRET)
    return client_for(store, settings=Settings(**settings))


async def post(
    client: httpx.AsyncClient, query: str, tok: str | None = None, variables: dict[str, Any] | None = None
) -> httpx.Response:
    headers = {"content-type": "application/json", **(bearer(tok) if tok else {})}
    return await client.post(
        "/graphql", content=json.dumps({"query": query, "variables": variables or {}}), headers=headers
    )
