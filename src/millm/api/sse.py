"""Server-sent event responses shared by the route modules (route modules never import each other)."""

from __future__ import annotations

from sse_starlette import EventSourceResponse
from starlette.types import Message, Send


class EventStream(EventSourceResponse):
    """sse-starlette's response, with its media type as a class attribute so that OpenAPI documents it.

    sse-starlette wraps every send in an anyio cancel scope for its optional send timeout; without a timeout (none
    is set here) that scope does nothing but costs time on the event loop per token, so it is skipped."""

    media_type = "text/event-stream"

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


def event(data: str) -> bytes:
    """One SSE event, as sse-starlette frames {"data": data} with sep="\\n"; JSON text has no line breaks."""
    return b"data: " + data.encode() + b"\n\n"
