"""R5 `subscription-notification` Bundles, and their Standard Webhooks signature (the `standardwebhooks` library)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from standardwebhooks import Webhook

from app.fhir.decimals import plain_text
from app.fhir.values import Resource, instant

# SubscriptionStatus.type of what the dispatcher sends (R5 `subscription-notification-type`)
EVENT, HANDSHAKE, HEARTBEAT = "event-notification", "handshake", "heartbeat"


def bundle(
    subscription: Resource, topic: str, event: Resource, number: int, resource: Resource | None
) -> dict[str, Any]:
    """The notification of one event: a SubscriptionStatus first, then the focus as the Subscription's
    `content` asks (`empty`: nothing; `id-only`: its reference; `full-resource`: the version written)."""
    content = subscription.get("content") or "id-only"
    focus = f"{event['resourceType']}/{event['id']}/_history/{event['versionId']}"
    notification_event: dict[str, Any] = {"eventNumber": str(number), "timestamp": instant(event["when"])}
    entries: list[dict[str, Any]] = []
    if content != "empty":
        notification_event["focus"] = {"reference": focus}
        entry: dict[str, Any] = {"fullUrl": focus}
        if content == "full-resource" and resource is not None:
            entry["resource"] = resource
        entries.append(entry)
    status = {**_status(subscription, topic, EVENT, number), "notificationEvent": [notification_event]}
    return {
        "resourceType": "Bundle",
        "id": message_id(subscription["id"], event["position"]),
        "type": "subscription-notification",
        "timestamp": instant(event["when"]),
        "entry": [{"fullUrl": f"urn:uuid:status-{subscription['id']}-{number}", "resource": status}, *entries],
    }


def control(subscription: Resource, kind: str, number: int, when: datetime, msg_id: str) -> dict[str, Any]:
    """A handshake (to a `requested` Subscription) or a heartbeat: a notification Bundle holding only the
    SubscriptionStatus, with the events delivered so far."""
    status = _status(subscription, subscription.get("topic"), kind, number)
    return {
        "resourceType": "Bundle",
        "id": msg_id,
        "type": "subscription-notification",
        "timestamp": instant(when),
        "entry": [{"fullUrl": f"urn:uuid:{kind}-{msg_id}", "resource": status}],
    }


def _status(subscription: Resource, topic: Any, kind: str, number: int) -> dict[str, Any]:
    """The SubscriptionStatus every notification Bundle starts with (a handshake's Subscription is `requested`)."""
    return {
        "resourceType": "SubscriptionStatus",
        "status": "requested" if kind == HANDSHAKE else "active",
        "type": kind,
        "eventsSinceSubscriptionStart": str(number),
        "subscription": {"reference": f"Subscription/{subscription['id']}"},
        "topic": topic,
    }


def message_id(subscription: str, position: int) -> str:
    """Stable per (Subscription, event): a redelivery after a crash carries the same id, for deduplication."""
    return f"{subscription}-{position}"


def body(notification: Any) -> str:
    """FHIR JSON, compact: decimals keep their digits (never through a binary float)."""
    if isinstance(notification, dict):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{body(v)}" for k, v in notification.items()) + "}"
    if isinstance(notification, list):
        return "[" + ",".join(body(v) for v in notification) + "]"
    if isinstance(notification, Decimal):
        return plain_text(notification)
    return json.dumps(notification, ensure_ascii=False)


_PREFIX = "whsec_"  # Standard Webhooks' secret format: the prefix, then the key in base64


def subscription_secret(server_secret: str, tenant: str, subscription: str) -> str:
    """The secret one Subscription's notifications are signed with: derived from the server's (HMAC-SHA256 of the
    tenant and the Subscription's id), so each receiver holds its own and none can sign for another tenant's or
    another Subscription's receiver. Nothing is stored: the server's secret and the two names give it again."""
    key = base64.b64decode(server_secret.removeprefix(_PREFIX))
    derived = hmac.new(key, f"fingate rest-hook {tenant}/{subscription}".encode(), hashlib.sha256).digest()
    return _PREFIX + base64.b64encode(derived).decode()


def signed_headers(secret: str, msg_id: str, when: datetime, data: str) -> dict[str, str]:
    """The Standard Webhooks headers of `data`: `webhook-id`, `webhook-timestamp`, `webhook-signature`."""
    return {
        "content-type": "application/fhir+json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, data),
    }
