"""The worker thread's writes of plain tokens (services/text_chunks.WorkerWrites, api/sse.Connection) on the wire,
against clients that make the handover hard: a slow reader behind tiny socket buffers (the socket fills, writes are
partly taken, flow control holds the loop's sends), HTTP/1.1 pipelining, HTTP/1.0, a client that half-closes or
sends garbage behind its stream, and several streams at once. Every response is parsed as HTTP by h11 (so its chunked
framing must be exact) and its SSE events must equal the ordinary path's (the worker's writes turned off).

Not tested here, because no client can make them happen on cue:
- a ping whose send waits for the client while a token arrives just as the buffer drains (a ping goes out every
  15 s, and must meet flow control at that moment); `EventStream.idle` covers it, tested at the ASGI level in
  test_sse.py;
- `Connection.ready`'s empty-buffer condition on its own: the loop's buffer holds bytes only after the socket was
  full, and by then the worker's own short write has already ended its writing for good (`WorkerWrites.off`);
- garbage pipelined behind a stream while a worker write is only partly taken: uvicorn's 400 then lands inside the
  chunk (on the ordinary path it lands between chunks); the client broke the protocol and the connection closes
  either way, which the garbage case below checks."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import h11
import pytest

from millm.api import openai_routes, sse
from millm.services import text_chunks

MODEL = "test-org/tiny"


HOST = "127.0.0.1"  # (the server answers 421 to a Host that is not its own)


def _request(path: str, body: dict[str, Any], *, close: bool = False, version: str = "1.1") -> bytes:
    data = json.dumps({"model": MODEL, "temperature": 0, "ignore_eos": True, "stream": True, **body}).encode()
    head = (f"POST {path} HTTP/{version}\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode() + data


def _connect(url: str, rcvbuf: int | None = None) -> socket.socket:
    u = urlsplit(url)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # (before connect, so that the window is small from the start)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(60)
    s.connect((u.hostname, u.port))
    return s


def _responses(s: socket.socket, requests: list[bytes], *, byte_by_byte: bool = False,
               pause: float = 0.0) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Send the requests at once (pipelined) and read each response with h11: status, headers, body."""
    s.sendall(b"".join(requests))
    if pause:
        time.sleep(pause)  # (the server fills the socket's buffers meanwhile)
    conn = h11.Connection(h11.CLIENT)
    out = []
    for raw in requests:
        # h11 must know each request to frame its response: replay it into the parser (the bytes went out above)
        p = h11.Connection(h11.SERVER)
        p.receive_data(raw)
        req = p.next_event()
        conn.send(h11.Request(method=req.method, target=req.target, headers=list(req.headers),
                              http_version=req.http_version))
        conn.send(h11.Data(data=raw[raw.index(b"\r\n\r\n") + 4:]))
        conn.send(h11.EndOfMessage())
        status, headers, body = 0, {}, bytearray()
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                data = s.recv(1 if byte_by_byte else 65536)
                conn.receive_data(data)
                continue
            if isinstance(ev, h11.Response):
                status, headers = ev.status_code, dict(ev.headers)
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                break
            else:
                raise AssertionError(ev)
        out.append((status, headers, bytes(body)))
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
    return out


def _events(body: bytes) -> list[Any]:
    """The SSE events' data, parsed, without the fields that differ per request; pings dropped. Every event must be
    well formed (a data line, then a blank line)."""
    out: list[Any] = []
    text = body.decode()
    assert text.endswith("\n\n"), text[-200:]
    for block in text[:-2].split("\n\n"):
        if block.startswith(":"):
            continue  # a ping comment
        assert block.startswith("data: ") and "\n" not in block, block
        data = block[len("data: "):]
        if data == "[DONE]":
            out.append(data)
            continue
        chunk = json.loads(data)
        chunk.pop("id", None)
        chunk.pop("created", None)
        out.append(chunk)
    return out


def _by_choice(events: list[Any]) -> list[Any]:
    return sorted(events, key=lambda c: c["choices"][0]["index"] if isinstance(c, dict) and c["choices"] else 1 << 30)


class Spy:
    """Counts the worker's writes: made, whole, and partly taken or refused (what the socket took of each)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.whole = self.short = 0
        self.lock = threading.Lock()
        self.made: list[Any] = []
        write = text_chunks.WorkerWrites._write
        init = text_chunks.WorkerWrites.__init__
        spy = self

        def counted(self: Any, data: bytes) -> bool:
            before = self.written
            ok = write(self, data)
            with spy.lock:
                if self.written > before:
                    spy.whole += 1
                else:
                    spy.short += 1
            return ok

        def keep(self: Any, *args: Any) -> None:
            init(self, *args)
            spy.made.append(self)

        monkeypatch.setattr(text_chunks.WorkerWrites, "_write", counted)
        monkeypatch.setattr(text_chunks.WorkerWrites, "__init__", keep)


def _ordinary(monkeypatch: pytest.MonkeyPatch, url: str, path: str, body: dict[str, Any]) -> list[Any]:
    """The events of the same request without the worker's writes."""
    with monkeypatch.context() as m:
        m.setattr(openai_routes._Sse, "worker_writes", lambda self, conn: None)
        s = _connect(url)
        try:
            [(status, _, raw)] = _responses(s, [_request(path, body, close=True)])
        finally:
            s.close()
    assert status == 200
    return _events(raw)


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", {"prompt": "Hello", "max_tokens": 300}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 200, "n": 2}),
], ids=["completions", "chat-n2"])
def test_a_slow_reader_behind_tiny_buffers_gets_every_byte_in_order(server, monkeypatch, path, body):
    expected = _ordinary(monkeypatch, server.url, path, body)
    spy = Spy(monkeypatch)
    opened = sse.Connection.open.__func__  # type: ignore[attr-defined]

    def small_sndbuf(cls: Any, send: Any, stream: Any) -> Any:
        conn = opened(cls, send, stream)
        if conn is not None:  # (the duplicate is the same socket: the server's send buffer is ~8 KiB from here on)
            conn._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return conn

    monkeypatch.setattr(sse.Connection, "open", classmethod(small_sndbuf))
    s = _connect(server.url, rcvbuf=2048)
    try:
        [(status, headers, raw)] = _responses(s, [_request(path, body, close=True)], byte_by_byte=True, pause=1.0)
    finally:
        s.close()
    assert status == 200 and headers[b"transfer-encoding"] == b"chunked"
    got = _events(raw)
    assert _by_choice(got) == _by_choice(expected) and got[-1] == "[DONE]"
    assert spy.made and spy.whole > 0  # the worker wrote
    assert spy.short > 0  # and met the full socket (a write partly taken or refused), which handed the rest back


def test_pipelined_requests_behind_a_stream_each_get_their_own_whole_response(server, monkeypatch):
    a = ("/v1/completions", {"prompt": "Hello", "max_tokens": 120})
    b = ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 60})
    want = [_ordinary(monkeypatch, server.url, *a), _ordinary(monkeypatch, server.url, *b)]
    spy = Spy(monkeypatch)
    s = _connect(server.url)
    try:
        got = _responses(s, [_request(*a), _request(*b), _request(*a, close=True)])
        assert s.recv(1) == b""  # closed after the last
    finally:
        s.close()
    assert [status for status, _, _ in got] == [200, 200, 200]
    assert [_events(raw) for _, _, raw in got] == [want[0], want[1], want[0]]
    assert len(spy.made) == 3 and spy.whole > 0


def test_an_http_1_0_stream_is_the_loop_s_alone_and_whole(server, monkeypatch):
    path, body = "/v1/completions", {"prompt": "Hello", "max_tokens": 80}
    want = _ordinary(monkeypatch, server.url, path, body)
    spy = Spy(monkeypatch)
    s = _connect(server.url)
    try:
        s.sendall(_request(path, body, version="1.0"))
        data = b""
        while chunk := s.recv(65536):  # (h11 speaks HTTP/1.1 only: the body runs to the connection's end)
            data += chunk
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    # (uvicorn frames the stream in chunks even for HTTP/1.0, on the ordinary path too: what is checked here is that
    # the worker leaves such a response alone)
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
    raw = b""
    while True:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        assert rest[n:n + 2] == b"\r\n"
        raw, rest = raw + rest[:n], rest[n + 2:]
        if n == 0:
            break
    assert rest == b""
    assert _events(raw) == want
    assert not spy.made  # no worker writes without chunked framing


def _wait_idle(worker: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while worker.active_sequences and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.active_sequences == 0


def _read_some_events(s: socket.socket, spy: Spy) -> bytes:
    """Read until the worker has written a few of the stream's chunks."""
    got = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (spy.made and spy.made[0].written > 2):
        got += s.recv(65536)
    assert spy.made and spy.made[0].written > 2
    return got


@pytest.mark.parametrize("how", ["half-close", "garbage"])
def test_a_client_that_half_closes_or_sends_garbage_mid_stream_ends_its_run_and_its_connection(server, monkeypatch,
                                                                                             how):
    spy = Spy(monkeypatch)
    worker = server.runtime.worker
    s = _connect(server.url)
    try:
        s.sendall(_request("/v1/completions", {"prompt": "Hello", "max_tokens": 2000}))
        _read_some_events(s, spy)
        if how == "half-close":
            s.shutdown(socket.SHUT_WR)  # (uvicorn's protocol takes the end of the request stream as a disconnect)
        else:
            s.sendall(b"\x00NOT HTTP\r\n\r\n")  # (uvicorn answers a 400 and closes the connection)
        s.settimeout(10)
        deadline = time.monotonic() + 10
        while s.recv(65536):  # the server closes its side: not held open by the worker's duplicate of the socket
            assert time.monotonic() < deadline
    finally:
        s.close()
    _wait_idle(worker)
    assert spy.made[0].off


def test_concurrent_steered_streams_each_equal_their_solo_run_on_the_wire(server, monkeypatch):
    prompts = ["Hello", "The stars", "Once upon", "A cat", "Why", "Rain"]
    path = "/v1/completions"
    # each with its own steering (none for the first), so the rows of one batch differ
    bodies = [{"prompt": p, "max_tokens": 60 + 10 * i,
               **({"steering": {"features": [{"index": 7 * i, "strength": 4.0 * i}]}} if i else {})}
              for i, p in enumerate(prompts)]
    solo = [_ordinary(monkeypatch, server.url, path, b) for b in bodies]
    spy = Spy(monkeypatch)
    got: list[Any] = [None] * len(bodies)

    def one(i: int) -> None:
        s = _connect(server.url)
        try:
            got[i] = _responses(s, [_request(path, bodies[i], close=True)])[0]
        finally:
            s.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [g[0] for g in got] == [200] * len(bodies)
    assert [json.loads(g[1][b"x-millm-steering"])["source"] for g in got] == ["none"] + ["request"] * 5
    assert [_events(g[2]) for g in got] == solo
    assert len(spy.made) == len(bodies) and spy.whole > 0
