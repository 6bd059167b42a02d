"""Posting a verified Stripe event: its PaymentReconciliation and the Invoice's status in one transaction, once per event."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random

from app import errors
from app.billing import paid, payable, subtract
from app.fhir.values import Resource, instant
from app.payments.events import HANDLED, PAYMENT, REFUND, Received, Unreadable, amount, read
from app.payments.signatures import SignatureRefused, Signatures
from app.settings import Settings
from app.store import Store
from app.store.payment_events import FAILED, PaymentEvents
from app.store.settlements import Settlement
from app.writes import Writer

log = logging.getLogger("fingate.payments")

ACCEPTED, REJECTED, WAITING, DUPLICATE, IGNORED = "accepted", "rejected", "waiting", "duplicate", "ignored"
OUTCOMES = (ACCEPTED, REJECTED, WAITING, DUPLICATE, IGNORED, FAILED, "processing")
ACTOR = "stripe-webhook"  # the audit log's `sub` of what a webhook posts
PROCESSOR = "Stripe"
# A claim this old that never finished was abandoned (its process died mid-posting; a posting takes seconds, bounded
# by the database's timeouts): the next delivery of the event takes it over.
ABANDONED_AFTER = timedelta(minutes=10)
CONFLICT_ATTEMPTS = 10  # a posting that loses a race to a concurrent one re-reads and tries again this often
# The refusals that are the event's own (its invoice, its amount, the rules): recorded as rejected, answered 2xx.
_REFUSALS = (errors.BAD_USER_INPUT, errors.STATUS_RULE, errors.NOT_FOUND, errors.FORBIDDEN)

_PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/payment-type"
_PAYMENT_KIND = "http://hl7.org/fhir/payment-kind"
_PAYMENT_METHOD = "http://terminology.hl7.org/CodeSystem/v2-0570"
_EVENTS = "https://api.stripe.com/v1/events"
_INTENTS = "https://api.stripe.com/v1/payment_intents"


class WebhookRefused(Exception):
    """A request answered 4xx/5xx with a JSON error (`code` is one of app.errors' codes)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _Rejected(Exception):
    """The event is recorded as `outcome` with this reason (and rule), and answered 2xx."""

    def __init__(self, reason: str, outcome: str = REJECTED, rule: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome
        self.rule = rule


@dataclass
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


class _PostingReads:
    """The rule reads of a posting's transaction, with the settlements also read in it: moving the Invoice to
    `balanced` must count the payment this same transaction created."""

    def __init__(self, reads: Any, store: Store, session: Any) -> None:
        self._reads = reads
        self._store = store
        self._session = session

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reads, name)

    async def settlements(self, targets: list[str]) -> dict[str, Settlement]:
        return await self._store.settlements(targets, responses=False, session=self._session)


def _conflict(exc: BaseException) -> bool:
    return isinstance(exc, errors.FinGateError) and exc.code == errors.CONFLICT


def _refused(error: errors.FinGateError) -> _Rejected:
    return _Rejected(error.message, rule=error.extra.get("rule"))


def _money(value: Decimal, currency: str) -> dict[str, Any]:
    return {"value": value, "currency": currency}


def _method(card: Mapping[str, Any]) -> dict[str, Any]:
    debit = card.get("funding") == "debit"
    code, display = ("DEBC", "Debit Card") if debit else ("CCCA", "Credit Card")
    return {"coding": [{"system": _PAYMENT_METHOD, "code": code, "display": display}], "text": "card"}


def _expiration(card: Mapping[str, Any]) -> str | None:
    year, month = card.get("exp_year"), card.get("exp_month")
    if isinstance(year, int) and isinstance(month, int) and 1000 <= year <= 9999 and 1 <= month <= 12:
        return f"{year:04d}-{month:02d}"
    return None


def reconciliation(received: Received, invoice: Resource, value: Decimal, when: datetime) -> Resource:
    """The PaymentReconciliation of a payment (value > 0) or a refund (value < 0) of `invoice` by card via Stripe."""
    created = instant(when)
    card = received.card
    doc: Resource = {
        "resourceType": "PaymentReconciliation",
        "status": "active",
        "type": {"coding": [{"system": _PAYMENT_TYPE, "code": "payment" if value > 0 else "adjustment"}]},
        "kind": {"coding": [{"system": _PAYMENT_KIND, "code": "online"}]},
        "identifier": [{"system": _EVENTS, "value": received.event_id}],
        "created": created,
        "date": created[:10],
        "outcome": "complete",
        "disposition": f"{PROCESSOR} {received.event_type} ({'payment' if value > 0 else 'refund'})",
        "method": _method(card),
        "processor": PROCESSOR,
        "amount": _money(value, received.currency),
        "allocation": [
            {"target": {"reference": f"Invoice/{invoice['id']}"}, "amount": _money(value, received.currency)}
        ],
    }
    if received.payment_intent:
        doc["referenceNumber"] = received.payment_intent
        doc["paymentIdentifier"] = {"system": _INTENTS, "value": received.payment_intent}
    if isinstance(card.get("brand"), str):
        doc["cardBrand"] = card["brand"]
    if isinstance(card.get("last4"), str):
        doc["accountNumber"] = card["last4"]
    if expiration := _expiration(card):
        doc["expirationDate"] = expiration
    payer = invoice.get("recipient") or invoice.get("subject")
    if isinstance(payer, dict) and str(payer.get("reference", "")).split("/")[0] in ("Patient", "RelatedPerson"):
        doc["paymentIssuer"] = {"reference": payer["reference"]}
    return doc


def _settled(invoice: Resource, settlement: Settlement) -> bool:
    balance = subtract(payable(invoice), paid(settlement))
    return bool(payable(invoice)) and all(v == 0 for v in balance.values())


class Payments:
    """The Stripe webhook's domain side: verify, record once, post; built once at start-up."""

    def __init__(
        self, store: Store, settings: Settings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        secrets = {t: [s.get_secret_value() for s in listed] for t, listed in settings.stripe_webhook_secrets.items()}
        self.signatures = Signatures(secrets, settings.stripe_tolerance_seconds)
        self.overpayment_allowed = settings.overpayment_allowed
        self.clock = clock

    async def receive(self, payload: bytes, signature: str | None, request_id: str = "-") -> Reply:
        """One webhook delivery. WebhookRefused (400) records nothing; every verified event is recorded once."""
        try:
            tenant = self.signatures.tenant(payload, signature)
        except SignatureRefused as exc:
            raise WebhookRefused(400, errors.UNAUTHENTICATED, str(exc)) from None
        try:
            event = json.loads(payload, parse_float=Decimal)
        except (ValueError, UnicodeError):
            raise WebhookRefused(400, errors.BAD_USER_INPUT, "the signed payload is not JSON") from None
        if not (isinstance(event, dict) and isinstance(event.get("id"), str) and isinstance(event.get("type"), str)):
            raise WebhookRefused(400, errors.BAD_USER_INPUT, "the signed payload is not a Stripe event (id, type)")
        store = self.store.for_tenant(tenant)
        events = store.received_events()
        event_id = event["id"]
        fields = {"type": event["type"], "livemode": bool(event.get("livemode"))}
        now = self.clock()
        try:
            if await events.claim(event_id, fields, now, now - ABANDONED_AFTER) is None:
                await events.record_duplicate(event_id, fields, now)
                return Reply(200, {"received": True, "eventId": event_id, "outcome": DUPLICATE})
        except Exception as exc:  # the database is down: nothing recorded, Stripe retries
            log.error("stripe event %s: could not be recorded", event_id, exc_info=exc)
            code = exc.code if isinstance(exc, errors.FinGateError) else errors.UNAVAILABLE
            raise WebhookRefused(
                503, code, f"the event was not recorded (request {request_id}); Stripe retries it"
            ) from None
        try:
            outcome = await self._post(store, events, event, tenant, request_id)
        except Exception as exc:  # an outage or a fault: nothing was posted, and Stripe's retry will post it
            reason = exc.message if isinstance(exc, errors.FinGateError) else f"internal error (request {request_id})"
            log.error("stripe event %s: posting failed: %s", event_id, reason, exc_info=exc)
            try:
                await events.fail(event_id, reason)
            except Exception:  # noqa: BLE001 - the database may be the failure; the event stays `processing`
                log.exception("stripe event %s: could not record the failure", event_id)
            code = exc.code if isinstance(exc, errors.FinGateError) else errors.INTERNAL
            raise WebhookRefused(503, code, f"the event was not posted ({reason}); Stripe retries it") from None
        return Reply(200, {"received": True, "eventId": event_id, "outcome": outcome})

    async def _post(
        self, store: Store, events: PaymentEvents, event: dict[str, Any], tenant: str, request_id: str
    ) -> str:
        event_id = event["id"]
        if event["type"] not in HANDLED:
            reason = f"FinGate posts only {', '.join(sorted(HANDLED))}; nothing to do for {event['type']}"
            await events.settle(event_id, {"outcome": IGNORED, "reason": reason})
            return IGNORED
        try:
            received = read(event)
            await events.settle(event_id, self._facts(received))
            if received.tenant is not None and received.tenant != tenant:
                raise _Rejected(
                    f"metadata.fingate_tenant names tenant {received.tenant!r}, but the event was signed with "
                    f"tenant {tenant!r}'s secret"
                )
            writer = Writer(store, ACTOR, request_id, allow_overpayment=self.overpayment_allowed(tenant))
            post = self._payment if received.action == PAYMENT else self._refund
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_conflict),
                stop=stop_after_attempt(CONFLICT_ATTEMPTS),
                wait=wait_random(0, 0.05),
                reraise=True,
            ):
                with attempt:
                    return await post(store, events, writer, received)
        except Unreadable as exc:
            rejected = _Rejected(str(exc))
        except _Rejected as exc:
            rejected = exc
        except errors.FinGateError as exc:
            if exc.code not in _REFUSALS:
                raise
            rejected = _refused(exc)
        await events.settle(
            event_id, {"outcome": rejected.outcome, "reason": rejected.reason, "rule": rejected.rule, "produced": []}
        )
        return rejected.outcome

    @staticmethod
    def _facts(received: Received) -> dict[str, Any]:
        return {
            "action": received.action,
            "paymentIntent": received.payment_intent,
            "currency": received.currency,
            "amountMinor": received.minor,
            "invoice": received.invoice,
        }

    async def _invoice(self, store: Store, invoice_id: str | None, currency: str) -> Resource:
        if invoice_id is None:
            raise _Rejected("the event's metadata names no Invoice (metadata.fingate_invoice)")
        invoice = await store.get("Invoice", invoice_id)
        if invoice is None:
            raise _Rejected(f"no Invoice/{invoice_id} in this tenant")
        billed = sorted(c or "(no currency)" for c in payable(invoice))
        if billed != [currency]:
            raise _Rejected(
                f"Invoice/{invoice_id} is billed in {', '.join(billed) or 'no amount'}, the event is in {currency}"
            )
        return invoice

    def _when(self, received: Received) -> datetime:
        return datetime.fromtimestamp(received.created, UTC) if received.created is not None else self.clock()

    async def _set_status(
        self, writer: Writer, store: Store, invoice: Resource, status: str, tx: Any, reads: Any
    ) -> Resource:
        return await writer.update(
            "Invoice",
            invoice["id"],
            {**invoice, "status": status},
            invoice["meta"]["versionId"],
            session=tx,
            reads=reads,
        )

    async def _payment(self, store: Store, events: PaymentEvents, writer: Writer, received: Received) -> str:
        if received.payment_intent is None:
            raise _Rejected("the payment names no payment intent")
        if received.minor <= 0:
            raise _Rejected(f"the payment's amount is {received.minor}: nothing was paid")
        value = amount(received.minor, received.currency)
        invoice = await self._invoice(store, received.invoice, received.currency)
        ref = f"Invoice/{invoice['id']}"
        async with store.transaction() as tx:
            reads = _PostingReads(writer.reads.within(tx), writer.reads.store, tx)
            await events.lock_intent(received.payment_intent, tx)
            earlier = await events.for_intent(received.payment_intent, PAYMENT, (ACCEPTED,), session=tx)
            if earlier:
                # A Checkout payment is reported twice (checkout.session.completed and payment_intent.succeeded).
                raise _Rejected(
                    f"payment intent {received.payment_intent} was posted by event {earlier[0]['eventId']}",
                    outcome=DUPLICATE,
                )
            pr = await writer.create(
                "PaymentReconciliation",
                reconciliation(received, invoice, value, self._when(received)),
                session=tx,
                reads=reads,
            )
            produced = [f"PaymentReconciliation/{pr['id']}"]
            refunded = 0
            for waiting in await events.for_intent(received.payment_intent, REFUND, (WAITING,), session=tx):
                settled = await self._apply_waiting(waiting, received, invoice, refunded, writer, events, tx, reads)
                if settled is not None:
                    refunded, made = settled
                    produced.append(made)
            now_paid = (await store.settlements([ref], responses=False, session=tx)).get(ref, Settlement())
            if invoice["status"] == "issued" and _settled(invoice, now_paid):
                await self._set_status(writer, store, invoice, "balanced", tx, reads)
                produced.append(ref)
            await events.settle(
                received.event_id,
                {"outcome": ACCEPTED, "reason": None, "amount": value, "produced": produced, "invoice": invoice["id"]},
                session=tx,
            )
        return ACCEPTED

    async def _apply_waiting(
        self,
        waiting: dict[str, Any],
        payment: Received,
        invoice: Resource,
        refunded: int,
        writer: Writer,
        events: PaymentEvents,
        tx: Any,
        reads: Any,
    ) -> tuple[int, str] | None:
        """A refund that came before its payment, posted now in the payment's transaction: (refunded so far, its PR)."""
        event_id = waiting["eventId"]
        problem = None
        if waiting.get("invoice") not in (None, invoice["id"]):
            problem = f"the refund names Invoice/{waiting['invoice']}, its payment Invoice/{invoice['id']}"
        elif waiting.get("currency") != payment.currency:
            problem = f"the refund is in {waiting.get('currency')}, its payment in {payment.currency}"
        elif waiting["amountMinor"] <= refunded or waiting["amountMinor"] > payment.minor:
            problem = f"refunded total {waiting['amountMinor']} does not follow {refunded} (of {payment.minor} paid)"
        if problem is not None:
            await events.settle(event_id, {"outcome": REJECTED, "reason": problem, "produced": []}, session=tx)
            return None
        refund = dataclasses.replace(payment, event_id=event_id, event_type="charge.refunded")
        delta = amount(waiting["amountMinor"] - refunded, payment.currency)
        made = await writer.create(
            "PaymentReconciliation",
            reconciliation(refund, invoice, -delta, waiting["receivedAt"]),
            session=tx,
            reads=reads,
        )
        ref = f"PaymentReconciliation/{made['id']}"
        reason = f"kept until its payment arrived; posted with event {payment.event_id}"
        await events.settle(
            event_id,
            {"outcome": ACCEPTED, "reason": reason, "amount": -delta, "produced": [ref], "invoice": invoice["id"]},
            session=tx,
        )
        return waiting["amountMinor"], ref

    async def _refund(self, store: Store, events: PaymentEvents, writer: Writer, received: Received) -> str:
        intent = received.payment_intent
        if intent is None:
            raise _Rejected("the refunded charge names no payment intent")
        amount(received.minor, received.currency)  # convertible, or rejected now rather than when its payment comes
        async with store.transaction() as tx:
            reads = _PostingReads(writer.reads.within(tx), writer.reads.store, tx)
            await events.lock_intent(intent, tx)
            payments = await events.for_intent(intent, PAYMENT, (ACCEPTED,), session=tx)
            if not payments:
                reason = f"no payment of {intent} is posted yet: the refund is kept and posted with it"
                await events.settle(received.event_id, {"outcome": WAITING, "reason": reason}, session=tx)
                return WAITING
            payment = payments[0]
            invoice_id = payment["invoice"]
            if received.invoice not in (None, invoice_id):
                raise _Rejected(f"the refund names Invoice/{received.invoice}, its payment Invoice/{invoice_id}")
            if received.currency != payment["currency"]:
                raise _Rejected(f"the refund is in {received.currency}, its payment in {payment['currency']}")
            refunds = await events.for_intent(intent, REFUND, (ACCEPTED,), session=tx)
            refunded = max((r["amountMinor"] for r in refunds), default=0)
            if received.minor <= refunded:
                raise _Rejected(f"{received.minor} refunded in total is already posted ({refunded} so far)")
            invoice = await self._invoice(store, invoice_id, received.currency)
            produced = []
            if invoice["status"] == "balanced":  # reopened first: a balanced Invoice's payments do not change
                await self._set_status(writer, store, invoice, "issued", tx, reads)
                produced.append(f"Invoice/{invoice_id}")
            value = -amount(received.minor - refunded, received.currency)
            pr = await writer.create(
                "PaymentReconciliation",
                reconciliation(received, invoice, value, self._when(received)),
                session=tx,
                reads=reads,
            )
            produced.insert(0, f"PaymentReconciliation/{pr['id']}")
            await events.settle(
                received.event_id,
                {"outcome": ACCEPTED, "reason": None, "amount": value, "produced": produced, "invoice": invoice_id},
                session=tx,
            )
        return ACCEPTED
