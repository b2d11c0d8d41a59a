"""create_app(settings): the FastAPI app, its lifespan (which owns the Runtime) and its routers."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from millm import __version__
from millm.api import (admin_routes, compare_routes, errors, hub_routes, monitor_routes, openai_routes, openapi,
                       profile_routes)
from millm.config import Settings
from millm.services.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="miLLM", version=__version__, lifespan=lifespan, description=openapi.DESCRIPTION,
                  openapi_tags=openapi.TAGS, generate_unique_id_function=openapi.operation_id)
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                       allow_headers=["*"], expose_headers=["X-MiLLM-Steering", "X-MiLLM-Steering-Hash", "ETag", "Retry-After"])
    errors.install(app)
    for module in (openai_routes, admin_routes, hub_routes, monitor_routes, profile_routes, compare_routes):
        openapi.describe_operations(module.router)
        app.include_router(module.router)
    return app
