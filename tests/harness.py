"""Test harness: the app over a real database, a GraphQL call helper, and query-from-data selection."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from app.embedded import port_taken
from app.fhir.decimals import plain_text
from app.fhir.model import SERVED_RESOURCES
from app.http import create_app, loads
from app.store import Store

EXAMPLES = Path(__file__).resolve().parents[1] / "schema" / "examples"


@cache
def schema() -> Any:
    from app.graphql.build import build_schema

    return build_schema()


def client_for(store: Store, **app_options: Any) -> httpx.AsyncClient:
    """An HTTP client of a new app over `store`; the app itself is the client's `fingate_app`."""
    app = create_app(store, schema(), **app_options)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fingate.test")
    client.fingate_app = app  # type: ignore[attr-defined]
    return client


async def gql(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    """POST a GraphQL request; returns the JSON body (decimals parsed as Decimal)."""
    body = json.dumps({"query": query, "variables": variables or {}}, default=str)
    response = await client.post("/graphql", content=body, headers={"content-type": "application/json", **kw})
    assert response.status_code == 200, response.text
    return loads(response.content)  # type: ignore[no-any-return]


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in result, result["errors"]
    return result["data"]  # type: ignore[no-any-return]


def error_codes(result: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in result.get("errors", [])]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(), parse_float=Decimal)


def selection_for(value: Any) -> str:
    """A selection set that asks for exactly the keys present in `value` (FHIR JSON)."""
    if isinstance(value, list):
        merged: dict[str, Any] = {}
        for item in value:
            if isinstance(item, dict):
                for k, v in item.items():
                    merged.setdefault(k, []).append(v)
        return selection_for_keys(merged)
    return selection_for_keys({k: [v] for k, v in value.items()})


def selection_for_keys(keys: dict[str, list[Any]]) -> str:
    parts = []
    for key, values in keys.items():
        flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
        if key == "contained":
            by_type: dict[str, list[Any]] = {}
            for r in flat:
                by_type.setdefault(r["resourceType"], []).append(r)
            fragments = [
                f"... on {t} {{ {selection_for(rs)} }}"
                if t in SERVED_RESOURCES
                else "... on UnservedResource { resourceType id }"
                for t, rs in by_type.items()
            ]
            parts.append("contained { " + " ".join(dict.fromkeys(fragments)) + " }")
        elif any(isinstance(x, dict) for x in flat):
            parts.append(f"{key} {{ {selection_for([x for x in flat if isinstance(x, dict)])} }}")
        else:
            parts.append(key)
    return " ".join(parts)


def as_response_json(value: Any) -> Any:
    """What FHIR JSON looks like after a trip through GraphQL: decimals as strings."""
    if isinstance(value, dict):
        return {k: as_response_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_response_json(v) for v in value]
    if isinstance(value, Decimal):
        return plain_text(value)
    return value


def without_nulls(value: Any) -> Any:
    """GraphQL answers null for a selected key one list item lacks; FHIR JSON omits it."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def json_with_decimals(value: Any) -> str:
    """Serialize with Decimal values as bare JSON numbers, digits untouched."""
    markers: dict[str, str] = {}

    def mark(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        if isinstance(v, Decimal):
            key = f"@@dec{len(markers)}@@"
            markers[key] = str(v)
            return key
        return v

    text = json.dumps(mark(value))
    for key, digits in markers.items():
        text = text.replace(f'"{key}"', digits)
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    command: list[str], env: dict[str, str], log: Path, timeout: float, **popen: Any
) -> tuple[subprocess.Popen[bytes], int]:
    """`command` (a `fingate serve`) on a free port, given as FINGATE_PORT, until /readyz answers: the process and
    its port. A free port found beforehand may be taken before the server binds it (a connection's local port):
    when the server stops saying so, it is started again on another, up to three times."""
    for attempt in range(1, 4):
        port = free_port()
        logged = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            server = subprocess.Popen(
                command, env={**env, "FINGATE_PORT": str(port)}, stdout=out, stderr=subprocess.STDOUT, **popen
            )
        try:
            wait_ready(port, server, log, timeout)
            return server, port
        except AssertionError:
            taken = server.poll() is not None and port_taken(log, logged)
            if server.poll() is None:
                server.kill()
                server.wait()
            if not taken or attempt == 3:
                raise
    raise AssertionError("unreachable")


def wait_ready(port: int, server: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Until `fingate serve` answers /readyz; fails with its log if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"fingate serve exited with {server.returncode}:\n{log.read_text()}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"fingate serve was not ready within {timeout:.0f} s:\n{log.read_text()}")
