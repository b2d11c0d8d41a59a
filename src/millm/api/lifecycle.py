"""Requests in flight, and refusing new ones while the server drains before exit (see millm.server).

`InflightMiddleware` counts the requests that may change state or generate (every method but GET/HEAD/
OPTIONS) in `Runtime.inflight`, for the whole response, streams included; once `Runtime.draining` is set
it answers every new request but /health and /metrics with a 503 `shutting_down` in the OpenAI envelope.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from millm.errors import Unavailable

OPEN_WHILE_DRAINING = ("/health", "/metrics")
READ_ONLY = ("GET", "HEAD", "OPTIONS")


class InflightMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
        if runtime is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if runtime.draining and scope["path"] not in OPEN_WHILE_DRAINING:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1001, "reason": "the server is shutting down"})
                return
            from millm.api.errors import count_rejected, millm_response

            count_rejected(scope, 503)
            refusal = Unavailable("the server is shutting down and accepts no new requests", code="shutting_down",
                                  retry_after=5.0)
            await millm_response(refusal)(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"] in READ_ONLY:
            await self.app(scope, receive, send)
            return
        runtime.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            runtime.inflight -= 1
