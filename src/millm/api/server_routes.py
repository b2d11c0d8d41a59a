"""POST /api/shutdown: `millm stop` asks the server to shut down gracefully."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from millm.errors import Forbidden, Unavailable
from millm.protocol.openai import ErrorResponse

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class ShutdownOut(BaseModel):
    status: Literal["shutting_down"] = "shutting_down"


@router.post("/api/shutdown", status_code=202, response_model=ShutdownOut, operation_id="shutdownServer",
             responses={code: {"model": ErrorResponse} for code in (403, 503)})
async def shutdown_server(request: Request) -> Any:
    """Shut the server down gracefully.

    The server stops accepting connections, lets requests in flight finish (up to 5 s) and exits, as on Ctrl-C.
    Allowed from the server's own machine (a loopback client), or from anywhere when the server is guarded by an
    API key (MILLM_API_KEY). Only a server started by `millm serve` can be stopped this way (503 otherwise)."""
    settings = request.app.state.runtime.settings
    client = request.client.host if request.client else ""
    if client not in LOOPBACK and not getattr(settings, "api_key", None):
        raise Forbidden("shutdown is accepted from the server's own machine, or with an API key (MILLM_API_KEY)",
                        code="shutdown_forbidden")
    stop = getattr(request.app.state, "request_shutdown", None)
    if stop is None:
        raise Unavailable("this server was not started by `millm serve`; stop it the way it was started",
                          code="shutdown_unavailable")
    log.info("shutdown requested by %s", client or "unknown client")
    stop()
    return ShutdownOut()
