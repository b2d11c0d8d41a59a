"""Server-sent event responses shared by the route modules (route modules never import each other)."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from typing import Any

from sse_starlette import EventSourceResponse
from sse_starlette.sse import ServerSentEvent, ensure_bytes
from starlette.types import Receive, Scope, Send

from millm.logs import BODY_SEND

try:  # uvicorn's HTTP/1.1 protocol on httptools (the default where httptools is installed)
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
except ImportError:  # pragma: no cover - without httptools: no worker writes
    RequestResponseCycle = None  # type: ignore[assignment,misc]

_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)  # (Linux: a peer that went away is EPIPE, not SIGPIPE)

RAW_SEND = "millm.raw_send"  # scope key: the server's own send, beneath everything (`RawSend`)


class RawSend:
    """ASGI wrapper around the whole app (millm.server puts it outside the middleware that uvicorn adds): an HTTP
    request's scope gets the server's own `send` under `RAW_SEND`, which `Connection` looks into."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)


class Connection:
    """The socket beneath a streamed response, for the worker thread's writes of plain tokens
    (`services.text_chunks.WorkerWrites`), which write what uvicorn would write for a body message, straight to the
    socket, while the loop has nothing of the response to write.

    Only for uvicorn's protocol on httptools (its send is `RequestResponseCycle.send`, which frames a body message as
    one HTTP chunk and writes it to the transport, changing nothing else of its state), an HTTP/1.1 request over
    plain TCP or a Unix socket: no TLS, chunked framing, not a HEAD request. The writes go through a duplicate of the
    socket's file descriptor (closed by `close`), so that they can never reach another connection that reuses the
    number once the loop closed its own; they never block (the socket is non-blocking) and take MSG_NOSIGNAL (a peer
    that went away is an error, not a signal). uvicorn writes to the connection on its own only when the client
    breaks the protocol (a 400 for unparsable bytes sent while the response streams, then it closes the connection);
    the worker checks for a closing transport before each write."""

    def __init__(self, cycle: Any, sock: socket.socket, stream: EventStream) -> None:
        self._cycle, self._transport, self._sock, self._stream = cycle, cycle.transport, sock, stream

    @classmethod
    def open(cls, send: Any, stream: EventStream) -> Connection | None:
        """For a response whose server send is `send` (its scope's RAW_SEND), once the response has started; None
        where the worker may not write (another server or protocol, TLS, no chunked framing, the client gone)."""
        cycle = getattr(send, "__self__", None)
        if RequestResponseCycle is None or type(cycle) is not RequestResponseCycle:
            return None
        transport = cycle.transport
        if (cycle.chunked_encoding is not True or cycle.scope.get("method") == "HEAD"
                or cycle.scope.get("http_version") != "1.1" or not cycle.response_started
                or cycle.response_complete or cycle.disconnected or transport.is_closing()
                or transport.get_extra_info("sslcontext") is not None):
            return None
        raw = transport.get_extra_info("socket")
        try:
            if (raw is None or raw.type != socket.SOCK_STREAM
                    or raw.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)):
                return None
            sock = socket.socket(raw.family, raw.type, fileno=os.dup(raw.fileno()))
        except (OSError, ValueError):
            return None
        if os.get_blocking(sock.fileno()):  # (the loop's sockets are non-blocking: one that is not is not the loop's)
            sock.close()
            return None
        sock.setblocking(False)  # (the object's own mode: send never waits)
        return cls(cycle, sock, stream)

    @staticmethod
    def chunk(body: bytes) -> bytes:
        """The bytes uvicorn writes for a body message (`RequestResponseCycle.send` with chunked framing)."""
        return b"%x\r\n%b\r\n" % (len(body), body)

    def write(self, data: bytes) -> int:
        if self._transport.is_closing() or self._cycle.disconnected:
            return 0
        return self._sock.send(data, _NOSIGNAL)

    def ready(self) -> bool:
        cycle, transport = self._cycle, self._transport
        return (not cycle.disconnected and not cycle.response_complete and not cycle.flow.write_paused
                and not transport.is_closing() and transport.get_write_buffer_size() == 0 and self._stream.idle())

    def flush(self, rest: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(rest)

    def close(self) -> None:
        self._sock.close()


class EventStream(EventSourceResponse):
    """sse-starlette's response (its headers, framing and ping comments), served with less work per request and
    per event: the API's event streams (`CompletionStream` for the completion streams).

    sse-starlette runs four tasks in an anyio task group per response (the stream, pings, a disconnect listener, a
    shutdown listener) and wraps every send in a cancel scope for its optional send timeout. Here the stream runs in
    the request's task and one more both listens for the client's disconnect (which cancels the stream, and so
    its generator and the engine requests behind it) and sends the ping comments while the client waits. Server
    shutdown needs no listener: the drain (millm.server) lets streams finish, then uvicorn cancels what is left.
    Anything this does not cover (a send timeout, a HEAD or WebSocket scope, a ping factory) takes the parent's
    path."""

    media_type = "text/event-stream"
    _cancelled_by_client = False
    _pending: asyncio.Future[Any] | None = None  # a body message sent by `_send_now` that waits for the client
    _writes: Any = None  # the worker thread's writes of plain tokens (services WorkerWrites), once set
    _raw_send: Any = None  # the server's own send (RAW_SEND), when the app runs inside `RawSend`
    _started = False  # whether http.response.start went out
    # True: the headers go out with the first event (or the first ping, or the end) instead of at once. For streams
    # whose first event is at hand (a completion stream starts after the prefill): the client then reads them in
    # one wake-up, not the headers and then, a moment later, the first token. Event feeds that may stay quiet a long
    # time keep the default, so that their clients see the response start at once.
    headers_with_first_event = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] == "HEAD" or self.send_timeout is not None
                or self.ping_message_factory is not None or self.data_sender_callable is not None
                or self.client_close_handler_callable is not None or self._shutdown_event is not None):
            await super().__call__(scope, receive, send)
            return
        lock = asyncio.Lock()  # the last message and a ping: no ping after the response's end
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(self._watch(receive, send, lock, task))
        try:
            self._raw_send = scope.get(RAW_SEND)
            await self._stream(send, lock, scope.get(BODY_SEND, send))
        except asyncio.CancelledError:
            if not self._cancelled_by_client or task.cancelling() > 1:
                raise  # cancelled from outside, not (only) by the client's disconnect
            task.uncancel()
        else:
            if self._cancelled_by_client:  # the disconnect came as the stream ended: take its pending cancel here
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    if task.cancelling() > 1:
                        raise
                task.uncancel()
        finally:
            watcher.cancel()
        if self.background is not None:
            await self.background()

    async def _stream(self, send: Send, lock: asyncio.Lock, body_send: Send) -> None:
        """body_send: where the events go once the response has started (through `send`): the send beneath the
        app's middleware when `logs.AccessLog` left it in the scope (they only look at the start), else `send`."""
        if not self.headers_with_first_event:
            await self._start(send)
        iterator: Any = self.body_iterator
        # The body's shortcut (openai_routes._Sse, services ChunkStream), set once the response has started: plain
        # tokens' events are then written from the relay's drain with `_send_now`, in order with everything else.
        bypass = getattr(iterator, "bypass", None)
        bypassed: Any = None  # bypass, once set
        # And then the worker thread's own writes of plain tokens (openai_routes._Sse, services WorkerWrites), where
        # the server's connection allows them (`Connection`)
        worker_writes = getattr(iterator, "worker_writes", None)
        raw_send = self._raw_send
        try:
            async for data in iterator:
                body = data if type(data) is bytes else ensure_bytes(data, self.sep)
                if not self._started:
                    async with lock:  # (a ping may have started the response meanwhile)
                        if not self._started:
                            await self._start(send)
                if self._pending is not None:
                    await self._pending
                if self._writes is not None:
                    self._writes.reclaim()
                await body_send({"type": "http.response.body", "body": body, "more_body": True})
                if bypass is not None and bypassed is None:
                    bypass(functools.partial(self._send_now, body_send))
                    bypassed = bypass
                    conn = Connection.open(raw_send, self) if worker_writes is not None and raw_send else None
                    if conn is not None and worker_writes is not None:
                        self._writes = worker_writes(conn)
                        if self._writes is None:
                            conn.close()
            if self._writes is not None:
                self._writes.reclaim()  # (the rest of a partly taken write before the end)
        except BaseException:
            # Cancelled or failed while the generator waits at a yield: close it so that its cleanup runs (the
            # engine requests are cancelled, the request is logged) before the error goes on.
            self.active = False  # (no more direct writes; one that waits is dropped)
            if self._writes is not None:
                self._writes.close()
            if self._pending is not None and not self._pending.done():
                self._pending.cancel()
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
            raise
        finally:
            if bypassed is not None:
                bypassed(None)
            if self._writes is not None:
                self._writes.close()
        async with lock:
            self.active = False
            if self._pending is not None:
                await self._pending
            if not self._started:
                await self._start(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def idle(self) -> bool:
        """Nothing of this response is being sent by the loop (for `Connection.ready`)."""
        pending = self._pending
        return self.active and (pending is None or pending.done() and not pending.cancelled()
                                and pending.exception() is None)

    def _send_now(self, body_send: Send, body: bytes) -> bool:
        """Send a body message from a plain callback on the loop (the body's shortcut). The server's send returns at
        once unless the client is not keeping up (flow control): then a task finishes it, and every later message
        waits for that task. False: nothing sent (the response has ended, or such a send is still waiting)."""
        pending = self._pending
        if not self.active or pending is not None and (not pending.done() or pending.cancelled()
                                                       or pending.exception() is not None):
            return False  # (a failed send's error is raised by the stream's task, which awaits it)
        self._pending = None
        if self._writes is not None:
            self._writes.reclaim()
        sending = body_send({"type": "http.response.body", "body": body, "more_body": True})
        try:
            waiting = sending.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return True
        self._pending = asyncio.ensure_future(_Resume(sending, waiting))
        return True

    async def _start(self, send: Send) -> None:
        self._started = True
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

    async def _watch(self, receive: Receive, send: Send, lock: asyncio.Lock, task: asyncio.Task[Any]) -> None:
        """Until the client disconnects (then cancel the stream's task): its messages, and a ping each interval."""
        loop = asyncio.get_running_loop()
        interval = self._ping_interval
        while True:
            try:
                if interval > 0:
                    async with asyncio.timeout_at(loop.time() + interval):
                        message = await receive()
                else:
                    message = await receive()
            except TimeoutError:
                ping = ensure_bytes(ServerSentEvent(comment=f"ping - {_now()}", sep=self.sep), self.sep)
                async with lock:
                    if self.active:
                        if not self._started:  # no event yet: the headers and a ping keep the client waiting
                            await self._start(send)
                        if self._writes is not None:
                            self._writes.reclaim()
                        await send({"type": "http.response.body", "body": ping, "more_body": True})
                continue
            if message["type"] == "http.disconnect":
                if self.active:
                    self.active = False
                    self._cancelled_by_client = True
                    task.cancel()
                return


class _Resume:
    """Awaitable: the rest of a coroutine started by hand (`coro.send(None)` gave `waiting`), as `await coro` would
    have run it."""

    def __init__(self, coro: Any, waiting: Any) -> None:
        self.coro, self.waiting = coro, waiting

    def __await__(self) -> Any:
        coro, value = self.coro, self.waiting
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # (a cancellation: passed on into the coroutine)
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class CompletionStream(EventStream):
    """The completion streams' response: it starts after the prefill, so its first event is at hand and the headers
    go out with it."""

    headers_with_first_event = True


def _now() -> str:
    from datetime import datetime, timezone

    return str(datetime.now(timezone.utc))


def event(data: str) -> bytes:
    """One SSE event, as sse-starlette frames {"data": data} with sep="\\n"; JSON text has no line breaks."""
    return b"data: " + data.encode() + b"\n\n"
