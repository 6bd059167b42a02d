"""Test harness for live updates: the app on a real uvicorn on loopback (port 0), a graphql-transport-ws client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
import websockets

from app.http import create_app, loads
from app.settings import Settings
from app.store import Store
from tests.harness import schema

WAIT = float(
    __import__("os").environ.get("FINGATE_TEST_WAIT", "60")
)  # generous bound on any one wait: the machine is shared; nothing asserts on time


@contextlib.asynccontextmanager
async def serving(store: Store, settings: Settings) -> AsyncIterator[str]:
    """`host:port` of the app over `store`, served by uvicorn in this event loop until the block ends."""
    async with serving_app(create_app(store, schema(), settings=settings)) as address:
        yield address


@contextlib.asynccontextmanager
async def serving_app(app: Any) -> AsyncIterator[str]:
    """`host:port` of any ASGI app, served by uvicorn on loopback (port 0) in this event loop."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # the test runner's signals
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class Socket:
    """One graphql-transport-ws connection."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                frame = await self.ws.recv()
                assert isinstance(frame, str), "a binary frame: browsers' graphql-ws cannot read it"
                message = loads(frame)
                if message.get("type") != "ping":
                    return message  # type: ignore[no-any-return]
                await self.send({"type": "pong"})

    async def subscribe(self, id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        await self.send({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})

    async def next(self, id: str) -> dict[str, Any]:
        """The next `next` payload of operation `id` (failing on anything else)."""
        message = await self.receive()
        assert message.get("id") == id and message["type"] == "next", message
        return message["payload"]  # type: ignore[no-any-return]

    async def closed(self) -> websockets.frames.Close | None:
        """Wait for the server to close the socket; its close frame."""
        async with asyncio.timeout(WAIT):
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await self.ws.recv()
        return self.ws.protocol.close_rcvd  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def socket(address: str, payload: dict[str, Any] | None, ack: bool = True) -> AsyncIterator[Socket]:
    """A connection to `ws://address/graphql`, initialised with `payload` (and acknowledged, when `ack`)."""
    async with websockets.connect(f"ws://{address}/graphql", subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        s = Socket(ws)
        if payload is not None:
            await s.send({"type": "connection_init", "payload": payload})
            if ack:
                assert (await s.receive())["type"] == "connection_ack"
        yield s
