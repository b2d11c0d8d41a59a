"""create_app(settings): the FastAPI app, its lifespan (which owns the Runtime) and its routers."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from millm import __version__, logs, webui
from millm.api import (
    admin_routes,
    batch_routes,
    compare_routes,
    errors,
    hub_routes,
    monitor_routes,
    openai_routes,
    openapi,
    profile_routes,
    security,
    server_routes,
)
from millm.api.lifecycle import InflightMiddleware
from millm.api.limits import BodyLimitMiddleware
from millm.api.security import SecurityMiddleware
from millm.config import Settings
from millm.mcp_server import mount as mount_mcp
from millm.services.runtime import Runtime

log = logging.getLogger("millm")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not security.is_loopback(settings.host) and not settings.api_key:
            log.warning("listening on %s without an API key: anyone who can reach this address can use the API, "
                        "load models and change steering; set MILLM_API_KEY", settings.host)
        runtime = Runtime(settings)
        app.state.runtime = runtime
        await runtime.start()
        if settings.exit_on_load_failure:
            await runtime.wait_ready()
            if runtime.boot_error is not None:
                await runtime.stop()
                raise RuntimeError(f"exit_on_load_failure: the start-up load failed: {runtime.boot_error}")
        try:
            async with mcp_sessions.run():
                yield
        finally:
            await runtime.stop()

    # FastAPIOffline: /docs and /redoc with Swagger UI and ReDoc served from a packaged copy, not a CDN.
    app = FastAPIOffline(title="miLLM", version=__version__, lifespan=lifespan, description=openapi.DESCRIPTION,
                         openapi_tags=openapi.TAGS, generate_unique_id_function=openapi.operation_id,
                         static_url="/docs/static")
    # (outermost last) the access log; CORS answers preflights and marks refusals too; then the security checks,
    # the body limit, the drain's in-flight count
    app.add_middleware(InflightMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityMiddleware, settings=settings)
    app.add_middleware(CORSMiddleware, **security.cors(settings).middleware_kwargs())
    app.add_middleware(logs.AccessLog)  # outermost: every request gets one structured access record
    errors.install(app)
    for module in (openai_routes, admin_routes, hub_routes, monitor_routes, profile_routes, server_routes,
                   compare_routes, batch_routes):
        openapi.describe_operations(module.router)
        app.include_router(module.router)
    mcp_sessions = mount_mcp(app)  # POST /mcp: the MCP server (millm.mcp_server)
    webui.install(app, settings.ui_dir)  # last: its fallback to index.html must not shadow the routes above
    return app
