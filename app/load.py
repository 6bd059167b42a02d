"""`fingate load`: FHIR JSON files, arrays and Bundles into the store, through the write path."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from app import bundles, errors
from app.bundles import RANK
from app.fhir.values import Resource
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


async def load(
    writer: Writer,
    paths: Iterable[Path | str],
    progress: Callable[[int, int], None] | None = None,
    items: Iterable[Item] = (),
) -> LoadReport:
    """Load everything under `paths` (and `items`) in load order; a rejected item never stops the others."""
    from_files, unreadable = read_items(paths)
    items = sorted([*from_files, *items], key=lambda item: item.rank)
    report = LoadReport(rejected=list(unreadable))
    for done, item in enumerate(items, 1):
        try:
            await _load_item(writer, item, report)
        except errors.FinGateError as exc:
            report.rejected.append((item.source, f"{exc.code}: {_describe(exc)}"))
        if progress is not None:
            progress(done, len(items))
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
