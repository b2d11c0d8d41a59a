"""Access to the app's one Runtime from request handlers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket

from millm.services.runtime import Runtime


# Async on purpose: FastAPI runs a plain `def` dependency on its thread pool, a thread hop (and a GIL hand-off with
# the generation thread) on every request, for one attribute read.
async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_ws_runtime(websocket: WebSocket) -> Runtime:
    return websocket.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
WsRuntimeDep = Annotated[Runtime, Depends(get_ws_runtime)]
