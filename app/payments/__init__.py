"""Patient pay through Stripe's webhooks: verified events posted once as PaymentReconciliations that settle Invoices."""

from app.payments.events import HANDLED, INVOICE_KEY, TENANT_KEY, amount
from app.payments.posting import OUTCOMES, Payments, Reply, WebhookRefused

__all__ = ["HANDLED", "INVOICE_KEY", "OUTCOMES", "TENANT_KEY", "Payments", "Reply", "WebhookRefused", "amount"]
