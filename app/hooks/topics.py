"""The built-in SubscriptionTopics of the financial workflow, as data: which writes each one reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BASE = "http://fingate.dev/fhir/SubscriptionTopic/"  # canonical URLs of FinGate's own topics
INTERACTIONS = ("create", "update", "delete")


@dataclass(frozen=True)
class Topic:
    code: str
    resource_type: str
    title: str
    interactions: tuple[str, ...] = INTERACTIONS
    becomes: str | None = None  # reported when a write leaves the resource in this status (and it was not before)
    query: str | None = None  # R5 `queryCriteria.current`, for the SubscriptionTopic resource

    @property
    def url(self) -> str:
        return BASE + self.code

    def matches(self, event: Mapping[str, Any]) -> bool:
        if event["resourceType"] != self.resource_type or event["interaction"] not in self.interactions:
            return False
        return self.becomes is None or (event["status"] == self.becomes and event["previousStatus"] != self.becomes)


TOPICS: dict[str, Topic] = {
    t.url: t
    for t in (
        Topic("claim-submitted", "Claim", "A Claim was submitted (created)", ("create",)),
        Topic("claim-activated", "Claim", "A Claim became active", ("create", "update"), "active", "status=active"),
        Topic("claim-cancelled", "Claim", "A Claim was cancelled", ("update",), "cancelled", "status=cancelled"),
        Topic("claim-response-received", "ClaimResponse", "A ClaimResponse was received", ("create",)),
        Topic("payment-posted", "PaymentReconciliation", "A payment was posted (became active)", ("create", "update"), "active", "status=active"),
        Topic("invoice-issued", "Invoice", "An Invoice was issued", ("create", "update"), "issued", "status=issued"),
        Topic("invoice-balanced", "Invoice", "An Invoice was balanced", ("update",), "balanced", "status=balanced"),
        Topic("coverage-changed", "Coverage", "A Coverage was created, changed or deleted"),
    )
}  # fmt: skip


def resource(topic: Topic) -> dict[str, Any]:
    """The topic as an R5 SubscriptionTopic resource (stored at start-up, so clients can read and search it)."""
    trigger: dict[str, Any] = {
        "description": topic.title,
        "resource": f"http://hl7.org/fhir/StructureDefinition/{topic.resource_type}",
        "supportedInteraction": list(topic.interactions),
    }
    if topic.query:
        trigger["queryCriteria"] = {"current": topic.query, "requireBoth": False}
    return {
        "resourceType": "SubscriptionTopic",
        "id": f"fingate-{topic.code}",
        "url": topic.url,
        "status": "active",
        "title": topic.title,
        "description": f"{topic.title}. Notifications carry the {topic.resource_type} version written.",
        "resourceTrigger": [trigger],
        "notificationShape": [{"resource": topic.resource_type}],
    }


async def ensure_topics(writer: Any) -> None:
    """Store the built-in topics in the writer's tenant (unchanged ones are not written again)."""
    for topic in TOPICS.values():
        await writer.put("SubscriptionTopic", resource(topic))
