"""The benchmark's lean concurrency client (`run_concurrent`) reads what the http.client one (`run_requests`) reads."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

from benchmarks import server_bench


def _event(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "text": text}]}).encode() + b"\n\n"


class _Sse(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        word = body["prompt"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = [_event(f" {word}{i} é") for i in range(5)]
        usage = b"data: " + json.dumps({"choices": [], "usage": {"completion_tokens": 5}}).encode() + b"\n\n"
        # HTTP chunks that split an event in two, and one that carries two events
        pieces = [events[0][:9], events[0][9:], events[1] + events[2], events[3], events[4], usage, b"data: [DONE]\n\n"]
        for piece in pieces:
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.flush()
            time.sleep(0.01)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True


def test_the_lean_client_reads_what_http_client_reads() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Sse)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        server = SimpleNamespace(port=httpd.server_address[1])
        bodies = [{"prompt": w} for w in ("a", "b", "c")]
        want, _ = server_bench.run_requests(server, bodies)  # type: ignore[arg-type]
        got, wall = server_bench.run_concurrent(server, bodies)  # type: ignore[arg-type]
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [t.text for t in got] == [t.text for t in want] == [
        "".join(f" {w}{i} é" for i in range(5)) for w in "abc"]
    assert [t.chunks for t in got] == [5, 5, 5]
    for t in got:
        assert t.first is not None and t.last is not None
        assert t.sent < t.first <= t.last and t.arrivals == sorted(t.arrivals) and len(t.arrivals) == 5
        assert t.arrivals[1] == t.arrivals[2]  # two events in one HTTP chunk arrive together
        assert t.last - t.first >= 0.03  # the server paused between chunks: arrivals are when each chunk came
    assert wall == max(t.last for t in got if t.last is not None) - got[0].sent


def test_engine_choices_are_the_kernel_and_thread_lines_of_the_server_log(tmp_path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "2026-12-07 09:47:35,008 INFO millm.engine.worker: generation thread: torch threads (1, 2)\n"
        "2026-12-07 09:47:42,778 INFO millm.engine.weight_layout: linear kernels for decoding: input-major\n"
        "2026-12-07 09:47:42,808 INFO millm.engine.threads: decode threads for 1-row steps: 2 (median step ...)\n"
        "2026-12-07 09:47:43,001 WARNING millm.engine.threads: something else\n"
        "2026-12-07 09:47:43,677 INFO millm.engine.threads: decode threads for 1-row steps slowed: 2 threads now\n")
    server = server_bench.Server(tmp_path, None, tmp_path, log_path=log)
    assert server.engine_choices() == ["linear kernels for decoding: input-major",
                                       "decode threads for 1-row steps: 2 (median step ...)",
                                       "decode threads for 1-row steps slowed: 2 threads now"]
    assert server_bench.Server(tmp_path, None, tmp_path).engine_choices() == []
