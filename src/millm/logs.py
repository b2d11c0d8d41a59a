"""Logging set-up: text or JSON lines, with request fields (`extra=`) included in both.

- JSON: strictly one object per line. uvicorn's `color_message` (a copy of the message with
  terminal escape codes) is dropped and escape codes are stripped from every message, in both
  formats; the progress bars of transformers and huggingface_hub (which write to stderr
  between log lines) are turned off, and Python warnings are logged (`py.warnings`) instead of
  printed.
- `AccessLog` (ASGI middleware) replaces uvicorn's access lines with one structured record per
  HTTP request on the `millm.access` logger: method, path (with `api_key` redacted), status,
  duration_ms, client, request_id (the caller's `X-Request-ID`, else a new one, echoed in the
  response) and, for generation routes, the steering applied (from `X-MiLLM-Steering`).
  Records logged while a request is handled carry its `request_id` as `http_request_id`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from typing import Any

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_API_KEY = re.compile(r"(api_key=)[^&]*")
HTTP_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("millm_http_request_id", default=None)
access_log = logging.getLogger("millm.access")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out = {k: v for k, v in record.__dict__.items() if k not in _STD}
    if "http_request_id" not in out and HTTP_REQUEST_ID.get() is not None and record.name != access_log.name:
        out["http_request_id"] = HTTP_REQUEST_ID.get()
    return out


def _message(record: logging.LogRecord) -> str:
    return _ANSI.sub("", record.getMessage())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _message(record),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)  # json.dumps escapes newlines: one object per line


class TextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = _message(record)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
                         for k, v in _fields(record).items())
        return f"{base} {extra}" if extra else base


_KEY_IN_URL = re.compile(r"(api_key=)[^&\s\"']*")


class RedactKeys(logging.Filter):
    """Hide `?api_key=...` (WebSocket and EventSource URLs carry the key there) in every log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "api_key=" in message:
            record.msg, record.args = _KEY_IN_URL.sub(r"\1<redacted>", message), None
        return True


def steering_summary(applied: dict[str, Any] | None) -> str:
    """'none', or e.g. 'request add 16:8,3:-2' / 'profile yelling-demo add 16:8' (source, name, mode, features)."""
    if not applied or applied.get("source") in (None, "none") or not applied.get("features"):
        return "none"
    feats = ",".join(f"{f['index']}:{f['strength']:g}" for f in applied["features"])
    name = f" {applied['profile']}" if applied.get("profile") else ""
    return f"{applied['source']}{name} {applied.get('mode') or 'add'} {feats}"


BODY_SEND = "millm.body_send"  # scope key: see AccessLog


class AccessLog:
    """Pure ASGI middleware (streams pass through untouched): one `millm.access` record per HTTP request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")[:128]
        rid = given if given and given.isprintable() else uuid.uuid4().hex
        token = HTTP_REQUEST_ID.set(rid)
        seen: dict[str, Any] = {"status": 500, "steering": None}

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-millm-steering" and value:
                        seen["steering"] = value
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        # The send beneath every middleware of the app's own (this is the outermost): each of them, and Starlette's
        # and FastAPI's wrappers inside, looks only at http.response.start, so a streamed response's body chunks may
        # skip them (`api.sse.EventStream`: two calls per chunk, Starlette's ServerErrorMiddleware and the server's, instead of
        # five). A middleware that reads or
        # changes response bodies must not be added inside this one.
        scope[BODY_SEND] = send
        try:
            await self.app(scope, receive, wrapped)
        finally:
            HTTP_REQUEST_ID.reset(token)
            query = scope.get("query_string", b"").decode("latin-1")
            path = scope.get("path", "") + ("?" + _API_KEY.sub(r"\1***", query) if query else "")
            client = scope.get("client")
            extra: dict[str, Any] = {
                "method": scope.get("method"), "path": path, "status": seen["status"],
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "client": f"{client[0]}:{client[1]}" if client else None, "request_id": rid,
            }
            if seen["steering"] is not None:
                try:
                    extra["steering"] = steering_summary(json.loads(seen["steering"]))
                except ValueError:
                    pass
            access_log.info("%s %s %s", extra["method"], path, extra["status"], extra=extra)


def configure(level: str = "info", fmt: str = "text", *, access: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactKeys())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True  # AccessLog writes structured access records instead
    access_log.disabled = not access  # the middleware still runs: it sets the request id and its header
    logging.captureWarnings(True)  # warnings.warn() output becomes log records, not raw stderr lines
    if fmt == "json" or not sys.stderr.isatty():
        disable_progress_bars()


def disable_progress_bars() -> None:
    """transformers' "Loading weights" and huggingface_hub's download bars write between log lines."""
    from huggingface_hub.utils import disable_progress_bars as hub_off
    from transformers.utils import logging as tf_logging

    hub_off()
    tf_logging.disable_progress_bar()
