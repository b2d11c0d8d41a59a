"""miLLM as a Model Context Protocol server (the official `mcp` SDK), for agents.

Two ways in, the same tools (tools.py):
- `POST /mcp` on a running `millm serve`: Streamable HTTP, mounted by `mount()`; its tools call the
  server's own services (`LocalBackend`). Stateless (no MCP session to keep) with JSON responses.
  The server's own SecurityMiddleware guards it like /v1 and /api (Host check, API key, cross-site
  POSTs; millm.api.security), so the SDK's separate Host/Origin check is off: one policy, one set of
  settings (`allowed_hosts`, `cors_origins`, `api_key`).
- `millm mcp`: stdio, for agent hosts that start their tools as processes (Claude Desktop, Claude
  Code, Cursor, ...); it talks to a running `millm serve` over HTTP (`HttpBackend`, cli_mcp.py).

Importing this package does not import the MCP SDK (about 0.4 s of imports, a tenth of the server's
start-up): the `/mcp` route loads it, builds the server and starts its session manager on the first
request (`LazyMount`); the names below are imported from backend.py and tools.py when first used.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from starlette.routing import Route

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

    from millm.mcp_server.backend import Backend, BackendError, HttpBackend, LocalBackend
    from millm.mcp_server.tools import build_server

__all__ = ["Backend", "BackendError", "HttpBackend", "LocalBackend", "build_server", "mount", "LazyMount",
           "MOUNT_PATH"]

MOUNT_PATH = "/mcp"
log = logging.getLogger(__name__)

_LAZY = {"Backend": "backend", "BackendError": "backend", "HttpBackend": "backend", "LocalBackend": "backend",
         "build_server": "tools"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


class LazyMount:
    """The `/mcp` endpoint of the server. The first request imports the SDK (in a thread, so the event loop
    keeps serving), builds the MCP server on `runtime()`'s services and starts its session manager in a task
    of its own; later requests go straight to the SDK's handler. `run()`, entered in the app's lifespan, stops
    the session manager at shutdown if it was started."""

    def __init__(self, runtime: Callable[[], Any]) -> None:
        self._runtime = runtime
        self._handler: ASGIApp | None = None
        self._lock: asyncio.Lock | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._handler or await self._start()
        await handler(scope, receive, send)

    def _build(self) -> tuple[ASGIApp, Any]:
        from mcp.server.transport_security import TransportSecuritySettings

        from millm.mcp_server.backend import LocalBackend
        from millm.mcp_server.tools import build_server

        server = build_server(LocalBackend(self._runtime))
        sub = server.streamable_http_app(
            streamable_http_path=MOUNT_PATH, stateless_http=True, json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        route = next(r for r in sub.routes if isinstance(r, Route) and r.path == MOUNT_PATH)
        return route.app, server.session_manager

    async def _start(self) -> ASGIApp:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._handler is None:
                handler, manager = await asyncio.to_thread(self._build)
                self._stop = asyncio.Event()
                started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._task = asyncio.create_task(self._serve(manager, started, self._stop))
                await started
                self._handler = handler
                log.info("MCP server started at %s", MOUNT_PATH)
        return self._handler

    @staticmethod
    async def _serve(manager: Any, started: asyncio.Future[None], stop: asyncio.Event) -> None:
        try:
            async with manager.run():
                started.set_result(None)
                await stop.wait()
        except BaseException as e:
            if not started.done():
                started.set_exception(e)
            raise

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._task is not None and self._stop is not None:
                self._stop.set()
                await asyncio.gather(self._task, return_exceptions=True)
                self._task, self._handler = None, None


def mount(app: FastAPI) -> LazyMount:
    """Add the `/mcp` route to `app`; the caller enters the returned mount's `run()` in its lifespan."""
    endpoint = LazyMount(lambda: app.state.runtime)
    app.router.routes.append(Route(MOUNT_PATH, endpoint=endpoint))
    return endpoint
