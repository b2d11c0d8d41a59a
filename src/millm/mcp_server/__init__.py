"""miLLM as a Model Context Protocol server (the official `mcp` SDK), for agents.

Two ways in, the same tools (tools.py):
- `POST /mcp` on a running `millm serve`: Streamable HTTP, mounted by `mount()`; its tools call the
  server's own services (`LocalBackend`). Stateless (no MCP session to keep) with JSON responses.
  When the server binds to loopback, the SDK's DNS-rebinding protection accepts only loopback Host
  and Origin headers; `MILLM_API_KEY`, when set, applies as on every other route.
- `millm mcp`: stdio, for agent hosts that start their tools as processes (Claude Desktop, Claude
  Code, Cursor, ...); it talks to a running `millm serve` over HTTP (`HttpBackend`, cli_mcp.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from millm.mcp_server.backend import Backend, BackendError, HttpBackend, LocalBackend
from millm.mcp_server.tools import build_server

if TYPE_CHECKING:
    from fastapi import FastAPI
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

__all__ = ["Backend", "BackendError", "HttpBackend", "LocalBackend", "build_server", "mount", "MOUNT_PATH"]

MOUNT_PATH = "/mcp"


def mount(app: FastAPI, *, host: str) -> StreamableHTTPSessionManager:
    """Add the `/mcp` route to `app`; the caller runs the returned manager's `run()` in its lifespan."""
    server = build_server(LocalBackend(lambda: app.state.runtime))
    sub = server.streamable_http_app(streamable_http_path=MOUNT_PATH, stateless_http=True, json_response=True,
                                     host=host)
    app.router.routes.extend(sub.routes)
    return server.session_manager
