"""The `fingate` command: serve, load, import-payer, persist, dispatch and sdl."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.embedded import EmbeddedError, database, database_uri
from app.settings import Settings

log = logging.getLogger("fingate")

READY_TIMEOUT = 30.0


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**overrides)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    # fpdf2's font subsetting (fontTools) logs some 70 INFO lines per PDF: only its warnings are worth a line.
    logging.getLogger("fontTools").setLevel(max(logging.WARNING, logging.getLogger().level))


def _exit_on_sigterm() -> None:
    # Until uvicorn takes over signals, SIGTERM must still unwind through `finally`,
    # so the embedded database is stopped rather than orphaned.
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


async def wait_ready(store: Any, timeout: float = READY_TIMEOUT) -> None:  # noqa: ASYNC109 (a deadline loop, not a wrapped call)
    deadline = time.monotonic() + timeout
    while not await store.ping():
        if time.monotonic() > deadline:
            raise SystemExit(f"fingate: the database did not answer within {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def load_demo(store: Any) -> None:
    from app.demo import load_demo
    from app.load import stderr_progress
    from app.writes import Writer

    log.info("empty database: loading the R5 examples and the demo data")
    report = await load_demo(Writer(store), stderr_progress("loading demo data"))
    log.info("demo data: %d loaded, %d rejected", report.loaded, len(report.rejected))
    for source, reason in report.rejected:
        log.warning("demo data rejected %s: %s", source, reason)


class SchemaBuild:
    """The GraphQL schema, built in a thread once `start` is called; `future` holds it (or the build's error).

    `fingate serve` starts it once the ready path is done (or beside a demo load, which takes longer): built
    beside that path, the two shared one interpreter lock and both took about twice as long."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build = build
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.made = time.perf_counter()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the build, once; later calls do nothing. From here on the future cannot be cancelled: a waiter
        that gives up (a request cancelled by its client, the server stopping) leaves it to the others."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fingate-schema", daemon=True)
            if self.future.set_running_or_notify_cancel():
                self._thread.start()

    def _run(self) -> None:
        try:
            with _collection_paused():
                schema = self.build()
        except BaseException as exc:
            self.future.set_exception(exc)
            return
        log.info("schema built in %.2f s", time.perf_counter() - self.made)  # since `fingate serve` began
        self.future.set_result(schema)


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """No cyclic garbage collection in the block. Start-up makes objects that live as long as the process (the
    schema: some 250,000): collecting while they are made only walks them again and again (about a third of
    the schema's build); they are frozen once built (`gc.freeze`), out of later collections' way."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build_schema() -> Any:
    from app.graphql.build import build_schema

    return build_schema()


def _import_app() -> None:
    """The modules the ready path needs, imported while the embedded database starts (about 0.5 s)."""
    with _collection_paused():
        import uvicorn  # noqa: F401

        import app.graphql.compat
        import app.http
        import app.store  # noqa: F401


async def ready_path(store: Any, settings: Settings, schema: SchemaBuild) -> None:
    """What `fingate serve` does before it answers /readyz: the database answers, its indexes and the built-in
    SubscriptionTopics are there (and the demo data, into an empty database). The schema's build starts at the
    end (or beside the demo load); /readyz does not wait for it, a GraphQL request does."""
    await wait_ready(store)
    await store.ensure_indexes()
    if settings.load_demo and await store.is_empty():
        schema.start()  # the demo load takes longer than the build: build beside it
        await load_demo(store)
    await _topics(store)
    schema.start()


def serve(settings: Settings) -> None:
    from app.auth import check_startup

    check_startup(settings)  # no auth only on loopback or with FINGATE_AUTH=off
    schema = SchemaBuild(_build_schema)
    # The embedded database is a child process started from this (main) thread, which its parent-death signal
    # watches; the app's imports run while it starts.
    with database(settings.mongodb_uri, settings.data_dir, meanwhile=_import_app) as (uri, embedded):
        import uvicorn

        from app.graphql.compat import graphql_schema
        from app.http import create_app
        from app.store import Store

        store = Store(uri, settings.db, tenant=settings.default_tenant)
        background: set[asyncio.Task[None]] = set()

        async def when_built() -> None:
            try:
                built = await asyncio.wrap_future(schema.future)
            except Exception:
                log.critical("the GraphQL schema could not be built; stopping", exc_info=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            await persist_ready_queries(store, graphql_schema(built))
            # The schema and the app live as long as the process: out of the collector's reach, a full
            # collection (every few heavy requests) walks only what requests made, not some 250,000 objects.
            gc.collect()
            gc.freeze()

        async def startup(store: Store) -> None:
            await ready_path(store, settings, schema)
            task = asyncio.get_running_loop().create_task(when_built())
            background.add(task)
            task.add_done_callback(background.discard)
            on = "MONGODB_URI" if embedded is None else f"{embedded.engine.label} in {embedded.data_dir}"
            log.info("ready: GraphiQL at http://%s:%d/graphql (database: %s)", settings.host, settings.port, on)

        app = create_app(store, schema.future, on_startup=startup, settings=settings, embedded=embedded)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)


async def _topics(store: Any) -> None:
    """The built-in SubscriptionTopics, in the default tenant (unchanged ones are not written again)."""
    from app.hooks.topics import ensure_topics
    from app.writes import Writer

    await ensure_topics(Writer(store, actor="fingate"))


async def _dispatch(settings: Settings) -> int:
    """Deliver rest-hook notifications (and clearinghouse submissions) until stopped, without serving HTTP."""
    from app.dispatch import runners
    from app.store import Store

    with database_uri(settings.mongodb_uri, settings.data_dir) as uri:
        store = Store(uri, settings.db, tenant=settings.default_tenant)
        try:
            await wait_ready(store)
            await store.ensure_indexes()
            await _topics(store)
            found = runners(store, settings)
            if not found:
                print(
                    "fingate: nothing to dispatch (set FINGATE_WEBHOOK_SECRET or FINGATE_CLEARINGHOUSE_URL)",
                    file=sys.stderr,
                )
                return 1
            log.info("dispatching: %d dispatcher(s)", len(found))
            await asyncio.gather(*(run() for run in found))
        finally:
            await store.close()
    return 0


async def _load(settings: Settings, paths: list[str]) -> int:
    from app.load import load, stderr_progress
    from app.store import Store
    from app.writes import Writer

    with database_uri(settings.mongodb_uri, settings.data_dir) as uri:
        store = Store(uri, settings.db, tenant=settings.default_tenant)
        try:
            await wait_ready(store)
            await store.ensure_indexes()
            report = await load(Writer(store, actor="fingate load"), paths, stderr_progress())
        finally:
            await store.close()
    print(
        f"loaded {report.loaded} (created {report.created}, updated {report.updated}, unchanged {report.unchanged}), rejected {len(report.rejected)}"
    )
    for source, reason in report.rejected:
        print(f"  rejected {source}: {reason}")
    return 1 if report.rejected else 0


async def _import_payer(settings: Settings, args: argparse.Namespace) -> int:
    from app import errors
    from app.payers import job as payer
    from app.payers.client import PayerClient, policy_from
    from app.store import Store
    from app.writes import Writer

    def progress(job: dict[str, Any], line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    with database_uri(settings.mongodb_uri, settings.data_dir) as uri:
        store = Store(uri, settings.db, tenant=settings.default_tenant)
        try:
            await wait_ready(store)
            await store.ensure_indexes()
            client = PayerClient(
                args.base,
                token=args.token,
                client_id=args.client_id,
                client_secret=args.client_secret,
                token_url=args.token_url,
                policy=policy_from(settings),
            )
            async with client:
                await client.check()
                job = await payer.resumable(store, args.resume, client.base) if args.resume else None
                job = job or payer.new_job(client.base, args.patient)
                print(f"payer import {job['id']}: {client.base}, patient {job['patient']}", file=sys.stderr)
                job = await payer.run(
                    Writer(store, actor="fingate import-payer"), client, job, payer.saver(store), progress
                )
        except (errors.FinGateError, ValueError) as exc:
            print(f"fingate import-payer: {exc}", file=sys.stderr)
            return 2
        finally:
            await store.close()
    print(
        f"{job['status']}: created {job['created']}, updated {job['updated']}, unchanged {job['unchanged']}, "
        f"rejected {len(job['rejected'])}, {job['pages']} pages"
    )
    for rejected in job["rejected"]:
        print(f"  rejected {rejected['source']}: {rejected['reason']}")
    if job["status"] != payer.COMPLETED:
        print(
            f"  {job['error']}\n  resume with: fingate import-payer --resume {job['id']} --base ... (and the credentials)"
        )
    return 0 if job["status"] == payer.COMPLETED and not job["rejected"] else 1


async def persist_ready_queries(store: Any, schema: Any) -> None:
    """The explorer's queries are always stored, so they run in allowlist mode too."""
    from app.explorer import ready_queries
    from app.graphql.apq import persist

    for path, problem in await persist(store, schema, ready_queries()):
        log.warning("ready query %s not stored: %s", path.name, problem)


async def _persist(settings: Settings, paths: list[Path]) -> int:
    from app.graphql.apq import persist, sha256
    from app.graphql.build import build_schema
    from app.graphql.compat import graphql_schema
    from app.store import Store

    schema = graphql_schema(build_schema())
    with database_uri(settings.mongodb_uri, settings.data_dir) as uri:
        store = Store(uri, settings.db)
        try:
            await wait_ready(store)
            refused = dict(await persist(store, schema, paths))
        finally:
            await store.close()
    for path in paths:
        print(f"  refused {path}: {refused[path]}" if path in refused else f"{sha256(path.read_text())}  {path}")
    return 1 if refused else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fingate", description="GraphQL gateway for the FHIR R5 financial module")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve GraphQL (GraphiQL at /graphql)")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--data-dir", dest="data_dir", type=Path)
    p_load = sub.add_parser("load", help="load FHIR JSON files, arrays or Bundles")
    p_load.add_argument("paths", nargs="+")
    p_load.add_argument(
        "--tenant", dest="default_tenant", help="the tenant to load into (default: FINGATE_DEFAULT_TENANT)"
    )
    p_load.add_argument("--data-dir", dest="data_dir", type=Path)
    p_import = sub.add_parser(
        "import-payer", help="import a patient's Patient, Coverage and ExplanationOfBenefit from a payer's FHIR R4 API"
    )
    p_import.add_argument("--base", required=True, help="the payer's FHIR base URL (https; http only to loopback)")
    p_import.add_argument("--patient", help="the payer's Patient id")
    p_import.add_argument(
        "--token", default=os.environ.get("FINGATE_PAYER_TOKEN"), help="a bearer token (or FINGATE_PAYER_TOKEN)"
    )
    p_import.add_argument("--client-id", dest="client_id", help="OAuth2 client credentials: the client id")
    p_import.add_argument(
        "--client-secret",
        dest="client_secret",
        default=os.environ.get("FINGATE_PAYER_CLIENT_SECRET"),
        help="the client secret (or FINGATE_PAYER_CLIENT_SECRET)",
    )
    p_import.add_argument("--token-url", dest="token_url", help="the OAuth2 token endpoint")
    p_import.add_argument("--resume", help="the id of a failed import to continue from its failed page")
    p_import.add_argument("--allow-loopback", dest="payer_allow_loopback", action="store_const", const=True)
    p_import.add_argument("--tenant", dest="default_tenant", help="the tenant to import into")
    p_import.add_argument("--data-dir", dest="data_dir", type=Path)
    p_persist = sub.add_parser("persist", help="store GraphQL query files as persisted queries (the allowlist)")
    p_persist.add_argument("paths", nargs="+", type=Path)
    p_persist.add_argument("--data-dir", dest="data_dir", type=Path)
    p_dispatch = sub.add_parser("dispatch", help="deliver rest-hook notifications and clearinghouse submissions")
    p_dispatch.add_argument("--data-dir", dest="data_dir", type=Path)
    sub.add_parser("sdl", help="print the GraphQL schema (SDL)")
    args = parser.parse_args(argv)

    if args.command == "sdl":
        from app.graphql.build import print_sdl

        sys.stdout.write(print_sdl())
        return 0
    settings = _settings(args)
    _logging(settings.log_level)
    _exit_on_sigterm()
    try:
        if args.command == "serve":
            serve(settings)
            return 0
        if args.command == "persist":
            return asyncio.run(_persist(settings, args.paths))
        if args.command == "import-payer":
            if not (args.patient or args.resume):
                parser.error("import-payer needs --patient (or --resume)")
            if not (args.token or (args.client_id and args.client_secret and args.token_url)):
                parser.error("import-payer needs --token, or --client-id, --client-secret and --token-url")
            return asyncio.run(_import_payer(settings, args))
        if args.command == "dispatch":
            return asyncio.run(_dispatch(settings))
        return asyncio.run(_load(settings, args.paths))
    except EmbeddedError as exc:
        print(f"fingate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
