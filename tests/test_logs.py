"""Structured request logs: one line per request with id, model, tokens, TTFT, total time, outcome."""

from __future__ import annotations

import json
import logging

from millm.logs import JsonFormatter, TextFormatter


def _record() -> logging.LogRecord:
    rec = logging.LogRecord("millm.requests", logging.INFO, __file__, 1, "request done", (), None)
    for k, v in {"request_id": "chatcmpl-1", "model": "m", "prompt_tokens": 3, "completion_tokens": 5,
                 "ttft_ms": 12.5, "total_ms": 40.0, "outcome": "ok"}.items():
        setattr(rec, k, v)
    return rec


def test_json_lines_carry_request_fields():
    out = json.loads(JsonFormatter().format(_record()))
    assert out["message"] == "request done"
    assert {k: out[k] for k in ("request_id", "prompt_tokens", "completion_tokens", "ttft_ms", "outcome")} == {
        "request_id": "chatcmpl-1", "prompt_tokens": 3, "completion_tokens": 5, "ttft_ms": 12.5, "outcome": "ok"}


def test_text_lines_carry_request_fields():
    line = TextFormatter("%(message)s").format(_record())
    assert line.startswith("request done ") and "completion_tokens=5" in line and "ttft_ms=12.5" in line


def test_server_logs_one_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="millm.requests"):
        client.chat.completions.create(model="test-org/tiny", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=3)
    done = [r for r in caplog.records if r.name == "millm.requests"]
    assert len(done) == 1
    r = done[0]
    assert r.request_id.startswith("chatcmpl-") and r.model == "test-org/tiny" and r.outcome == "ok"
    assert r.completion_tokens >= 1 and r.prompt_tokens > 0 and r.total_ms >= r.ttft_ms


def test_no_access_log_drops_the_access_records_but_keeps_the_request_id(monkeypatch):
    import asyncio

    from millm import logs

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # configure() replaces them; restore afterwards
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(logs.access_log, "disabled", logs.access_log.disabled)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logs.access_log.addHandler(keep)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def request() -> list[dict]:
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        asyncio.run(logs.AccessLog(app)({"type": "http", "method": "GET", "path": "/x", "headers": []}, None, send))
        return sent

    try:
        logs.configure("info", "text", access=False)
        sent = request()
        assert seen == [] and any(k == b"x-request-id" for k, _ in sent[0]["headers"])
        logs.configure("info", "text")
        request()
        assert [r.path for r in seen] == ["/x"]
    finally:
        logs.access_log.removeHandler(keep)
