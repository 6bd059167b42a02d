"""What delivers out of an instance: the rest-hook dispatcher and the clearinghouse hand-off, from settings."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.clearinghouse import Clearinghouse
from app.hooks.dispatcher import Retry, from_settings, policy_from
from app.settings import Settings
from app.store import Store

log = logging.getLogger("fingate.dispatch")


def runners(store: Store, settings: Settings) -> list[Callable[[], Awaitable[Any]]]:
    """The loops to run (`fingate serve` with FINGATE_DISPATCH on, or `fingate dispatch`), each leased per
    Subscription or tenant in the database so instances never deliver the same event at once."""
    found: list[Callable[[], Awaitable[Any]]] = []
    hooks = from_settings(store, settings)
    if hooks is None:
        log.info("no FINGATE_WEBHOOK_SECRET: rest-hook Subscriptions are not delivered")
    else:
        found.append(hooks.run)
    if settings.clearinghouse_url:
        retry = Retry(settings.hooks_max_attempts, settings.hooks_backoff_seconds, settings.hooks_backoff_max_seconds)
        clearinghouse = Clearinghouse(
            store, settings.clearinghouse_url, policy_from(settings), retry, settings.dispatch_lease_seconds
        )
        found.append(clearinghouse.run)
    return found
