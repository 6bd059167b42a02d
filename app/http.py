"""The HTTP face of FinGate: Starlette routes for GraphQL (`/graphql`, `/$graphql`, `/{Type}/{id}/$graphql`),
the CapabilityStatement (`/metadata`), the PDF documents (`$cms1500`, `$superbill`, `$statement`), health,
readiness and metrics."""

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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError, ListTypeNode, NamedTypeNode, NonNullTypeNode, VariableDefinitionNode
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from app import auth, dispatch, documents, errors
from app.caching import ConditionalGET
from app.capability import capability_statement
from app.embedded import EmbeddedMongo
from app.explorer import STATIC_DIR, STATIC_PATH, explorer_page
from app.fhir.decimals import plain_text
from app.fhir.model import SERVED
from app.graphql.apq import PersistedQueries
from app.graphql.compat import QuietView, graphql_schema
from app.graphql.compiled import compiled_execution
from app.graphql.context import Context
from app.graphql.instance import InstanceQuery, instance_query
from app.graphql.limits import BodyLimit, Limits, within
from app.graphql.resolvers import BATCH_FORMS
from app.idempotency import HEADER as IDEMPOTENCY_KEY
from app.idempotency import Idempotency
from app.metrics import ERRORS, LATENCY, REGISTRY, REQUESTS
from app.payments import Payments, WebhookRefused
from app.settings import Settings
from app.store import Store
from app.store.idempotency import IdempotencyKeys

log = logging.getLogger("fingate.http")
access_log = logging.getLogger("fingate.access")

SOCKET_INIT_SECONDS = 10  # a WebSocket must send `connection_init` within this (else 4408)
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


_VARIABLE_VALUE = re.compile(r"^Variable '\$\w+' has invalid value at ((?:\.\w+|\[\d+\])+):")


def _variable_expression(error: GraphQLError) -> str | None:
    """A variable refused by a scalar (`$res` of `PaymentReconciliationInput!` at `.amount.value`), as the FHIR
    element it would have filled: `PaymentReconciliation.amount.value`."""
    found = _VARIABLE_VALUE.match(error.message)
    node = error.nodes[0] if error.nodes else None
    if found is None or not isinstance(node, VariableDefinitionNode):
        return None
    type_node = node.type
    while isinstance(type_node, NonNullTypeNode | ListTypeNode):
        type_node = type_node.type
    name = type_node.name.value if isinstance(type_node, NamedTypeNode) else ""
    return name.removesuffix("Input") + found.group(1) if name.endswith("Input") else None


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
    if "operationOutcome" not in out["extensions"] and error.locations:
        # Something to point at (a parse or validation error, a limit): where in the query text.
        issue = errors.outcome_issue(out["message"])
        issue["location"] = [f"line {loc.line}, column {loc.column}" for loc in error.locations]
        expression = _variable_expression(error)
        if expression:
            issue["expression"] = [expression]
        out["extensions"]["operationOutcome"] = errors.operation_outcome([issue])
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


class _FormRequestData(GraphQLRequestData):
    """A request whose body came form-encoded: queries only."""


class _AsGet:
    """A request adapter that answers `method` with GET (what Strawberry's operation-type check reads)."""

    def __init__(self, adapter: Any) -> None:
        self._adapter = adapter

    method = "GET"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)


class _Narrowed:
    """The schema limited to some operation types: HTTP runs queries and mutations, a WebSocket subscriptions.
    Strawberry refuses the others itself (an HTTP 400 with BAD_USER_INPUT here; an error message on a socket)."""

    def __init__(self, schema: Any, allowed: frozenset[OperationType]) -> None:
        self.schema = schema
        self.allowed = allowed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.schema, name)

    def _narrow(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        given = kwargs.get("allowed_operation_types")
        kwargs["allowed_operation_types"] = self.allowed if given is None else self.allowed & set(given)
        return kwargs

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await self.schema.execute(*args, **self._narrow(kwargs))

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        return await self.schema.stream(*args, **self._narrow(kwargs))


_HTTP_OPERATIONS = frozenset({OperationType.QUERY, OperationType.MUTATION})
_SOCKET_OPERATIONS = frozenset({OperationType.SUBSCRIPTION})


class _SocketSchema(_Narrowed):
    """The schema as a WebSocket sees it: subscriptions only (queries and mutations take HTTP, with its
    timeout and persisted queries), and every error in FinGate's format (`extensions.code`, no internals)."""

    def __init__(self, schema: Any) -> None:
        super().__init__(schema, _SOCKET_OPERATIONS)

    async def stream(self, *args: Any, context_value: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        source = await self.schema.stream(*args, context_value=context_value, **self._narrow(kwargs))
        return _formatted(source, getattr(context_value, "request_id", "-"))


async def _formatted(source: Any, request_id: str) -> AsyncIterator[Any]:
    async with contextlib.aclosing(source):
        async for result in source:
            if isinstance(result, ExecutionResult) and result.errors:
                result.errors = [_as_fingate(e, request_id) for e in result.errors]
            yield result


def _as_fingate(error: GraphQLError, request_id: str) -> GraphQLError:
    out = format_error(error, request_id)
    ERRORS.labels(out["extensions"]["code"]).inc()
    return GraphQLError(out["message"], error.nodes, error.source, error.positions, error.path, None, out["extensions"])


class _TextSocket(ASGIWebSocketAdapter):
    """Messages as text frames: browsers hand a binary frame to graphql-ws as a Blob, which it cannot read."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        encoded = self.view.encode_json(message)
        try:
            await self.ws.send_text(encoded.decode() if isinstance(encoded, bytes) else encoded)
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class _SocketHandler(BaseGraphQLTransportWSHandler[Any, None]):
    def __init__(self, *, schema: Any, **kwargs: Any) -> None:
        unlimited = schema.schema if isinstance(schema, _Narrowed) else schema  # the view's is HTTP's
        super().__init__(schema=_SocketSchema(unlimited), **kwargs)  # type: ignore[arg-type]


class SocketContext(Context):
    """A WebSocket's context: grants nothing until `connection_init` brings a verified token (see
    `FinGateGraphQL.on_ws_connect`), then that caller's until the token expires, when the socket closes."""

    connection_params: dict[str, Any] | None = None  # Strawberry sets the `connection_init` payload here
    NOBODY = auth.Principal(sub="", tenant="", grants=frozenset())
    clock = staticmethod(time.time)  # what the expiry watchdog counts down from

    def __init__(self, store: Store, request_id: str, limits: Limits, socket: WebSocket) -> None:
        super().__init__(store, request_id, self.NOBODY, limits)
        self.socket = socket
        self.watchdog: asyncio.Task[None] | None = None

    def close_at(self, expires: float) -> None:
        """Close the socket (4401) when the token expires: nothing more runs on an expired token."""

        async def expire() -> None:
            await asyncio.sleep(max(expires - self.clock(), 0))
            with contextlib.suppress(Exception):  # the client may be gone already
                await self.socket.close(code=4401, reason="the token expired: reconnect with a new one")

        self.watchdog = asyncio.create_task(expire())

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()


class FinGateGraphQL(QuietView, GraphQL[Context | None, None]):
    """Strawberry's ASGI view with FinGate's caller, context, JSON and error format.

    Default deny: with auth on, the Context (the only door to data) is built only for a verified
    Principal; the explorer page is the one answer given without a token, and it runs nothing.
    """

    graphql_transport_ws_handler_class = _SocketHandler
    websocket_adapter_class = _TextSocket  # type: ignore[assignment]

    def __init__(
        self,
        schema: Any,
        store: Store,
        persisted_queries: PersistedQueries,
        settings: Settings,
        authenticator: auth.Authenticator | None,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql",
            allow_queries_via_get=True,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(seconds=SOCKET_INIT_SECONDS),
            max_subscriptions_per_connection=settings.max_subscriptions,
            allowed_origins=settings.cors_origins,  # a browser page on another origin opens a socket only if listed
        )
        self.schema = _Narrowed(schema, _HTTP_OPERATIONS)  # type: ignore[assignment]  # subscriptions: WebSocket
        self.store = store
        self.persisted_queries = persisted_queries
        self.explorer_html = explorer_page()
        self.limits = Limits.from_settings(settings)
        self.authenticator = authenticator
        self.default_tenant = settings.default_tenant
        self.overpayment_allowed = settings.overpayment_allowed
        self.idempotency = Idempotency(IdempotencyKeys(store, settings.idempotency_ttl), settings.idempotency_wait)
        self.projection = settings.projection  # read only what a query selects (app.graphql.projection)
        self.webhook_secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # graphql-transport-ws: subscriptions (and operations) over one socket
            scope["fingate.request_id"] = uuid.uuid4().hex
            socket = WebSocket(scope, receive, send)
            try:
                await self.run(socket)
            finally:
                context = getattr(socket.state, "fingate_context", None)
                if context is not None:
                    context.stop()
            return
        request_id = scope.get("fingate.request_id", "-")
        if scope["type"] != "http":
            return
        try:
            response = await self.run(Request(scope, receive))
        except HTTPException as exc:
            code = getattr(exc, "code", None) or _CODE_OF_STATUS.get(exc.status_code, errors.BAD_USER_INPUT)
            reason = exc.reason
            if reason.startswith("subscriptions are not allowed"):
                reason += ": subscribe over a WebSocket to /graphql (graphql-transport-ws)"
            headers = getattr(exc, "headers", None) or ({"allow": "GET, POST"} if exc.status_code == 405 else None)
            response = error_response(exc.status_code, code, reason, request_id, headers)
        await response(scope, receive, send)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """A POST with an `Idempotency-Key` runs its mutation once per tenant and key (app/idempotency.py)."""
        key = request.headers.get(IDEMPOTENCY_KEY) if isinstance(request, Request) else None
        media_type, _ = parse_content_type(request.headers.get("content-type") or "") if key is not None else ("", "")
        if key is None or request.method != "POST" or media_type.lower() != "application/json":
            return await super().run(request, context, root_value)
        principal = await self.principal(request)
        data = self.parse_json(await request.body())
        request_id = request.scope.get("fingate.request_id", "-")
        if isinstance(data, dict) and data.get("query") is None:
            # A persisted query sent by its hash alone: its stored text tells whether it is a mutation, and is what
            # the key is held to (a retry sending the text instead is the same request).
            text = await self.persisted_queries.stored_text(data.get("extensions"))
            if text is not None:
                data = {**data, "query": text}

        def refuse(status: int, code: str, message: str, headers: dict[str, str] | None) -> Response:
            ERRORS.labels(code).inc()
            return error_response(status, code, message, request_id, headers)

        async def execute() -> Any:
            return await super(FinGateGraphQL, self).run(request, context, root_value)

        return await self.idempotency.run(principal.tenant, key, data, execute, refuse)

    def should_render_graphql_ide(self, request: Any) -> bool:
        # A persisted query's GET has no `query` either; curl's `*/*` must get JSON, not the page.
        # An instance-level `$graphql` is an API answer only (the explorer talks to /graphql).
        return (
            "extensions" not in request.query_params
            and not request.path_params
            and super().should_render_graphql_ide(request)
        )

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

    async def on_ws_connect(self, context: Any) -> UnsetType | None | dict[str, object]:
        """Default deny on a WebSocket: `connection_init`'s payload carries the token (`Authorization: Bearer …`
        or `token`), verified as an HTTP request's; refused, the socket closes with 4403."""
        assert isinstance(context, SocketContext)
        params = context.connection_params or {}
        if self.authenticator is None:
            principal = auth.anonymous(self.default_tenant)
        else:
            header = params.get("Authorization", params.get("authorization"))
            if header is None and isinstance(params.get("token"), str):
                header = f"Bearer {params['token']}"
            try:
                principal = await self.authenticator.principal(header if isinstance(header, str) else None)
            except auth.AuthError as exc:
                raise ConnectionRejectionError({"code": errors.UNAUTHENTICATED, "message": str(exc)}) from None
        context.bind(principal, self.limits if principal.reads_anything else self.limits.without_introspection())
        context.allow_overpayment = self.overpayment_allowed(principal.tenant)
        if principal.expires is not None:
            context.close_at(principal.expires)
        return UNSET

    async def get_context(self, request: Any, response: Any) -> Context | None:  # type: ignore[override]
        if isinstance(request, WebSocket):
            context = SocketContext(self.store, request.scope["fingate.request_id"], self.limits, request)
            request.state.fingate_context = context
            return context
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
            webhook_secret=self.webhook_secret,
        )

    async def parse_http_body(self, request: Any) -> Any:
        resource_type = request.path_params.get("type")
        if resource_type is not None and resource_type not in SERVED:
            raise HTTPError(404, errors.NOT_FOUND, f"{resource_type!r} is not a resource type this server serves")
        if request.method == "POST":
            media_type, _ = parse_content_type(request.content_type or "")
            if media_type.lower() == "application/graphql":
                return await self._graphql_body(request)
            if media_type.lower() == "application/x-www-form-urlencoded":
                return await self._form_body(request)
            if media_type.lower() != "application/json":
                raise HTTPError(
                    415,
                    errors.BAD_USER_INPUT,
                    f"send Content-Type: application/json (or application/graphql), not {media_type or 'none'!r}",
                )
        return await super().parse_http_body(request)

    async def _form_body(self, request: Any) -> GraphQLRequestData:
        """curl's `-d` default: a JSON body sent as a form. A cross-site HTML form can send this type without
        a CORS preflight, so such a body runs queries only, as a GET does (no write by a forged form)."""
        data = self.parse_json(await request.get_body())
        if not isinstance(data, dict):
            raise HTTPError(400, errors.BAD_USER_INPUT, "the request body must be one JSON object (no batches)")
        for name, kind in (("query", str), ("variables", dict), ("extensions", dict), ("operationName", str)):
            if not isinstance(data.get(name), kind | None):
                raise HTTPError(400, errors.BAD_USER_INPUT, f"the body's {name!r} must be a {kind.__name__} or null")
        return _FormRequestData(
            query=data.get("query"),
            variables=data.get("variables"),
            operation_name=data.get("operationName"),
            extensions=data.get("extensions"),
        )

    async def _graphql_body(self, request: Any) -> GraphQLRequestData:
        """GraphQL over HTTP's `application/graphql`: the body is the query text; variables, operationName
        and extensions may come in the URL, as for a GET."""
        try:
            query = (await request.get_body()).decode()
        except UnicodeDecodeError:
            raise HTTPError(400, errors.BAD_USER_INPUT, "the request body is not UTF-8") from None
        params = self.parse_query_params(request.query_params)
        for name in ("variables", "extensions"):
            if not isinstance(params.get(name), dict | None):
                raise HTTPError(400, errors.BAD_USER_INPUT, f"the URL's {name!r} must be a JSON object")
        return GraphQLRequestData(
            query=query,
            variables=params.get("variables"),
            operation_name=params.get("operationName"),
            extensions=params.get("extensions"),
        )

    async def execute_operation(self, request: Any, request_data: Any, context: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if not isinstance(context, Context):  # unreachable by construction: no operation runs without a caller
            raise unauthenticated("send Authorization: Bearer <JWT>")
        # Batched bodies are refused while parsing (Strawberry's batching is off): one operation per request.

        instance = request.path_params  # [base]/{Type}/{id}/$graphql: {type, id}; else empty

        def runs_as(text: str) -> str:
            rewritten = instance_query(text, instance["type"], instance["id"], None)
            return rewritten.text if rewritten is not None else text

        async def run() -> Any:
            try:  # automatic persisted queries (app/graphql/apq.py): the text to run, from the request or the store
                request_data.query = await self.persisted_queries.resolve(
                    request_data.query, request_data.extensions, runs_as if instance else None
                )
            except errors.FinGateError as error:
                return ExecutionResult(data=None, errors=[GraphQLError(error.message, original_error=error)])
            # The latency histogram's label: an operation keyword, or `query` for the shorthand `{ ... }`.
            match = _OPERATION.match(_COMMENTS.sub("", getattr(request_data, "query", None) or ""))
            request.scope["fingate.operation"] = match.group(1) if match else "query"
            if instance and request_data.query:
                try:
                    rewritten = instance_query(
                        request_data.query, instance["type"], instance["id"], request_data.variables
                    )
                except errors.FinGateError as error:
                    return ExecutionResult(data=None, errors=[GraphQLError(error.message, original_error=error)])
                if rewritten is not None:
                    request.scope["fingate.instance"] = rewritten
                    request_data.query, request_data.variables = rewritten.text, rewritten.variables
            form = isinstance(request_data, _FormRequestData)
            if form:  # queries only: Strawberry's operation-type check as for a GET
                kwargs["request_adapter"] = _AsGet(kwargs["request_adapter"])
            try:
                return await super(FinGateGraphQL, self).execute_operation(
                    request=request, request_data=request_data, context=context, **kwargs
                )
            except HTTPException as exc:
                refused = exc.__cause__
                if not isinstance(refused, InvalidOperationTypeError) or refused.operation_type is not (
                    OperationType.MUTATION
                ):
                    raise  # a subscription: no method runs it here (the answer points at the WebSocket)
                if form:
                    message = "a form-encoded body (curl -d's default) runs queries only: send this as application/json"
                    raise HTTPError(415, errors.BAD_USER_INPUT, message) from None
                if request.method == "GET":
                    # GraphQL over HTTP: the method is wrong, not the request (HTTP 405 and the method that works).
                    raise HTTPError(
                        405, errors.BAD_USER_INPUT, f"{exc.reason}: send it with POST", {"allow": "POST"}
                    ) from None
                raise

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
        instance: InstanceQuery | None = request.scope.get("fingate.instance")
        return instance.unwrap(out) if instance is not None else out

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


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as JSON with a code (its own answer is text/plain)."""

    def preflight_response(self, request_headers: Any) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        message = f"{bytes(response.body).decode()}: not allowed by FINGATE_CORS_ORIGINS"
        body = {"errors": [{"message": message, "extensions": {"code": errors.FORBIDDEN}}]}
        headers = {k: v for k, v in response.headers.items() if k.startswith("access-control-")}
        return Response(dumps(body), status_code=400, media_type="application/json", headers=headers)


# /readyz answers within this, whatever the database does.
READY_TIMEOUT = 1.0
GZIP = {"minimum_size": 1024, "compresslevel": 6}  # answers of 1 KB and more are compressed, if the client accepts it


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
            label = _INSTANCE_LABEL if _INSTANCE_PATH.match(path) else path if path in _KNOWN_PATHS else "other"
            if (document := _DOCUMENT_PATH.match(path)) and (document[1], document[2]) in DOCUMENTS:
                label = f"/{{type}}/{{id}}/${document[2]}"  # one metrics label per kind of document, not per id
            REQUESTS.labels(label, scope["method"], str(status)).inc()
            if label in _GRAPHQL_PATHS:
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


# The documents: (type, operation) -> what it reads and how it is drawn (app/documents). GET only.
DOCUMENTS: dict[tuple[str, str], tuple[Callable[..., Awaitable[Any]], str]] = {
    ("Claim", "cms1500"): (documents.claim_sources, "cms1500"),
    ("Claim", "superbill"): (documents.claim_sources, "superbill"),
    ("Encounter", "superbill"): (documents.encounter_sources, "superbill"),
    ("Invoice", "statement"): (documents.invoice_sources, "statement"),
    ("Patient", "statement"): (documents.patient_sources, "statement"),
}
_STATUS_OF_CODE = {
    errors.BAD_USER_INPUT: 400,
    errors.UNAUTHENTICATED: 401,
    errors.FORBIDDEN: 403,
    errors.NOT_FOUND: 404,
    errors.UNAVAILABLE: 503,
    errors.QUERY_TOO_COMPLEX: 503,
}
LAYOUTS = ("plain", "form")


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _as_of(value: str | None) -> date:
    if value is None:
        return datetime.now(UTC).date()
    try:
        if _DAY.match(value):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise errors.bad_input(f"asOf must be a date, YYYY-MM-DD, got {value!r}", expression="asOf")


def _drawing(kind: str, params: Mapping[str, str]) -> Callable[[documents.Sources], bytes]:
    """How a document is drawn, its query parameters checked before anything is read."""
    if kind == "cms1500":
        layout = params.get("layout", "plain")
        if layout not in LAYOUTS:
            raise errors.bad_input(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}", expression="layout")
        return lambda sources: documents.render_cms1500(sources, layout)
    if kind == "superbill":
        return documents.render_superbill
    as_of = _as_of(params.get("asOf"))
    return lambda sources: documents.render_statement(sources, as_of)


def document_endpoint(
    view: Callable[[], Awaitable[FinGateGraphQL]], store: Store, settings: Settings, resource_type: str, operation: str
) -> Callable[[Request], Awaitable[Response]]:
    """`GET [base]/{resource_type}/{id}/${operation}`: a PDF read through the caller's Context (the same door,
    scopes, compartment and tenant as GraphQL); refusals are JSON with a code."""
    gather, kind = DOCUMENTS[(resource_type, operation)]

    async def endpoint(request: Request) -> Response:
        request_id = request.scope.get("fingate.request_id", "-")
        try:
            principal = await (await view()).principal(request)
        except HTTPError as exc:
            return error_response(exc.status_code, exc.code, exc.reason, request_id, exc.headers)
        context = Context(
            store,
            request_id,
            principal,
            client_request_id=request.scope.get("fingate.client_request_id"),
            allow_overpayment=settings.overpayment_allowed(principal.tenant),
        )
        id = request.path_params["id"]

        pdf = b""

        async def run() -> ExecutionResult:
            nonlocal pdf
            draw = _drawing(kind, request.query_params)
            if "/" in id or not id:
                raise errors.not_found(resource_type, id)
            sources = await gather(context, id)
            pdf = await asyncio.to_thread(draw, sources)  # fpdf2 is CPU work: off the event loop
            return ExecutionResult(data=None, errors=None)  # what `within` hands back when the time holds

        try:
            result = await within(settings.request_timeout, run(), store)
        except errors.FinGateError as exc:
            result = ExecutionResult(data=None, errors=[GraphQLError(exc.message, original_error=exc)])
        if result.errors:
            error = result.errors[0].original_error
            assert isinstance(error, errors.FinGateError)
            headers = {"retry-after": str(error.extra["retryAfter"])} if "retryAfter" in error.extra else None
            body = {"errors": [{"message": error.message, "extensions": {**error.extensions, "requestId": request_id}}]}
            ERRORS.labels(error.code).inc()
            return Response(dumps(body), _STATUS_OF_CODE.get(error.code, 400), headers, "application/json")
        filename = f"{resource_type}-{id}-{operation}.pdf"
        headers = {"content-disposition": f'inline; filename="{filename}"', "cache-control": settings.cache_control}
        return Response(pdf, media_type="application/pdf", headers=headers)

    return endpoint


_INSTANCE_LABEL = "/{type}/{id}/$graphql"
_INSTANCE_PATH = re.compile(r"^/[^/]+/[^/]+/\$graphql$")
_GRAPHQL_PATHS = frozenset({"/graphql", "/$graphql", _INSTANCE_LABEL})
_KNOWN_PATHS = frozenset({*_GRAPHQL_PATHS, "/metadata", "/healthz", "/readyz", "/metrics", "/webhooks/stripe"})
_DOCUMENT_PATH = re.compile(r"^/([A-Za-z]+)/[^/]+/\$(cms1500|superbill|statement)$")
FHIR_JSON = "application/fhir+json"


class _Deferred:
    """The GraphQL endpoint of a schema still being built: each request waits for it, the first makes it."""

    def __init__(self, schema: concurrent.futures.Future[Any], make: Callable[[Any], ASGIApp]) -> None:
        self.schema, self.make = schema, make
        self.endpoint: ASGIApp | None = None

    async def ready(self) -> ASGIApp:
        if self.endpoint is None:
            built = await asyncio.wrap_future(self.schema)
            if self.endpoint is None:
                self.endpoint = self.make(built)
        return self.endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (await self.ready())(scope, receive, send)


class _Socket:
    """The WebSocket side of the GraphQL view (subscriptions), once the schema is built."""

    def __init__(self, view: Callable[[], Awaitable[FinGateGraphQL]]) -> None:
        self.view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (await self.view())(scope, receive, send)


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
        state["view"] = FinGateGraphQL(executable, store, persisted_queries, settings, authenticator)
        return ConditionalGET(state["view"], settings.cache_control)

    graphql_endpoint: ASGIApp = (
        _Deferred(schema, endpoint_for) if isinstance(schema, concurrent.futures.Future) else endpoint_for(schema)
    )

    async def graphql_view() -> FinGateGraphQL:
        """The GraphQL view (the verified caller, the Context), once the schema is built."""
        if "view" not in state and isinstance(graphql_endpoint, _Deferred):
            await graphql_endpoint.ready()
        return state["view"]  # type: ignore[no-any-return]

    metrics_token = settings.metrics_token.get_secret_value().encode() if settings.metrics_token else None
    # Public, as FHIR's `metadata` is: it describes what is served and reveals no data. Built once.
    capabilities = dumps(capability_statement(settings, secured=authenticator is not None))

    async def metadata(request: Request) -> Response:
        return Response(capabilities, media_type=FHIR_JSON)

    payments = Payments(store, settings)

    async def stripe_webhook(request: Request) -> Response:
        # Authenticated by the Stripe-Signature alone (no JWT): it posts payments and answers only an outcome,
        # never stored data (README "Patient pay").
        request_id = request.scope.get("fingate.request_id", "-")
        try:
            reply = await payments.receive(await request.body(), request.headers.get("stripe-signature"), request_id)
        except WebhookRefused as refused:
            return error_response(refused.status, refused.code, refused.message, request_id)
        return JSONResponse(reply.body, status_code=reply.status)

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
        # Deliveries out (rest-hooks, the clearinghouse): one dispatcher of each per instance, leased in the database.
        runners = dispatch.runners(store, settings) if settings.dispatch else []
        running = [asyncio.ensure_future(run()) for run in runners]
        yield
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(
        routes=[
            Route("/graphql", graphql_endpoint),  # the view answers other methods with a JSON 405
            Route("/$graphql", graphql_endpoint),  # FHIR GraphQL's system level: the same endpoint
            # The instance level: the view runs the query with that resource as its root (app/graphql/instance.py).
            Route("/{type}/{id}/$graphql", graphql_endpoint),
            Route("/metadata", metadata, methods=["GET"]),
            *(
                Route(
                    f"/{rtype}/{{id}}/${op}",
                    document_endpoint(graphql_view, store, settings, rtype, op),
                    methods=["GET"],
                )
                for rtype, op in DOCUMENTS
            ),
            WebSocketRoute("/graphql", _Socket(graphql_view)),  # subscriptions: graphql-transport-ws
            Mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="graphiql"),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
        ],
        lifespan=lifespan,
        exception_handlers={StarletteHTTPException: http_error},
    )
    state["app"] = app
    app.state.compiled_engine = state["compiled_engine"]
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # type: ignore[arg-type]
    if settings.cors_origins:
        app.add_middleware(
            JSONCORSMiddleware,  # type: ignore[arg-type]
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-request-id"],
        )
    app.add_middleware(RequestMiddleware)  # type: ignore[arg-type]
    app.add_middleware(GZipMiddleware, **GZIP)  # type: ignore[arg-type]
    return app
