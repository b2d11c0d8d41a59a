"""Safe defaults for a server on the user's machine: API key, Host check, cross-site writes, WebSocket origins.

Browsers let any web page send requests to localhost, so a local inference server must not trust a request just
because it arrived (the attacks on local LLM servers: DNS rebinding, and "simple" cross-site POSTs that need no
CORS preflight). `SecurityMiddleware` is pure ASGI and runs before routing, on HTTP and WebSocket requests:

1. Host check (DNS rebinding): the Host header must be one of `allowed_hosts` ('*' for any, '*.example.com' for
   a domain). Default, when bound to a loopback address: localhost, *.localhost, 127.0.0.1, ::1 and the bind
   address. When bound to another address (e.g. 0.0.0.0 in Docker) the server is meant to be reached by other
   names, so by default any Host is accepted (set `allowed_hosts`, or an API key). A wrong Host is a 421
   (Misdirected Request, as the MCP transport answers) `invalid_host`.
2. API key (when `api_key` is set): /v1, /api, /ws, /metrics and /mcp need `Authorization: Bearer <key>`; WebSockets,
   which browsers cannot give headers, and GET requests (EventSource) may pass `?api_key=<key>` instead (redacted
   in the logs, millm.logs). /health, /docs, /openapi.json and the web UI stay open. A missing or wrong key is a
   401 in the OpenAI envelope, code `invalid_api_key`.
3. Cross-site writes: a POST is accepted only with `Content-Type: application/json`, an `Authorization` header
   or an `X-MiLLM-Client` header. None of these can be sent cross-site without a CORS preflight, which only the
   allowed origins pass; anything else (a text/plain or form POST, an empty POST) is a 415 `cross_site_request`.
   PUT, PATCH and DELETE need no such rule: browsers preflight them cross-site whatever they carry. The OpenAI
   SDKs always send Authorization; the web UI sends `X-MiLLM-Client: web` on every request.
4. WebSocket origins: browsers do not apply CORS to WebSockets, so a handshake whose Origin is not allowed (see
   `cors`) is refused.

`cors` builds the CORS policy: `cors_origins` when set, else the UI's own origin (same-origin needs no CORS) and
http(s)://localhost, 127.0.0.1 and [::1] on any port.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from millm.errors import Forbidden, MillmError, MisdirectedRequest, Unauthorized, UnsupportedMediaType

log = logging.getLogger(__name__)

LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"
PROTECTED = ("/v1/", "/api/", "/ws/", "/metrics", "/mcp")
# Browsers preflight every cross-site PUT, PATCH and DELETE (they are not CORS-safelisted methods), so only a POST
# can arrive from another site unasked.
SIMPLE_WRITES = ("POST",)
CLIENT_HEADER = "x-millm-client"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class CorsPolicy:
    allow_origins: tuple[str, ...]
    allow_origin_regex: str | None

    def allows(self, origin: str) -> bool:
        if "*" in self.allow_origins or origin in self.allow_origins:
            return True
        return self.allow_origin_regex is not None and re.fullmatch(self.allow_origin_regex, origin) is not None

    def middleware_kwargs(self) -> dict[str, Any]:
        return {"allow_origins": list(self.allow_origins), "allow_origin_regex": self.allow_origin_regex,
                "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], "allow_headers": ["*"],
                "expose_headers": ["X-MiLLM-Steering", "X-MiLLM-Steering-Hash", "X-MiLLM-Ignored-Fields", "ETag",
                                   "Retry-After"]}


def cors(settings: Any) -> CorsPolicy:
    if settings.cors_origins:
        return CorsPolicy(tuple(settings.cors_origins), None)
    return CorsPolicy((), LOCAL_ORIGINS)


def _host_patterns(settings: Any) -> tuple[str, ...] | None:
    """The accepted Host names (lower case, no port); None: any."""
    if settings.allowed_hosts:
        return None if "*" in settings.allowed_hosts else tuple(h.lower() for h in settings.allowed_hosts)
    if not is_loopback(settings.host):
        return None
    return ("localhost", "*.localhost", "127.0.0.1", "::1", settings.host.lower().strip("[]"))


def _host_name(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _host_ok(patterns: tuple[str, ...] | None, value: str | None) -> bool:
    if patterns is None:
        return True
    if not value:
        return False
    name = _host_name(value)
    return any(name == p or (p.startswith("*.") and name.endswith(p[1:])) for p in patterns)


def _json_type(value: str) -> bool:
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Any) -> None:
        self.app = app
        self.key = settings.api_key or None
        self.hosts = _host_patterns(settings)
        self.cors = cors(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        refusal = self.check(kind, scope.get("method", "GET"), scope.get("path", ""), headers,
                             scope.get("query_string", b"").decode("latin-1"))
        if refusal is None:
            await self.app(scope, receive, send)
            return
        from millm.api.errors import count_rejected, millm_response

        count_rejected(scope, refusal.status)
        response = millm_response(refusal)
        if refusal.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if kind == "http":
            await response(scope, receive, send)
        elif "websocket.http.response" in scope.get("extensions", {}):
            await response(scope, receive, send)  # (Starlette sends it as the handshake's denial response)
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": refusal.message[:120]})

    def check(self, kind: str, method: str, path: str, headers: dict[str, str], query: str) -> MillmError | None:
        if not _host_ok(self.hosts, headers.get("host")):
            return MisdirectedRequest("the Host header names a host this server does not answer to (see the "
                                      "allowed_hosts setting)")
        if kind == "websocket":
            origin = headers.get("origin")
            if origin is not None and not self._same_origin(origin, headers.get("host")) \
                    and not self.cors.allows(origin):
                return Forbidden("WebSocket connections from this origin are not allowed (see the cors_origins "
                                 "setting)", code="origin_not_allowed")
        preflight = method == "OPTIONS" and "access-control-request-method" in headers
        if self.key is not None and path.startswith(PROTECTED) and not preflight:
            if not self._authorized(kind, method, headers, query):
                return Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>' (WebSockets "
                                    "and EventSource: ?api_key=<key>)", code="invalid_api_key")
        if kind == "http" and method in SIMPLE_WRITES:
            if not (_json_type(headers.get("content-type", "")) or "authorization" in headers
                    or CLIENT_HEADER in headers):
                return UnsupportedMediaType(
                    f"{method} requests need 'Content-Type: application/json' (or an Authorization or X-MiLLM-Client "
                    "header): requests a web page could send cross-site without asking are refused",
                    code="cross_site_request")
        return None

    @staticmethod
    def _same_origin(origin: str, host: str | None) -> bool:
        return host is not None and origin.lower().split("://", 1)[-1] == host.lower()

    def _authorized(self, kind: str, method: str, headers: dict[str, str], query: str) -> bool:
        assert self.key is not None
        given: str | None = None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        elif kind == "websocket" or method == "GET":
            given = next(iter(parse_qs(query).get("api_key", [])), None)
        return given is not None and hmac.compare_digest(given.encode(), self.key.encode())
