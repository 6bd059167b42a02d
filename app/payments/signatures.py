"""Which tenant signed a webhook: `Stripe-Signature` checked by the official `stripe` library against each tenant's secrets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class SignatureRefused(Exception):
    """No configured secret verifies the request (or its timestamp is too old): HTTP 400, nothing recorded."""


class Signatures:
    """Every tenant's webhook secrets (several at once while one is rotated), built once at start-up."""

    def __init__(self, secrets: Mapping[str, Sequence[str]], tolerance: int) -> None:
        owners: dict[str, str] = {}
        for tenant, listed in secrets.items():
            for secret in listed:
                if owners.setdefault(secret, tenant) != tenant:
                    # The secret that verifies names the tenant: one shared by two tenants names neither.
                    raise ValueError(f"a Stripe webhook secret is listed for both {owners[secret]!r} and {tenant!r}")
        self.owners = owners
        self.tolerance = tolerance

    @property
    def configured(self) -> bool:
        return bool(self.owners)

    def tenant(self, payload: bytes, header: str | None) -> str:
        """The tenant whose secret signed `payload`; SignatureRefused when none does."""
        if not self.owners:
            raise SignatureRefused("no Stripe webhook secret is configured (FINGATE_STRIPE_WEBHOOK_SECRETS)")
        if not header:
            raise SignatureRefused("no Stripe-Signature header")
        import stripe  # at the first webhook, not with the app: with `requests`, 40 ms off the way to /readyz

        last: stripe.SignatureVerificationError | None = None
        for secret, tenant in self.owners.items():
            try:
                stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=self.tolerance)
            except stripe.SignatureVerificationError as exc:
                last = exc
                continue
            return tenant
        # The library says why (no signatures for the scheme, none matching, timestamp outside the tolerance).
        raise SignatureRefused(f"Stripe-Signature refused: {last.user_message if last else 'no secret matched'}")
