"""Settings from the environment (documented in the README), overridable by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINGATE_", extra="ignore", populate_by_name=True)

    mongodb_uri: str | None = Field(
        default=None,
        validation_alias="MONGODB_URI",
        description="A real MongoDB. When unset, FinGate starts the embedded database (SecantusDB) as a child process.",
    )
    db: str = Field(default="fingate", description="Database name.")
    data_dir: Path = Field(default=Path(".fingate-data"), description="Storage directory of the embedded database.")
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(default=8000, description="HTTP port.")
    load_demo: bool = Field(default=True, description="Load the R5 examples and demo data when the database is empty.")
    log_level: str = Field(default="info", description="Log level: debug, info, warning, error.")
    compiled: bool = Field(
        default=True,
        description="Compiled execution of plain-data queries (README 'Compiled execution'); off: graphql-core runs every query.",
    )
    projection: bool = Field(
        default=True,
        description="Read only the top-level elements a query selects of each resource (README 'Performance'); off: whole resources.",
    )
    # -- security (README "Security") --
    auth: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="auto: JWT auth when a key is configured; on: refuse to start without one; off: no auth (one tenant).",
    )
    jwt_secret: SecretStr | None = Field(default=None, description="HS256 shared secret (development).")
    jwks_file: Path | None = Field(default=None, description="A JWKS file of RS256/ES256 public keys.")
    jwks_url: str | None = Field(
        default=None, description="A JWKS URL, fetched at start-up and when an unknown `kid` arrives."
    )
    jwks_refresh_seconds: float = Field(default=300.0, description="At most one JWKS URL fetch per this many seconds.")
    jwt_issuer: str | None = Field(default=None, description="Required `iss` claim, when set.")
    jwt_audience: str | None = Field(default=None, description="Required `aud` claim, when set.")
    tenant_claim: str = Field(default="tenant", description="The JWT claim naming the caller's tenant.")
    default_tenant: str = Field(default="default", description="The tenant without auth, and of `fingate load`.")
    max_depth: int = Field(default=12, description="Deepest field nesting a query may have.")
    max_aliases: int = Field(default=30, description="Most aliased fields in one document.")
    max_tokens: int = Field(default=5_000, description="Most lexical tokens in one document.")
    max_cost: int = Field(
        default=50_000, description="Most resources a query may ask for (lists x their _count, nested)."
    )
    max_body_bytes: int = Field(default=1_048_576, description="Largest request body (HTTP 413 beyond).")
    request_timeout: float = Field(default=10.0, description="Seconds a GraphQL request may run.")
    introspection: bool = Field(
        default=True,
        description="Allow introspection (`__schema`, `__type`); with auth on, only to a token with a read scope.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="With auth on, /metrics answers only `Authorization: Bearer <this>` (unset: /metrics is closed).",
    )
    cors_origins: list[str] = Field(default=[], description="Origins allowed by CORS (none by default).")
    cursor_keys: list[SecretStr] = Field(
        default=[],
        description="Keys signing Connection cursors, newest first (a JSON list): the first signs, all verify."
        " None: a random key made once and kept in the database.",
    )
    # -- billing (README "Billing views") --
    allow_overpayment: list[str] = Field(
        default=[],
        description='Tenants whose payments may take a Claim or Invoice past its total (a credit): a JSON list, ["*"] for all.',
    )

    def overpayment_allowed(self, tenant: str) -> bool:
        return tenant in self.allow_overpayment or "*" in self.allow_overpayment

    # -- clients (README "Mobile clients") --
    apq_allowlist: bool = Field(
        default=False, description="Run only stored (persisted) queries; new query texts are refused."
    )
    cache_control: str = Field(default="private, no-cache", description="Cache-Control of GET query responses.")
