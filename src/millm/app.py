"""create_app(settings): the FastAPI app, its lifespan (which owns the Runtime) and its routers."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from millm import __version__
from millm.api import admin_routes, errors, hub_routes, monitor_routes, openai_routes, profile_routes, security
from millm.api.lifecycle import InflightMiddleware
from millm.api.limits import BodyLimitMiddleware
from millm.api.security import SecurityMiddleware
from millm.config import Settings
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
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="miLLM", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible inference with SAE feature steering and monitoring.")
    # (outermost last) CORS answers preflights and marks refusals too; then the security checks, the body limit,
    # the drain's in-flight count
    app.add_middleware(InflightMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityMiddleware, settings=settings)
    app.add_middleware(CORSMiddleware, **security.cors(settings).middleware_kwargs())
    errors.install(app)
    for module in (openai_routes, admin_routes, hub_routes, monitor_routes, profile_routes):
        app.include_router(module.router)
    return app
