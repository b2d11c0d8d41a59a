"""EventStream at the ASGI level: its framing, ping comments, and the client's disconnect cancelling the stream."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest

from millm.api.sse import CompletionStream, EventStream, event

SCOPE = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}


class Client:
    """An ASGI server's side: records what is sent; `receive` answers a disconnect once `gone` is set."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


def test_frames_events_then_ends_the_body():
    async def main() -> Client:
        async def gen() -> AsyncIterator[bytes]:
            yield event('{"a":1}')
            yield event("[DONE]")

        client = Client()
        await EventStream(gen(), sep="\n", ping=15, headers={"X-Test": "1"})(SCOPE, client.receive, client.send)
        return client

    client = asyncio.run(main())
    start = client.sent[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"x-test"] == b"1" and headers[b"cache-control"] == b"no-store"
    assert client.bodies() == [b'data: {"a":1}\n\n', b"data: [DONE]\n\n", b""]
    assert client.sent[-1]["more_body"] is False


def test_events_skip_the_middleware_sends_once_started_when_the_scope_has_the_body_send():
    """logs.AccessLog leaves the send beneath the app's middleware in the scope: the start and the end go through the
    middleware chain (which looks at the start), each event straight to the server's send."""
    from millm.logs import BODY_SEND

    async def main() -> tuple[Client, list[str]]:
        server = Client()
        through: list[str] = []

        async def chain(message: dict[str, Any]) -> None:  # the middleware's wrapped send
            through.append(message["type"] + ("" if message.get("more_body", False) else " end"))
            await server.send(message)

        async def gen() -> AsyncIterator[bytes]:
            yield event("1")
            yield event("2")

        scope = {**SCOPE, BODY_SEND: server.send}
        await CompletionStream(gen(), sep="\n", ping=15)(scope, server.receive, chain)
        return server, through

    server, through = asyncio.run(main())
    assert server.sent[0]["type"] == "http.response.start"
    assert server.bodies() == [b"data: 1\n\n", b"data: 2\n\n", b""]  # in order, all delivered
    assert through == ["http.response.start end", "http.response.body end"]  # not the events


def test_pings_while_the_stream_waits_and_never_after_the_end():
    async def main() -> Client:
        async def gen() -> AsyncIterator[bytes]:
            yield event("1")
            await asyncio.sleep(0.35)
            yield event("2")

        client = Client()
        await EventStream(gen(), sep="\n", ping=0.1)(SCOPE, client.receive, client.send)
        await asyncio.sleep(0.25)  # (a ping task left running would send here)
        return client

    client = asyncio.run(main())
    bodies = client.bodies()
    assert bodies[0] == b"data: 1\n\n" and bodies[-2:] == [b"data: 2\n\n", b""]
    pings = bodies[1:-2]
    assert 2 <= len(pings) <= 4, bodies
    assert all(p.startswith(b": ping - ") and p.endswith(b"\n\n") for p in pings), pings


def test_a_disconnect_cancels_the_stream_and_closes_its_generator():
    closed: list[str] = []

    async def main() -> Client:
        client = Client()

        async def gen() -> AsyncIterator[bytes]:
            try:
                yield event("1")
                client.gone.set()
                await asyncio.sleep(30)  # (a token that never comes)
                yield event("2")
            except asyncio.CancelledError:
                closed.append("cancelled")
                raise
            finally:
                closed.append("finally")

        await asyncio.wait_for(EventStream(gen(), sep="\n", ping=15)(SCOPE, client.receive, client.send), 5)
        assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]
        await asyncio.sleep(0)  # the request's task goes on normally (no cancellation left pending)
        return client

    client = asyncio.run(main())
    assert closed == ["cancelled", "finally"]
    assert client.bodies() == [b"data: 1\n\n"]  # no end of body: the client is gone


def test_a_cancellation_from_outside_propagates_and_closes_the_generator():
    closed: list[str] = []

    async def main() -> None:
        client = Client()

        async def gen() -> AsyncIterator[bytes]:
            try:
                yield event("1")
                await asyncio.sleep(30)
                yield event("2")
            finally:
                closed.append("finally")

        task = asyncio.ensure_future(EventStream(gen(), sep="\n", ping=15)(SCOPE, client.receive, client.send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert closed == ["finally"]


def test_an_error_in_the_stream_propagates():
    async def main() -> None:
        async def gen() -> AsyncIterator[bytes]:
            yield event("1")
            raise RuntimeError("boom")

        client = Client()
        await EventStream(gen(), sep="\n", ping=15)(SCOPE, client.receive, client.send)

    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(main())


def test_a_disconnect_as_the_stream_ends_leaves_no_cancellation_behind():
    async def main() -> Client:
        client = Client()

        async def gen() -> AsyncIterator[bytes]:
            yield event("1")
            client.gone.set()
            try:  # a generator that finishes anyway when cancelled (the cancel reaches it, then it ends)
                for _ in range(3):
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                pass

        await EventStream(gen(), sep="\n", ping=15)(SCOPE, client.receive, client.send)
        assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]
        await asyncio.sleep(0.01)  # no cancellation pending for the request's task
        return client

    client = asyncio.run(main())
    assert client.bodies()[0] == b"data: 1\n\n"


def test_a_completion_stream_sends_its_headers_with_the_first_event_or_a_ping_or_the_end():
    async def run(gen: Any, ping: float = 15) -> Client:
        client = Client()
        await CompletionStream(gen, sep="\n", ping=ping)(SCOPE, client.receive, client.send)
        return client

    async def main() -> tuple[Client, Client, Client, list[int]]:
        seen_at_first: list[int] = []
        first_client: list[Client] = []

        async def first() -> AsyncIterator[bytes]:
            await asyncio.sleep(0.05)  # (the first token is on its way)
            seen_at_first.append(len(first_client[0].sent))
            yield event("1")

        c1 = Client()
        first_client.append(c1)
        await CompletionStream(first(), sep="\n", ping=15)(SCOPE, c1.receive, c1.send)

        async def slow() -> AsyncIterator[bytes]:
            await asyncio.sleep(0.25)
            yield event("late")

        async def empty() -> AsyncIterator[bytes]:
            return
            yield b""  # (an async generator with no events)

        return c1, await run(slow(), ping=0.1), await run(empty()), seen_at_first

    c1, slow, empty, seen_at_first = asyncio.run(main())
    assert seen_at_first == [0]  # nothing was sent while the first event was being made
    assert [m["type"] for m in c1.sent] == ["http.response.start", "http.response.body", "http.response.body"]
    # a stream whose first event takes longer than the ping interval: headers, then pings keep the client waiting
    assert slow.sent[0]["type"] == "http.response.start" and slow.bodies()[0].startswith(b": ping - ")
    assert slow.bodies()[-2:] == [b"data: late\n\n", b""]
    assert [m["type"] for m in empty.sent] == ["http.response.start", "http.response.body"]
    assert empty.sent[0]["status"] == 200 and empty.bodies() == [b""]


def test_by_default_the_headers_go_out_before_the_first_event():
    async def main() -> tuple[Client, list[int]]:
        client = Client()
        seen: list[int] = []

        async def gen() -> AsyncIterator[bytes]:
            await asyncio.sleep(0.05)  # (an event feed that is quiet for a while)
            seen.append(len(client.sent))
            yield event("1")

        await EventStream(gen(), sep="\n", ping=15)(SCOPE, client.receive, client.send)
        return client, seen

    client, seen = asyncio.run(main())
    assert seen == [1] and client.sent[0]["type"] == "http.response.start"


class ShortcutBody:
    """A body with the shortcut of `openai_routes._Sse`: events from `queue` (None ends it), and `send` once the
    stream sets its bypass."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.send: Any = None
        self.bypasses: list[bool] = []

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        while (item := await self.queue.get()) is not None:
            yield item

    def bypass(self, send: Any) -> None:
        self.send = send
        self.bypasses.append(send is not None)


def test_a_body_shortcut_writes_in_order_with_the_events_and_waits_for_a_held_send():
    """Once the response has started, the body gets a direct send (`EventStream._send_now`): it writes at once; when
    the server's send waits (flow control), it says so for later direct writes, and the stream's next event waits
    for the held one, so nothing is reordered; at the end the shortcut is taken away."""
    from millm.logs import BODY_SEND

    async def main() -> tuple[Client, list[Any], list[bool]]:
        server = Client()
        release = asyncio.Event()
        hold = [False]

        async def body_send(message: dict[str, Any]) -> None:  # the server's send, with flow control
            if hold[0]:
                hold[0] = False
                await release.wait()
            await server.send(message)

        body = ShortcutBody()
        scope = {**SCOPE, BODY_SEND: body_send}
        stream = asyncio.ensure_future(CompletionStream(body, sep="\n", ping=15)(scope, server.receive, server.send))
        results: list[Any] = []
        body.queue.put_nowait(event("1"))
        while body.send is None:
            await asyncio.sleep(0)
        send = body.send
        results.append(body.send(event("2")))  # written at once, in this call
        results.append(list(server.bodies()))
        hold[0] = True
        results.append(body.send(event("3")))  # taken, but the server's send waits
        results.append(body.send(event("4")))  # refused while it waits: the caller sends it the ordinary way
        body.queue.put_nowait(event("4"))
        for _ in range(5):
            await asyncio.sleep(0)
        results.append(list(server.bodies()))  # neither 3 nor 4 yet
        release.set()
        for _ in range(5):
            await asyncio.sleep(0)
        results.append(body.send(event("5")))
        hold[0], release = True, asyncio.Event()
        results.append(body.send(event("6")))  # held as the stream ends: the end waits for it
        body.queue.put_nowait(None)
        for _ in range(5):
            await asyncio.sleep(0)
        results.append(list(server.bodies())[-1])
        release.set()
        await asyncio.wait_for(stream, 5)
        results.append(send(event("7")))  # after the end (the shortcut taken away, a caller still holding it): refused
        return server, results, body.bypasses

    server, results, bypasses = asyncio.run(main())
    assert results[0] is True and results[1] == [b"data: 1\n\n", b"data: 2\n\n"]
    assert results[2] is True and results[3] is False
    assert results[4] == [b"data: 1\n\n", b"data: 2\n\n"]
    assert results[5] is True and results[6] is True and results[7] == b"data: 5\n\n" and results[8] is False
    assert server.bodies() == [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n", b"data: 4\n\n", b"data: 5\n\n",
                               b"data: 6\n\n", b""]
    assert bypasses == [True, False]


def test_a_disconnect_while_a_direct_send_waits_cancels_it_and_the_stream():
    from millm.logs import BODY_SEND

    async def main() -> tuple[Client, Any, bool]:
        server = Client()
        never = asyncio.Event()

        async def body_send(message: dict[str, Any]) -> None:
            if message["body"] == b"data: held\n\n":
                await never.wait()
            await server.send(message)

        body = ShortcutBody()
        scope = {**SCOPE, BODY_SEND: body_send}
        response = CompletionStream(body, sep="\n", ping=15)
        stream = asyncio.ensure_future(response(scope, server.receive, server.send))
        body.queue.put_nowait(event("1"))
        while body.send is None:
            await asyncio.sleep(0)
        assert body.send(event("held"))
        body.queue.put_nowait(event("2"))  # waits for the held send
        await asyncio.sleep(0.01)
        server.gone.set()
        await asyncio.wait_for(stream, 5)
        return server, response._pending, stream.cancelled()

    server, held, stream_cancelled = asyncio.run(main())
    assert server.bodies() == [b"data: 1\n\n"]
    assert held.cancelled() and not stream_cancelled  # the client's disconnect ends the stream quietly


class _Transport:
    """What uvicorn's httptools cycle writes, through an asyncio transport's interface; its socket is one end of a
    real socket pair (for `Connection`'s duplicate)."""

    def __init__(self, sock: Any, extra: dict[str, Any] | None = None) -> None:
        self.written: list[bytes] = []
        self.sock, self.extra = sock, {"socket": sock, **(extra or {})}

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


def _cycle(transport: _Transport, **scope: Any) -> Any:
    import logging

    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    return RequestResponseCycle(
        {"type": "http", "method": "POST", "http_version": "1.1", "path": "/", "query_string": b"", "headers": [],
         **scope}, transport, FlowControl(transport), logging.getLogger("t"), logging.getLogger("t"), False,  # type: ignore[arg-type]
        [], asyncio.Event(), False, True, lambda: None)


def test_the_worker_s_connection_writes_what_uvicorn_writes_for_a_body_message_and_only_where_it_may():
    import socket

    from millm.api.sse import Connection

    stream = EventStream(iter(()), sep="\n")

    async def started(cycle: Any) -> Any:
        await cycle.send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/x")]})
        return cycle

    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        transport = _Transport(a)
        cycle = asyncio.run(started(_cycle(transport)))
        body = event('{"text":"é\\n"}')
        asyncio.run(cycle.send({"type": "http.response.body", "body": body, "more_body": True}))
        assert transport.written[-1] == Connection.chunk(body)  # uvicorn's framing of one body message
        conn = Connection.open(cycle.send, stream)
        assert conn is not None and conn.ready()
        assert conn.write(Connection.chunk(body)) == len(Connection.chunk(body))
        assert b.recv(1024) == Connection.chunk(body)  # on the socket, not through the transport
        conn.close()
        assert a.fileno() >= 0  # (its own duplicate closed, not the loop's socket)
        assert Connection.open(lambda message: None, stream) is None  # not uvicorn's httptools cycle
        assert Connection.open(_cycle(transport).send, stream) is None  # the response has not started
        for refused in (_cycle(_Transport(a, {"sslcontext": object()})), _cycle(transport, method="HEAD"),
                        _cycle(transport, http_version="1.0")):
            asyncio.run(started(refused))
            assert Connection.open(refused.send, stream) is None
        fixed = _cycle(transport)  # a response with a length: no chunked framing
        asyncio.run(fixed.send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]}))
        assert fixed.response_started and Connection.open(fixed.send, stream) is None
    finally:
        a.close()
        b.close()
