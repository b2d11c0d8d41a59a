"""Shared WebSocket plumbing: push items from an async source until the client goes away."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from fastapi import WebSocket, WebSocketDisconnect

POLL_S = 0.5


async def push_until_closed(websocket: WebSocket, next_item: Callable[[], Awaitable[Any]],
                            send: Callable[[Any], Awaitable[bool]]) -> None:
    """Await `next_item()` and hand each item to `send` until the client disconnects or `send`
    returns False. The client's own messages are read (and ignored) only to notice the disconnect."""
    closed = asyncio.Event()

    async def read_until_closed() -> None:
        try:
            while (await websocket.receive()).get("type") != "websocket.disconnect":
                pass
        finally:
            closed.set()

    reader = asyncio.create_task(read_until_closed())
    try:
        while not closed.is_set():
            try:
                item = await asyncio.wait_for(next_item(), timeout=POLL_S)
            except TimeoutError:
                continue
            if not await send(item):
                break
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
