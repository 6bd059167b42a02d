"""The Subscription root: change feeds of the served types, fed by the outbox, over graphql-transport-ws."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import strawberry
from strawberry.types.base import StrawberryOptional

from app.graphql.resolvers import search_params
from app.hooks.notification import EVENT

AFTER = (
    "after",
    str,
    False,
    "Resume after this event position (the `position` of the last event you have): every later event, in order. "
    "Leave it out to start with the next write.",
)
_EVENT_FIELDS: list[tuple[str, object, str]] = [
    ("position", str, "Where the event is in the tenant's order of writes: give it as `after:` to resume."),
    ("interaction", str, "`create`, `update` or `delete`."),
    ("id", strawberry.ID, "The resource id."),
    ("versionId", str, "The version written (for a delete: the version removed)."),
    ("previousStatus", str | None, "The status before the write (null for a create, or a type without status)."),
    ("status", str | None, "The status after the write (null for a delete, or a type without status)."),
    ("when", str, "When the write was made, a FHIR instant (UTC)."),
    ("requestId", str | None, "The request id of the write (the response's X-Request-ID)."),
]


def change_type(resource_type: str, output: type) -> type:
    """`<Type>Change`: one event, and the version it wrote (selected like any query, references traversable)."""
    name = f"{resource_type}Change"
    cls = type(name, (), {"__module__": __name__})

    async def resource(root: Any, info: strawberry.Info) -> Any:
        return await info.context.version(resource_type, root["id"], root["versionId"])

    resource.__annotations__["return"] = StrawberryOptional(output)
    cls.__annotations__ = {python: kind for python, kind, _ in _EVENT_FIELDS}
    for python, _, text in _EVENT_FIELDS:
        setattr(cls, python, strawberry.field(name=python, description=text))
    cls.resource = strawberry.field(  # type: ignore[attr-defined]
        resolver=resource,
        name="resource",
        description=f"The {resource_type} as this event wrote it (for a delete: the version removed).",
    )
    return strawberry.type(cls, name=name, description=f"One write of a {resource_type}, from the outbox.")


Keep = Callable[[Mapping[str, Any]], bool] | None


def feed(
    resource_type: str, arg_codes: Mapping[str, str], keep: Callable[[Mapping[str, Any], dict[str, Any]], Keep]
) -> Any:
    """A subscription resolver: the events of `resource_type` that `keep(event)` accepts (made from the arguments)."""

    async def subscribe(root: None, info: Any, **args: Any) -> AsyncGenerator[Any, None]:
        params = search_params(arg_codes, args)
        async for event in info.context.changes(resource_type, args.get("after"), params, keep(args, params)):
            yield event

    return subscribe


def everything(args: Mapping[str, Any], params: dict[str, Any]) -> Keep:
    return None


def claim_changed(args: Mapping[str, Any], params: dict[str, Any]) -> Keep:
    """`ClaimChanged(id:, status:)`: one Claim's writes, or those that leave a Claim in `status`."""
    id, status = args.get("id"), args.get("status")
    return lambda e: (id is None or e["id"] == id) and (status is None or e["status"] == status)


def created(args: Mapping[str, Any], params: dict[str, Any]) -> Keep:
    return lambda e: e["interaction"] == "create"


@strawberry.type(
    name="RestHookAttempt", description="One POST of a rest-hook notification, as the dispatcher recorded it."
)
class RestHookAttempt:
    when: str = strawberry.field(description="When, a FHIR instant (UTC).")
    type: str = strawberry.field(
        description="What was sent (R5 SubscriptionStatus.type): `event-notification`, `handshake` (activating a "
        "`requested` Subscription) or `heartbeat` (after `heartbeatPeriod` seconds with nothing sent)."
    )
    position: str = strawberry.field(description="The event's outbox position.")
    eventNumber: int = strawberry.field(description="The notification's `eventNumber` for this Subscription.")
    webhookId: str = strawberry.field(
        description="The `webhook-id` header: the same on every retry (deduplicate by it)."
    )
    attempt: int = strawberry.field(description="1 for the first try, then each retry.")
    outcome: str = strawberry.field(
        description="`delivered`, `failed` (retried, or dead-lettered after the last) or `refused` (target not allowed)."
    )
    status: int | None = strawberry.field(description="The endpoint's HTTP status, when it answered.")
    error: str | None = strawberry.field(description="What went wrong, if anything.")
    endpoint: str | None = strawberry.field(description="Where it was sent.")


@strawberry.type(name="RestHookStatus", description="A rest-hook Subscription's delivery state (FHIR's `$status`).")
class RestHookStatus:
    state: str = strawberry.field(
        description="`active`, or `dead-letter` once a notification ran out of attempts (delivery stops there, keeping order, until the Subscription is updated)."
    )
    eventsSinceSubscriptionStart: int = strawberry.field(
        description="Notifications delivered since the Subscription started."
    )
    position: str = strawberry.field(description="The outbox position the dispatcher has handled up to.")
    lastError: str | None = strawberry.field(description="The last failure, cleared by the next delivery.")


def position_field() -> Any:
    async def resolve(root: None, info: strawberry.Info) -> str:
        return str(await info.context.position())

    return strawberry.field(
        resolver=resolve,
        name="ChangesPosition",
        description="The position of the tenant's last write now: read what you need, then subscribe with `after:` "
        "this position, and no write in between is missed.",
    )


def status_field() -> Any:
    # The schema's default resolver reads dicts: these answer with dicts shaped like their types.
    async def resolve(root: None, info: strawberry.Info, id: strawberry.ID) -> RestHookStatus | None:
        found = await info.context.hook_status(str(id))
        if found is None:
            return None
        return {**found, "position": str(found["position"])}  # type: ignore[return-value]

    return strawberry.field(
        resolver=resolve,
        name="SubscriptionStatus",
        description="A rest-hook Subscription's `$status`: null until the dispatcher has seen it.",
    )


def secret_field() -> Any:
    async def resolve(root: None, info: strawberry.Info, id: strawberry.ID) -> str | None:
        return await info.context.hook_secret(str(id))  # type: ignore[no-any-return]

    return strawberry.field(
        resolver=resolve,
        name="SubscriptionSecret",
        description=(
            "The Standard Webhooks secret (`whsec_…`) this rest-hook Subscription's notifications are signed with, "
            "its own (no other Subscription's or tenant's receiver can verify or sign with it): give it to the "
            "receiver. Needs the right to update the Subscription; null when this server sends no rest-hooks."
        ),
    )


def attempts_field() -> Any:
    async def resolve(
        root: None, info: strawberry.Info, id: strawberry.ID, _count: int | None = None
    ) -> list[RestHookAttempt]:
        found = await info.context.hook_attempts(str(id), _count, info.path)
        # Attempts recorded before handshakes and heartbeats existed were all event notifications.
        return [{"type": EVENT, **a, "position": str(a["position"])} for a in found]  # type: ignore[misc]

    return strawberry.field(
        resolver=resolve,
        name="SubscriptionDeliveries",
        description=(
            "A rest-hook Subscription's delivery attempts, newest first (`_count`: at most this many, 20; a list"
            " stopping early says so in `extensions.truncated`)."
        ),
    )
