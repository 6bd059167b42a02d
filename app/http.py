"""The HTTP face of FinGate: Starlette routes for GraphQL, health, readiness and metrics."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import orjson
from graphql import GraphQLError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.types import ExecutionResult

from app import auth, errors
from app.apq import PersistedQueries
from app.caching import ConditionalGET
from app.compiled import with_compiled_execution
from app.context import Context
from app.embedded import EmbeddedMongo
from app.explorer import STATIC_DIR, STATIC_PATH, explorer_page
from app.limits import DEFAULT_LIMITS, BodyLimit, Limits, within
from app.metrics import ERRORS, LATENCY, REGISTRY, REQUESTS
from app.settings import Settings
from app.store import Store
from app.writes import Writer

log = logging.getLogger("fingate.http")
access_log = logging.getLogger("fingate.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_OPERATION = re.compile(r"^\s*(query|mutation|subscription)\b")
_COMMENTS = re.compile(r"#[^\n]*")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(data: Any) -> bytes:
    """Compact JSON; decimals as strings with their exact digits."""
    return orjson.dumps(data, default=_json_default)


def loads(data: str | bytes) -> Any:
    """JSON with numbers that have a fraction read as `Decimal`: `7.10` stays `7.10`."""
    return json.loads(data, parse_float=Decimal)


def format_error(error: GraphQLError, request_id: str) -> dict[str, Any]:
    """One `errors[]` entry: a FinGate code always, a traceback never."""
    original = error.original_error
    out: dict[str, Any] = {"message": error.message}
    if error.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path is not None:
        out["path"] = error.path
    if isinstance(original, errors.FinGateError):
        out["message"] = original.message
        out["extensions"] = original.extensions
    elif original is None or error.path is None:
        # Parse, validation and variable errors come before execution: the client sent a
        # request the schema cannot run. A scalar's message says what was expected.
        out["extensions"] = {"code": errors.BAD_USER_INPUT}
    else:
        log.error("request %s: unexpected error at %s", request_id, error.path, exc_info=original)
        out["message"] = f"Internal error; quote request id {request_id} to find it in the server log"
        out["extensions"] = {"code": errors.INTERNAL, "requestId": request_id}
    return out


class FinGateGraphQL(GraphQL):  # type: ignore[type-arg]
    """Strawberry's ASGI view with FinGate's context, JSON and error format."""

    def __init__(self, schema: Any, store: Store, persisted_queries: PersistedQueries, compiled: bool) -> None:
        # With FINGATE_COMPILED on, a copy of the schema whose execute step runs compiled plans for
        # plain-data queries (issue 8, app/compiled); the schema itself when off.
        super().__init__(with_compiled_execution(schema, compiled), graphql_ide="graphiql", allow_queries_via_get=True)
        self.store = store
        self.writer = Writer(store)
        self.persisted_queries = persisted_queries
        self.explorer_html = explorer_page()
        self.limits: Limits = DEFAULT_LIMITS

    def should_render_graphql_ide(self, request: Any) -> bool:
        # A persisted query's GET has no `query` either; curl's `*/*` must get JSON, not the page.
        return "extensions" not in request.query_params and super().should_render_graphql_ide(request)

    async def render_graphql_ide(self, request: Any) -> Response:
        return HTMLResponse(self.explorer_html)

    async def get_context(self, request: Any, response: Any) -> Context:  # type: ignore[override]
        # The Principal is BearerAuth's (app/auth.py); without auth, Context grants all in the default tenant.
        principal = request.scope.get("fingate.principal")
        return Context(self.store, self.writer, request.scope.get("fingate.request_id", "-"), principal, self.limits)

    async def execute_operation(self, request: Any, request_data: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        try:  # automatic persisted queries (app/apq.py): the text to run, from the request or the store
            request_data.query = await self.persisted_queries.resolve(request_data.query, request_data.extensions)
        except errors.FinGateError as error:
            return ExecutionResult(data=None, errors=[GraphQLError(error.message, original_error=error)])
        # The latency histogram's label: an operation keyword, or `query` for the shorthand `{ ... }`.
        match = _OPERATION.match(_COMMENTS.sub("", getattr(request_data, "query", None) or ""))
        request.scope["fingate.operation"] = match.group(1) if match else "query"
        operation = super().execute_operation(request=request, request_data=request_data, **kwargs)
        return await within(self.limits.request_timeout, operation, self.store)

    def decode_json(self, data: str | bytes) -> object:
        # Strawberry answers 400 for a JSONDecodeError only: invalid UTF-8, lone surrogates (which
        # `json` lets through, raw or as `\\ud800` escapes) and non-object bodies become one.
        try:
            text = data.decode() if isinstance(data, bytes) else data
            value = loads(text)
            if "\\u" in text:
                json.dumps(value, ensure_ascii=False, default=str).encode()
        except (UnicodeError, RecursionError) as exc:
            raise json.JSONDecodeError(f"not UTF-8 JSON ({type(exc).__name__})", "", 0) from None
        if not isinstance(value, dict | list):
            raise json.JSONDecodeError("expected a JSON object", "", 0)
        return value

    def encode_json(self, data: object) -> bytes:
        return dumps(data)

    async def process_result(self, request: Any, result: ExecutionResult) -> dict[str, Any]:  # type: ignore[override]
        out: dict[str, Any] = {"data": result.data}
        if result.errors:
            request_id = request.scope.get("fingate.request_id", "-")
            out["errors"] = [format_error(e, request_id) for e in result.errors]
            for e in out["errors"]:
                ERRORS.labels(e["extensions"]["code"]).inc()
        if result.extensions:
            out["extensions"] = result.extensions
        return out

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        return outage_response(super().create_response(response_data, sub_response), response_data)

    def _handle_errors(self, errors: Any, response_data: Any) -> None:
        # Errors are logged once, in format_error: only unexpected ones carry a traceback.
        pass


def outage_response(response: Response, body: Any) -> Response:
    """A GraphQL answer with UNAVAILABLE errors gets Retry-After, and 503 when the outage left it no data."""
    results = body if isinstance(body, list) else [body]
    found = [e for r in results for e in r.get("errors") or () if e["extensions"]["code"] == errors.UNAVAILABLE]
    if not found:
        return response
    response.headers["retry-after"] = str(max(e["extensions"]["retryAfter"] for e in found))
    if all(
        not any((r.get("data") or {}).values())
        and all(e["extensions"]["code"] == errors.UNAVAILABLE for e in r.get("errors") or ())
        for r in results
    ):
        response.status_code = 503
    return response


# /readyz answers within this, whatever the database does.
READY_TIMEOUT = 1.0


async def database_ready(store: Store, embedded: EmbeddedMongo | None) -> bool:
    """The database answers a ping within READY_TIMEOUT (the embedded one not being restarted)."""
    if embedded is not None and not embedded.running:
        return False
    return await store.ping(READY_TIMEOUT)


def process_healthy(embedded: EmbeddedMongo | None) -> bool:
    """False only once the embedded database's supervisor has given up: restarting FinGate is the cure.

    A database that is down but coming back (or an external MongoDB that is down) is /readyz's concern.
    """
    return embedded is None or not embedded.gave_up


class RequestMiddleware:
    """X-Request-ID on every response, metrics, and one structured access-log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope["fingate.request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            path = scope["path"]
            REQUESTS.labels(path if path in _KNOWN_PATHS else "other", scope["method"], str(status)).inc()
            if path == "/graphql":
                LATENCY.labels(scope.get("fingate.operation", "query")).observe(elapsed)
            access_log.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    }
                )
            )


_KNOWN_PATHS = frozenset({"/graphql", "/healthz", "/readyz", "/metrics"})


def create_app(
    store: Store,
    schema: Any | None = None,
    on_startup: Callable[[Store], Any] | None = None,
    settings: Settings | None = None,
    embedded: EmbeddedMongo | None = None,
) -> Starlette:
    """The ASGI app over an open Store; `on_startup` runs in the lifespan (indexes, demo data)."""
    if schema is None:
        from app.fhirschema.build import build_schema

        schema = build_schema()
    settings = settings or Settings()
    persisted_queries = PersistedQueries(store, schema._schema, allowlist=settings.apq_allowlist)
    graphql_app = FinGateGraphQL(schema, store, persisted_queries, settings.compiled)
    graphql_app.limits = Limits.from_settings(settings)
    authenticator = auth.authenticator(settings)
    graphql_endpoint: ASGIApp = ConditionalGET(graphql_app, settings.cache_control)
    if authenticator is not None:
        graphql_endpoint = auth.BearerAuth(graphql_endpoint, authenticator)

    async def healthz(request: Request) -> Response:
        if process_healthy(embedded):
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "embedded database gave up restarting"}, status_code=503)

    async def readyz(request: Request) -> Response:
        if await database_ready(store, embedded):
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "database unreachable"}, status_code=503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if authenticator is not None:
            await authenticator.start()
        if on_startup is not None:
            await on_startup(store)
        yield

    app = Starlette(
        routes=[
            Route("/graphql", graphql_endpoint, methods=["GET", "POST"]),
            Mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="graphiql"),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # type: ignore[arg-type]
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,  # type: ignore[arg-type]
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-request-id"],
        )
    app.add_middleware(RequestMiddleware)  # type: ignore[arg-type]
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)  # type: ignore[arg-type]
    return app
