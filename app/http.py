"""The HTTP face of FinGate: Starlette routes for GraphQL, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http.parse_content_type import parse_content_type
from strawberry.types import ExecutionResult

from app import auth, errors
from app.caching import ConditionalGET
from app.embedded import EmbeddedMongo
from app.explorer import STATIC_DIR, STATIC_PATH, explorer_page
from app.fhir.decimals import plain_text
from app.graphql.apq import PersistedQueries
from app.graphql.compat import QuietView, graphql_schema
from app.graphql.compiled import compiled_execution
from app.graphql.context import Context
from app.graphql.limits import BodyLimit, Limits, within
from app.graphql.resolvers import BATCH_FORMS
from app.metrics import ERRORS, LATENCY, REGISTRY, REQUESTS
from app.settings import Settings
from app.store import Store

log = logging.getLogger("fingate.http")
access_log = logging.getLogger("fingate.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_OPERATION = re.compile(r"^\s*(query|mutation|subscription)\b")
_COMMENTS = re.compile(r"#[^\n]*")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return plain_text(value)
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


class HTTPError(HTTPException):
    """A request refused before any operation runs: answered as JSON with `extensions.code`, never plain text."""

    def __init__(self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, message)
        self.code = code
        self.headers = headers or {}


# Strawberry's own refusals (bad JSON, no query, a method other than GET or POST) carry only a status.
_CODE_OF_STATUS = {401: errors.UNAUTHENTICATED, 404: errors.NOT_FOUND, 413: errors.QUERY_TOO_COMPLEX}


def error_response(
    status: int, code: str, message: str, request_id: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The body of every HTTP-level refusal: the GraphQL error shape, with the request id to quote."""
    body = {"errors": [{"message": message, "extensions": {"code": code, "requestId": request_id}}]}
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def unauthenticated(message: str) -> HTTPError:
    return HTTPError(401, errors.UNAUTHENTICATED, message, {"www-authenticate": 'Bearer realm="fingate"'})


class FinGateGraphQL(QuietView, GraphQL[Context | None, None]):
    """Strawberry's ASGI view with FinGate's caller, context, JSON and error format.

    Default deny: with auth on, the Context (the only door to data) is built only for a verified
    Principal; the explorer page is the one answer given without a token, and it runs nothing.
    """

    def __init__(
        self,
        schema: Any,
        store: Store,
        persisted_queries: PersistedQueries,
        settings: Settings,
        authenticator: auth.Authenticator | None,
    ) -> None:
        super().__init__(schema, graphql_ide="graphiql", allow_queries_via_get=True)
        self.store = store
        self.persisted_queries = persisted_queries
        self.explorer_html = explorer_page()
        self.limits = Limits.from_settings(settings)
        self.authenticator = authenticator
        self.default_tenant = settings.default_tenant
        self.overpayment_allowed = settings.overpayment_allowed
        self.projection = settings.projection  # read only what a query selects (app.graphql.projection)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = scope.get("fingate.request_id", "-")
        if scope["type"] != "http":  # no WebSocket route is served
            return
        try:
            response = await self.run(Request(scope, receive))
        except HTTPException as exc:
            code = getattr(exc, "code", None) or _CODE_OF_STATUS.get(exc.status_code, errors.BAD_USER_INPUT)
            response = error_response(exc.status_code, code, exc.reason, request_id, getattr(exc, "headers", None))
        await response(scope, receive, send)

    def should_render_graphql_ide(self, request: Any) -> bool:
        # A persisted query's GET has no `query` either; curl's `*/*` must get JSON, not the page.
        return "extensions" not in request.query_params and super().should_render_graphql_ide(request)

    async def render_graphql_ide(self, request: Any) -> Response:
        return HTMLResponse(self.explorer_html)

    async def principal(self, request: Request) -> auth.Principal:
        """The verified caller; without auth (loopback or FINGATE_AUTH=off), everything in the default tenant."""
        if self.authenticator is None:
            return auth.anonymous(self.default_tenant)
        try:
            return await self.authenticator.principal(request.headers.get("authorization"))
        except auth.AuthError as exc:
            raise unauthenticated(str(exc)) from None

    async def get_context(self, request: Any, response: Any) -> Context | None:  # type: ignore[override]
        if self.authenticator is not None and self.should_render_graphql_ide(self.request_adapter_class(request)):
            return None  # the explorer page is all this request gets (`run` returns it next): no door to data
        principal = await self.principal(request)
        # A caller that may read nothing learns nothing from the schema either.
        limits = self.limits if principal.reads_anything else self.limits.without_introspection()
        scope = request.scope
        return Context(
            self.store,
            scope.get("fingate.request_id", "-"),
            principal,
            limits,
            client_request_id=scope.get("fingate.client_request_id"),
            allow_overpayment=self.overpayment_allowed(principal.tenant),
            project=self.projection,
        )

    async def parse_http_body(self, request: Any) -> Any:
        if request.method == "POST":
            media_type, _ = parse_content_type(request.content_type or "")
            if media_type.lower() != "application/json":
                raise HTTPError(
                    415, errors.BAD_USER_INPUT, f"send Content-Type: application/json, not {media_type or 'none'!r}"
                )
        return await super().parse_http_body(request)

    async def execute_operation(self, request: Any, request_data: Any, context: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if not isinstance(context, Context):  # unreachable by construction: no operation runs without a caller
            raise unauthenticated("send Authorization: Bearer <JWT>")
        # Batched bodies are refused while parsing (Strawberry's batching is off): one operation per request.

        async def run() -> Any:
            try:  # automatic persisted queries (app/graphql/apq.py): the text to run, from the request or the store
                request_data.query = await self.persisted_queries.resolve(request_data.query, request_data.extensions)
            except errors.FinGateError as error:
                return ExecutionResult(data=None, errors=[GraphQLError(error.message, original_error=error)])
            # The latency histogram's label: an operation keyword, or `query` for the shorthand `{ ... }`.
            match = _OPERATION.match(_COMMENTS.sub("", getattr(request_data, "query", None) or ""))
            request.scope["fingate.operation"] = match.group(1) if match else "query"
            return await super(FinGateGraphQL, self).execute_operation(
                request=request, request_data=request_data, context=context, **kwargs
            )

        # The whole request, the persisted-query lookup included, within the request timeout.
        return await within(self.limits.request_timeout, run(), self.store)

    def parse_json(self, data: str | bytes) -> Any:
        # The body, and a GET's `variables` and `extensions`: a refusal that says what is wrong.
        try:
            return self.decode_json(data)
        except json.JSONDecodeError as exc:
            raise HTTPError(400, errors.BAD_USER_INPUT, f"the request is not valid JSON: {exc.msg}") from None

    def decode_json(self, data: str | bytes) -> object:
        try:
            text = data.decode() if isinstance(data, bytes) else data
            value = loads(text)
            if "\\u" in text:  # lone surrogates pass `json` raw or as `\\ud800` escapes; they cannot be stored
                json.dumps(value, ensure_ascii=False, default=str).encode()
        except json.JSONDecodeError:
            raise
        except UnicodeError:
            raise json.JSONDecodeError("not UTF-8", "", 0) from None
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", "", 0) from None
        except ValueError:  # Python's int-string limit
            raise json.JSONDecodeError("a number has more than 4,300 digits", "", 0) from None
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
    """A server-made request id on every response, metrics, one access-log line per request, and JSON
    (code INTERNAL, the request id) for anything that escaped the app, so no answer is a bare 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The id is always this server's: a client's `X-Request-ID` is kept beside it, never in its place,
        # so the audit log's ids cannot be forged or made to collide.
        request_id = scope["fingate.request_id"] = uuid.uuid4().hex
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        client_request_id = scope["fingate.client_request_id"] = incoming if _REQUEST_ID.match(incoming) else None
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s: unexpected error", request_id)
            if response_started:
                raise
            message = f"Internal error; quote request id {request_id} to find it in the server log"
            await error_response(500, errors.INTERNAL, message, request_id)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            path = scope["path"]
            REQUESTS.labels(path if path in _KNOWN_PATHS else "other", scope["method"], str(status)).inc()
            if path == "/graphql":
                LATENCY.labels(scope.get("fingate.operation", "query")).observe(elapsed)
            line = {
                "request_id": request_id,
                "method": scope["method"],
                "path": path,
                "status": status,
                "ms": round(elapsed * 1000, 2),
            }
            if client_request_id:
                line["client_request_id"] = client_request_id
            access_log.info(json.dumps(line))


_KNOWN_PATHS = frozenset({"/graphql", "/healthz", "/readyz", "/metrics"})


class _Deferred:
    """The GraphQL endpoint of a schema still being built: each request waits for it, the first makes it."""

    def __init__(self, schema: concurrent.futures.Future[Any], make: Callable[[Any], ASGIApp]) -> None:
        self.schema, self.make = schema, make
        self.endpoint: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.endpoint is None:
            built = await asyncio.wrap_future(self.schema)
            if self.endpoint is None:
                self.endpoint = self.make(built)
        await self.endpoint(scope, receive, send)


def create_app(
    store: Store,
    schema: Any | None = None,
    on_startup: Callable[[Store], Any] | None = None,
    settings: Settings | None = None,
    embedded: EmbeddedMongo | None = None,
) -> Starlette:
    """The ASGI app over an open Store; `on_startup` runs in the lifespan (indexes, demo data).

    `schema` may be a Future of it (`fingate serve` builds it in a thread while the app starts): /healthz and
    /readyz answer at once, and GraphQL requests wait until it is built."""
    if schema is None:
        from app.graphql.build import build_schema

        schema = build_schema()
    settings = settings or Settings()
    store.use_cursor_keys([key.get_secret_value() for key in settings.cursor_keys])
    authenticator = auth.authenticator(settings)
    state: dict[str, Any] = {"compiled_engine": None}  # copied to the app's state, now or once built

    def endpoint_for(built: Any) -> ASGIApp:
        persisted_queries = PersistedQueries(store, graphql_schema(built), allowlist=settings.apq_allowlist)
        # With compiled execution on, the engine answers plain-data queries' execute step (app/graphql/compiled).
        executable, engine = compiled_execution(built, BATCH_FORMS, settings.compiled)
        state["compiled_engine"] = engine  # its counts of compiled, unsupported and fallback answers
        if "app" in state:
            state["app"].state.compiled_engine = engine
        graphql_app = FinGateGraphQL(executable, store, persisted_queries, settings, authenticator)
        return ConditionalGET(graphql_app, settings.cache_control)

    graphql_endpoint: ASGIApp = (
        _Deferred(schema, endpoint_for) if isinstance(schema, concurrent.futures.Future) else endpoint_for(schema)
    )
    metrics_token = settings.metrics_token.get_secret_value().encode() if settings.metrics_token else None

    async def healthz(request: Request) -> Response:
        if process_healthy(embedded):
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "embedded database gave up restarting"}, status_code=503)

    async def readyz(request: Request) -> Response:
        engine = {} if embedded is None else {"engine": embedded.engine.label}  # the embedded database's server
        if await database_ready(store, embedded):
            return JSONResponse({"status": "ready", **engine})
        return JSONResponse({"status": "database unreachable", **engine}, status_code=503)

    async def metrics(request: Request) -> Response:
        # With auth on, the scraper shows FINGATE_METRICS_TOKEN; without one set, nobody reads metrics.
        if authenticator is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if (
                metrics_token is None
                or scheme.lower() != "bearer"
                or not hmac.compare_digest(given.encode(), metrics_token)
            ):
                refused = unauthenticated("/metrics needs Authorization: Bearer <FINGATE_METRICS_TOKEN>")
                request_id = request.scope.get("fingate.request_id", "-")
                return error_response(401, refused.code, refused.reason, request_id, refused.headers)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own refusals (no such path, a method a route does not take), in the same JSON shape.
        assert isinstance(exc, StarletteHTTPException)
        code = _CODE_OF_STATUS.get(exc.status_code, errors.BAD_USER_INPUT)
        return error_response(
            exc.status_code, code, exc.detail, request.scope.get("fingate.request_id", "-"), exc.headers
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if authenticator is not None:
            await authenticator.start()
        if on_startup is not None:
            await on_startup(store)
        yield

    app = Starlette(
        routes=[
            Route("/graphql", graphql_endpoint),  # the view answers other methods with a JSON 405
            Mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="graphiql"),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
        exception_handlers={StarletteHTTPException: http_error},
    )
    state["app"] = app
    app.state.compiled_engine = state["compiled_engine"]
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
