"""Automatic persisted queries (Apollo's protocol, version 1), kept in MongoDB so every instance knows them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from graphql import GraphQLError, GraphQLSchema, parse, validate

from app import errors
from app.graphql.typed import typed
from app.store import Store

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KNOWN_MAX = 10_000  # hashes remembered per process; a miss costs one read


def sha256(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def _wanted_hash(extensions: dict[str, Any] | None) -> str | None:
    """The `persistedQuery` extension's hash, None without the extension; BAD_USER_INPUT when malformed."""
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise errors.bad_input(
            "extensions.persistedQuery: only version 1 is supported", "extensions.persistedQuery.version"
        )
    wanted = persisted.get("sha256Hash")
    if not isinstance(wanted, str) or not _SHA256.match(wanted):
        raise errors.bad_input(
            "extensions.persistedQuery.sha256Hash: expected 64 lowercase hex digits",
            "extensions.persistedQuery.sha256Hash",
        )
    return wanted


def validation_errors(schema: GraphQLSchema, query: str) -> list[GraphQLError]:
    try:
        return validate(schema, typed(parse(query)))  # as the request path validates it
    except GraphQLError as error:
        return [error]


class PersistedQueries:
    """Turns a request's (query, extensions) into the text to run, registering or refusing as the protocol says."""

    def __init__(self, store: Store, schema: GraphQLSchema, allowlist: bool = False) -> None:
        self.store = store
        self.schema = schema
        self.allowlist = allowlist
        self._known: dict[str, str] = {}

    async def resolve(
        self, query: str | None, extensions: dict[str, Any] | None, runs_as: Callable[[str], str] | None = None
    ) -> str | None:
        """`runs_as`: the text that actually runs for a query text (an instance-level `$graphql` query's rewrite),
        which is what must validate for the query to be stored."""
        wanted = _wanted_hash(extensions)
        if query is None:
            return None if wanted is None else await self._stored_or_not_found(wanted)
        digest = sha256(query)
        if wanted is not None and wanted != digest:
            raise errors.bad_input("provided sha256Hash does not match query", "extensions.persistedQuery.sha256Hash")
        if self.allowlist:
            if await self._lookup(digest) is None:
                raise errors.FinGateError(
                    errors.PERSISTED_QUERY_NOT_ALLOWED,
                    "only stored queries run on this server (allowlist mode): store it with `fingate persist FILE`",
                )
        elif wanted is not None:
            await self._register(digest, query, runs_as)
        return query

    async def stored_text(self, extensions: dict[str, Any] | None) -> str | None:
        """The stored text a request sent by its hash alone stands for; None without a well-formed hash, or for a
        hash not stored (the request itself then gets the protocol's answer)."""
        try:
            wanted = _wanted_hash(extensions if isinstance(extensions, dict) else None)
        except errors.FinGateError:
            return None
        return None if wanted is None else await self._lookup(wanted)

    async def _stored_or_not_found(self, wanted: str) -> str:
        query = await self._lookup(wanted)
        if query is None:
            # Apollo clients retry with the full text on exactly this message and code.
            raise errors.FinGateError(errors.PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound")
        return query

    async def _lookup(self, digest: str) -> str | None:
        query = self._known.get(digest)
        if query is None:
            query = await self.store.get_query(digest)
            if query is not None:
                self._remember(digest, query)
        return query

    async def _register(self, digest: str, query: str, runs_as: Callable[[str], str] | None) -> None:
        # Only valid documents are stored: anyone may register, garbage must not pile up.
        if digest in self._known:
            return
        try:
            runnable = runs_as(query) if runs_as is not None else query
        except errors.FinGateError:
            return
        if validation_errors(self.schema, runnable):
            return
        await self.store.put_query(digest, query)
        self._remember(digest, query)

    def _remember(self, digest: str, query: str) -> None:
        if len(self._known) >= _KNOWN_MAX:
            self._known.pop(next(iter(self._known)))
        self._known[digest] = query


async def persist(store: Store, schema: GraphQLSchema, files: Iterable[Path]) -> list[tuple[Path, str]]:
    """Stores each file's text under its sha256 (the allowlist); returns (file, problem) for those refused."""
    refused = []
    texts = {path: path.read_text() for path in files}
    stored = await store.stored_queries([sha256(q) for q in texts.values()])  # one read, not a write each
    for path, query in texts.items():
        problems = validation_errors(schema, query)
        if problems:
            refused.append((path, "; ".join(p.message for p in problems)))
        elif sha256(query) not in stored:
            await store.put_query(sha256(query), query)
    return refused
