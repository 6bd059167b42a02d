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
    smart_authorize_url: str | None = Field(
        default=None, description="The authorization server's authorize endpoint, advertised in /metadata (SMART)."
    )
    smart_token_url: str | None = Field(
        default=None, description="The authorization server's token endpoint, advertised in /metadata (SMART)."
    )
    default_tenant: str = Field(default="default", description="The tenant without auth, and of `fingate load`.")
    max_depth: int = Field(default=12, description="Deepest field nesting a query may have.")
    max_aliases: int = Field(default=30, description="Most aliased fields in one document.")
    max_tokens: int = Field(default=5_000, description="Most lexical tokens in one document.")
    max_cost: int = Field(
        default=50_000, description="Most resources a query may ask for (lists x their _count, nested)."
    )
    # -- integrations out (README "Live updates") --
    dispatch: bool = Field(
        default=True,
        description="Run the rest-hook and clearinghouse dispatchers in the server (off: run `fingate dispatch` alone).",
    )
    dispatch_lease_seconds: float = Field(
        default=60.0, description="How long a dispatcher holds a Subscription before another may take it over."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="The Standard Webhooks secret (`whsec_` + base64) signing rest-hook notifications; unset: none are sent.",
    )
    clearinghouse_url: str | None = Field(
        default=None,
        description="Where Claims that become active are submitted (README 'Clearinghouse'); unset: nothing is sent.",
    )
    hooks_allow_loopback: bool = Field(
        default=False, description="Allow rest-hook and clearinghouse endpoints on loopback (also over plain http)."
    )
    hooks_allow_private: bool = Field(
        default=False,
        description="Allow endpoints (rest-hooks, clearinghouse, payer import) on private, link-local and reserved networks.",
    )
    hooks_timeout: float = Field(default=10.0, description="Seconds one outbound POST may take.")
    hooks_max_response_bytes: int = Field(default=65_536, description="Most bytes of an endpoint's answer read.")
    hooks_max_attempts: int = Field(default=5, description="Attempts per notification before it is dead-lettered.")
    hooks_backoff_seconds: float = Field(default=1.0, description="First retry delay (doubling, with jitter).")
    hooks_backoff_max_seconds: float = Field(default=300.0, description="Longest retry delay.")
    max_subscriptions: int = Field(
        default=20, description="Most operations (subscriptions) one WebSocket connection runs at once."
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
    # -- idempotent writes (README "Idempotency-Key") --
    idempotency_ttl: float = Field(
        default=86_400.0,
        description="Seconds a mutation's response is kept for replay to an Idempotency-Key retry (24 h).",
    )
    idempotency_wait: float = Field(
        default=10.0,
        description="Seconds a retry waits for the first request with its Idempotency-Key to finish before a CONFLICT.",
    )
    # -- billing (README "Billing views") --
    allow_overpayment: list[str] = Field(
        default=[],
        description='Tenants whose payments may take a Claim or Invoice past its total (a credit): a JSON list, ["*"] for all.',
    )

    def overpayment_allowed(self, tenant: str) -> bool:
        return tenant in self.allow_overpayment or "*" in self.allow_overpayment

    # -- patient pay (README "Patient pay: Stripe webhooks") --
    stripe_webhook_secrets: dict[str, list[SecretStr]] = Field(
        default={},
        description='Stripe webhook signing secrets per tenant, a JSON object {"tenant": ["whsec_new", "whsec_old"]}:'
        " every listed secret verifies (rotation); the one that verifies names the event's tenant. Empty: the"
        " webhook answers 400 to everything.",
    )
    stripe_tolerance_seconds: int = Field(
        default=300, description="Oldest `Stripe-Signature` timestamp accepted, in seconds (Stripe's default)."
    )
    # -- payer import (README "Importing from a payer") --
    payer_allow_loopback: bool = Field(
        default=False,
        description="Let the payer import fetch from a loopback address, also over plain http (a local payer).",
    )

    # -- clients (README "Mobile clients") --
    apq_allowlist: bool = Field(
        default=False, description="Run only stored (persisted) queries; new query texts are refused."
    )
    cache_control: str = Field(default="private, no-cache", description="Cache-Control of GET query responses.")
