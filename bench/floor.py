"""The floor of a workload over HTTP: its answer's bytes served by a bare route (no GraphQL, no database), with
FinGate's gzip settings, under uvicorn as `fingate serve` runs it, to the same client."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.http import GZIP

BODY = "FINGATE_BENCH_FLOOR_BODY"  # the file holding the answer to serve


def create_app(body: bytes) -> Starlette:
    async def answer(request: Request) -> Response:
        await request.body()  # read as FinGate reads it
        return Response(body, media_type="application/json")

    async def ready(_: Request) -> Response:
        return JSONResponse({"status": "ready"})

    app = Starlette(routes=[Route("/graphql", answer, methods=["POST"]), Route("/readyz", ready)])
    app.add_middleware(GZipMiddleware, **GZIP)  # type: ignore[arg-type]
    return app


def app() -> Starlette:
    """uvicorn's factory (`uvicorn --factory bench.floor:app`): the answer in the file `FINGATE_BENCH_FLOOR_BODY` names."""
    return create_app(Path(os.environ[BODY]).read_bytes())
