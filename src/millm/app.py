"""create_app(settings): the FastAPI app, its lifespan (which owns the Runtime) and its routers."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from millm import __version__, logs, webui
from millm.api import (admin_routes, errors, hub_routes, monitor_routes, openai_routes, openapi, profile_routes,
                       compare_routes, server_routes)
from millm.api.limits import BodyLimitMiddleware
from millm.config import Settings
from millm.mcp_server import mount as mount_mcp
from millm.services.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.runtime = runtime
        await runtime.start()
        try:
            async with mcp_sessions.run():
                yield
        finally:
            await runtime.stop()

    # FastAPIOffline: /docs and /redoc with Swagger UI and ReDoc served from a packaged copy, not a CDN.
    app = FastAPIOffline(title="miLLM", version=__version__, lifespan=lifespan, description=openapi.DESCRIPTION,
                         openapi_tags=openapi.TAGS, generate_unique_id_function=openapi.operation_id,
                         static_url="/docs/static")
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                       allow_headers=["*"], expose_headers=["X-MiLLM-Steering", "X-MiLLM-Steering-Hash", "ETag", "Retry-After"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(logs.AccessLog)  # outermost: every request gets one structured access record
    errors.install(app)
    for module in (openai_routes, admin_routes, hub_routes, monitor_routes, profile_routes, server_routes,
                   compare_routes):
        openapi.describe_operations(module.router)
        app.include_router(module.router)
    mcp_sessions = mount_mcp(app, host=settings.host)  # POST /mcp: the MCP server (millm.mcp_server)
    webui.install(app, settings.ui_dir)  # last: its fallback to index.html must not shadow the routes above
    return app
