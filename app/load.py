"""`fingate load`: FHIR JSON files, arrays and Bundles into the store, through the write path."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from app import bundles, errors, rules
from app.bundles import RANK
from app.fhir.references import by_type
from app.fhir.values import Resource
from app.rules.balances import PAYMENT, contributions
from app.store.settlements import Payment, Settlement
from app.writes import Writer, new_id

_RANK = RANK


@dataclass
class Item:
    """One unit of loading: a resource, or a transaction Bundle's entries (all or nothing)."""

    source: str
    resources: list[Resource]
    transaction: bool = False
    entries: list[bundles.Entry] = field(default_factory=list)  # a transaction's, for app.bundles

    @property
    def rank(self) -> int:
        return min((_RANK.get(r.get("resourceType", ""), len(_RANK)) for r in self.resources), default=len(_RANK))


@dataclass
class LoadReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        return self.created + self.updated + self.unchanged


def _bundle_resources(bundle: Resource) -> list[Resource]:
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    ids: dict[str, str] = {}
    resources = []
    for entry in entries:
        resource = dict(entry["resource"])
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
            resource.setdefault("id", new_id())
            ids[full_url] = f"{resource.get('resourceType')}/{resource['id']}"
        resources.append(resource)
    return [bundles.rewrite(r, ids) for r in resources] if ids else resources


def _entry(entry: Resource) -> bundles.Entry:
    """A transaction Bundle's entry; without a `request`, a PUT when the resource has an id (it keeps it), else a POST."""
    resource = entry.get("resource")
    given = entry.get("request")
    request: dict[str, Any] = given if isinstance(given, dict) else {}
    rtype = str(resource.get("resourceType")) if isinstance(resource, dict) else ""
    rid = resource.get("id") if isinstance(resource, dict) else None
    method = request.get("method") or ("PUT" if rid else "POST")
    url = request.get("url") or (f"{rtype}/{rid}" if method != "POST" else rtype)
    return bundles.Entry(
        method=str(method),
        url=str(url),
        resource=resource,
        full_url=entry.get("fullUrl"),
        if_match=request.get("ifMatch"),
        if_none_exist=request.get("ifNoneExist"),
    )


def items_from_json(data: Any, source: str) -> list[Item]:
    if isinstance(data, list):
        return [Item(f"{source}[{i}]", [r]) for i, r in enumerate(data)]
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        if data.get("type") == "transaction":
            entries = [_entry(e) for e in data.get("entry") or [] if isinstance(e, dict)]
            resources = [e.resource for e in entries if isinstance(e.resource, dict)]
            return [Item(source, resources, transaction=True, entries=entries)]
        resources = _bundle_resources(data)
        return [Item(f"{source}#entry[{i}]", [r]) for i, r in enumerate(resources)]
    return [Item(source, [data])]


def read_items(paths: Iterable[Path | str]) -> tuple[list[Item], list[tuple[str, str]]]:
    """Every loadable unit under `paths` in load order, and the files that could not be read."""
    items: list[Item] = []
    unreadable: list[tuple[str, str]] = []
    for path in map(Path, paths):
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        for file in files:
            if file.name.startswith("_"):  # indexes and notes beside the data, not FHIR
                continue
            try:
                data = json.loads(file.read_bytes(), parse_float=Decimal)
            except (OSError, ValueError) as exc:
                unreadable.append((str(file), f"not readable as JSON: {exc}"))
                continue
            items.extend(items_from_json(data, str(file)))
    items.sort(key=lambda item: item.rank)
    return items, unreadable


class _ChunkReads:
    """A bulk chunk's rule reads: its entries accepted so far (`pending`), then what the chunk references (read
    at once before its checks, `prefetch`), then the store; any other read or attribute is the wrapped rule
    reads' own (`reads`, bound to the chunk's transaction). A chunk costs a few reads, not one per resource.

    The balance rules' reads too: the totals of what the chunk's payments pay, and what is paid on them, are
    read once for the chunk (`prefetch`); what a payment is then told is paid on a target is that, plus the
    chunk's payments accepted before it (in `pending`), exactly what it would find committed had the payments
    before it each committed on their own."""

    def __init__(self, reads: Any, pending: dict[tuple[str, str], Resource]) -> None:
        self.reads = reads
        self.pending = pending
        self.known: dict[tuple[str, str], Resource | None] = {}
        self.known_amounts: dict[tuple[str, str], Resource | None] = {}
        self.paid: dict[str, Settlement] = {}  # committed, of the targets in `paid_read`
        self.paid_read: frozenset[str] = frozenset()
        self.paying: dict[tuple[str, str], list[tuple[str, Payment]]] = {}  # each pending payment's, worked out once

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reads, name)

    async def prefetch(self, entries: list[tuple[str, Resource]]) -> None:
        """What the rules will read for the chunk's entries, at once: the resources their reference rules name, and
        their payments' targets (totals, what is paid on them). The chunk's own entries are left out: they are
        new (not stored), and by the time an entry referencing one is checked, it is in `pending` if accepted."""
        own = {(t, r.get("id")) for t, r in entries}
        wanted = by_type(k for t, r in entries for k in rules.references_read(t, r, None) if k not in own)
        found = await self.reads.get_many(wanted) if wanted else {}
        self.known = {(t, id): found.get((t, id)) for t, ids in wanted.items() for id in ids}
        targets = list(dict.fromkeys(ref for t, r in entries if t == PAYMENT for ref in contributions(r)[0]))
        if targets:
            named = by_type((rtype, id) for rtype, id in (ref.split("/", 1) for ref in targets))
            amounts = await self.reads.amounts(named)
            self.known_amounts = {(t, id): amounts.get((t, id)) for t, ids in named.items() for id in ids}
            self.paid, self.paid_read = await self.reads.settlements(targets), frozenset(targets)

    async def get_many(self, ids_by_type: Mapping[str, list[str]]) -> dict[tuple[str, str], Resource]:
        return await self._cached(ids_by_type, self.known, self.reads.get_many)

    async def amounts(self, ids_by_type: Mapping[str, list[str]]) -> dict[tuple[str, str], Resource]:
        return await self._cached(ids_by_type, self.known_amounts, self.reads.amounts)

    async def _cached(
        self,
        ids_by_type: Mapping[str, list[str]],
        known: dict[tuple[str, str], Resource | None],
        read: Callable[[dict[str, list[str]]], Awaitable[dict[tuple[str, str], Resource]]],
    ) -> dict[tuple[str, str], Resource]:
        out: dict[tuple[str, str], Resource] = {}
        unknown: dict[str, list[str]] = {}
        for t, ids in ids_by_type.items():
            for id in ids:
                key = (t, id)
                if key in self.pending:
                    out[key] = self.pending[key]
                elif key in known:
                    if (doc := known[key]) is not None:
                        out[key] = doc
                else:
                    unknown.setdefault(t, []).append(id)
        return {**(await read(unknown) if unknown else {}), **out}

    async def settlements(self, targets: list[str]) -> dict[str, Settlement]:
        unread = [t for t in targets if t not in self.paid_read]
        committed = {**self.paid, **(await self.reads.settlements(unread) if unread else {})}
        chunk: dict[str, list[Payment]] = {}
        for key, resource in self.pending.items():
            if key[0] == PAYMENT:
                if key not in self.paying:
                    date = resource.get("date")
                    self.paying[key] = [
                        (ref, Payment(key[1], date if isinstance(date, str) else None, amounts))
                        for ref, amounts in contributions(resource)[0].items()
                    ]
                for ref, paid in self.paying[key]:
                    chunk.setdefault(ref, []).append(paid)
        out = {}
        for ref in dict.fromkeys(targets):
            stored = committed.get(ref, Settlement())
            if stored.payments or stored.benefit or ref in chunk:
                out[ref] = Settlement([*stored.payments, *chunk.get(ref, ())], dict(stored.benefit))
        return out


CHUNK = 250  # resources per transaction on the bulk path


def _key(item: Item) -> tuple[str, str]:
    resource = item.resources[0]
    return str(resource.get("resourceType")), str(resource.get("id"))


def _entries(items: list[Item]) -> list[tuple[str, Resource]]:
    """Single resources as `Writer.prepare` and `create_many` take them: (type, resource)."""
    return [(str(item.resources[0].get("resourceType")), item.resources[0]) for item in items]


async def _existing(writer: Writer, items: list[Item]) -> set[tuple[str, str]]:
    """Which of the single resources `items` are stored already (by type and id)."""
    named = (item.resources[0] for item in items)
    ids = by_type(
        (r["resourceType"], r["id"])
        for r in named
        if isinstance(r.get("id"), str) and isinstance(r.get("resourceType"), str)
    )
    return set(await writer.store.get_by_type(ids, fields=("id",))) if ids else set()


async def _load_chunk(
    writer: Writer,
    items: list[Item],
    report: LoadReport,
    prepared: list[Resource | errors.FinGateError] | None = None,
    existing: set[tuple[str, str]] | None = None,
) -> None:
    """Single resources (not transaction Bundles), in load order: an existence check for all (`existing`, if
    the caller read it already), then each run of new resources in one transaction (`_create_run`; payments
    too: the balance rules see the run's earlier payments, see `_ChunkReads`), and what must go one by one
    through `put` between runs: a resource already stored (an update, unchanged) and the same id again. Each
    resource is still checked and reported on its own. `prepared`: `Writer.prepare` of the items, if done
    already (a new resource's checks)."""
    if existing is None:
        existing = await _existing(writer, items)
    checked = dict(zip(map(id, items), prepared, strict=True)) if prepared is not None else {}
    run: list[Item] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        key = _key(item)
        if key in existing or key in seen:
            await _create_run(writer, run, report, checked)  # first what comes before it: it may reference those
            run = []
            await _one_by_one(writer, item, report)
        else:
            run.append(item)
        seen.add(key)
    await _create_run(writer, run, report, checked)


async def _create_run(
    writer: Writer, run: list[Item], report: LoadReport, checked: dict[int, Resource | errors.FinGateError]
) -> None:
    """New resources through `create_many`, one transaction, the run's references read at once; when the
    transaction itself fails (an id taken meanwhile, a conflict), the run is loaded one by one."""
    if not run:
        return
    entries = _entries(run)
    prepared = [checked[id(item)] for item in run] if checked else None

    async def reads(session: Any, pending: dict[tuple[str, str], Resource], valid: list[tuple[str, Resource]]) -> Any:
        chunk = _ChunkReads(writer.reads.within(session), pending)
        await chunk.prefetch(valid)
        return chunk

    try:
        results = await writer.create_many(entries, reads, prepared)
    except errors.FinGateError:
        for item in run:
            await _one_by_one(writer, item, report)
        return
    for item, result in zip(run, results, strict=True):
        if isinstance(result, errors.FinGateError):
            report.rejected.append((item.source, f"{result.code}: {_describe(result)}"))
        else:
            report.created += 1


async def _one_by_one(writer: Writer, item: Item, report: LoadReport) -> None:
    try:
        await _load_item(writer, item, report)
    except errors.FinGateError as exc:
        report.rejected.append((item.source, f"{exc.code}: {_describe(exc)}"))


async def _load_item(writer: Writer, item: Item, report: LoadReport) -> None:
    if not item.transaction:
        resource = item.resources[0]
        action, _ = await writer.put(str(resource.get("resourceType")), resource)
        setattr(report, action, getattr(report, action) + 1)
        return
    outcomes = await bundles.transaction(writer.store, lambda _type, _action: writer, item.entries)
    for entry in outcomes:
        counted = {"matched": "unchanged", "deleted": "updated"}.get(str(entry.action), str(entry.action))
        setattr(report, counted, getattr(report, counted) + 1)


def _describe(exc: errors.FinGateError) -> str:
    details = [i.get("diagnostics", "") for i in exc.issues or []]
    where = f"entry[{exc.extra['entry']}]: " if "entry" in exc.extra else ""  # a transaction Bundle's (app.bundles)
    return where + ("; ".join(d for d in details if d) or exc.message)


async def _prepare(writer: Writer, entries: list[tuple[str, Resource]]) -> list[Resource | errors.FinGateError]:
    out: list[Resource | errors.FinGateError] = []
    for entry in entries:
        out += writer.prepare([entry])
        await asyncio.sleep(0)  # the loop's turn: the chunk being written takes its replies
    return out


def _also(
    found: asyncio.Future[set[tuple[str, str]]], keys: set[tuple[str, str]]
) -> asyncio.Future[set[tuple[str, str]]]:
    async def union() -> set[tuple[str, str]]:
        return await found | keys

    return asyncio.ensure_future(union())


async def load(
    writer: Writer,
    paths: Iterable[Path | str],
    progress: Callable[[int, int], None] | None = None,
    items: Iterable[Item] = (),
) -> LoadReport:
    """Load everything under `paths` (and `items`) in load order; a rejected item never stops the others.

    Single resources go in chunks of CHUNK, one transaction each (`_load_chunk`); a transaction Bundle is one
    item, all or nothing."""
    from_files, unreadable = read_items(paths)
    items = sorted([*from_files, *items], key=lambda item: item.rank)
    report = LoadReport(rejected=list(unreadable))
    steps: list[Item | list[Item]] = []  # a transaction Bundle, or a chunk of up to CHUNK single resources
    for item in items:
        if item.transaction:
            steps.append(item)
        elif steps and isinstance(steps[-1], list) and len(steps[-1]) < CHUNK:
            steps[-1].append(item)
        else:
            steps.append([item])
    done = 0
    # A chunk's new resources are checked (`Writer.prepare`: no reads) while the chunk before it is written: a
    # task checks one resource at a time and lets the loop take the write's database replies in between, so the
    # checks fill the time spent waiting on the database (a thread would hold the GIL for 5 ms at a time against
    # each reply). The rules that read come in order, in the chunk's transaction.
    # Which of the next chunk exist is read then too (outside any transaction, as it always was): what the chunk
    # being written stores meanwhile is added to it, so a resource in both chunks still goes through `put`.
    preparing: dict[int, asyncio.Future[list[Resource | errors.FinGateError]]] = {}
    looking: dict[int, asyncio.Future[set[tuple[str, str]]]] = {}

    def prepare(n: int) -> None:
        step = steps[n] if n < len(steps) else None
        if isinstance(step, list) and n not in preparing:
            preparing[n] = asyncio.ensure_future(_prepare(writer, _entries(step)))

    try:
        for n, step in enumerate(steps):
            if isinstance(step, Item):
                await _one_by_one(writer, step, report)
            else:
                prepare(n)
                prepared = await preparing.pop(n)
                existing = await looking.pop(n) if n in looking else await _existing(writer, step)
                prepare(n + 1)
                after = steps[n + 1] if n + 1 < len(steps) else None
                if isinstance(after, list):
                    looking[n + 1] = asyncio.ensure_future(_existing(writer, after))
                await _load_chunk(writer, step, report, prepared, existing)
                if n + 1 in looking:
                    looking[n + 1] = _also(looking[n + 1], {_key(item) for item in step})
            done += 1 if isinstance(step, Item) else len(step)
            if progress is not None:
                progress(done, len(items))
    finally:
        running: list[asyncio.Future[Any]] = [*preparing.values(), *looking.values()]
        for pending in running:  # a load that stopped (an outage) leaves none running
            pending.cancel()
    return report


def stderr_progress(label: str = "loading") -> Callable[[int, int], None]:
    """A one-line progress bar on stderr (only when it is a terminal, or at the end)."""
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if tty or done == total:
            width = 30
            filled = width * done // max(total, 1)
            sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return show
