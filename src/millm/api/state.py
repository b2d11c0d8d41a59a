"""Access to the app's one Runtime from request handlers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket

from millm.services.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_ws_runtime(websocket: WebSocket) -> Runtime:
    return websocket.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
WsRuntimeDep = Annotated[Runtime, Depends(get_ws_runtime)]
