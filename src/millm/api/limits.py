"""Request body size limit, as pure ASGI middleware: nothing larger than `max_bytes` is read.

A request whose Content-Length is over the limit is answered 413 at once, before any of its body is
read. A body without a Content-Length (chunked) is counted as it streams in; the chunk that passes the
limit raises `BodyTooLarge` from `receive`, which FastAPI passes through its body parsing (it is an
HTTPException) to the one error mapper, so the client gets the OpenAI envelope either way.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from millm.errors import PayloadTooLarge

SCOPE_KEY = "millm.max_body_bytes"


class BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413, detail="Content Too Large")


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than this server accepts ({limit} bytes; see the "
                           "max_body_bytes setting)")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        scope[SCOPE_KEY] = limit
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                if declared is not None and declared > limit:
                    from millm.api.errors import count_rejected, millm_response

                    count_rejected(scope, 413)
                    response = millm_response(too_large(limit))
                    response.headers["Connection"] = "close"
                    await response(scope, receive, send)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)
