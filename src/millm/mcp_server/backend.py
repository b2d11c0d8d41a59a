"""What the MCP tools call: the server's own services (mounted at /mcp) or its REST API (`millm mcp`).

`Backend` is the contract: each method does what one REST call does and returns that call's JSON
(the same pydantic shapes as the API), or raises `BackendError` carrying the API's error envelope.

- `LocalBackend` runs inside the server (the `/mcp` mount). It calls the services on the app's
  `Runtime`, through the route functions where a route adds glue to the service call (activating a
  profile checks that it fits; setting steering forgets the active profile), so an MCP call and the
  matching REST call cannot drift apart. No HTTP request is made.
- `HttpBackend` runs in `millm mcp` (stdio), a separate process an agent host starts: it talks to a
  running `millm serve` over HTTP, so the agent steers the same model the UI and API clients see
  (one copy of the weights in memory, one steering state).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Protocol, cast

import httpx
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from millm.errors import MillmError


class BackendError(Exception):
    """An API error: HTTP status and the OpenAI envelope's message, param and code."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def __str__(self) -> str:
        return self.message + (f" (param: {self.param})" if self.param else "")


class Backend(Protocol):
    async def status(self) -> dict[str, Any]: ...  # GET /api/status
    async def models(self) -> dict[str, Any]: ...  # GET /v1/models
    async def labels(self) -> dict[str, Any]: ...  # GET /api/saes/attached/labels
    async def profiles(self) -> dict[str, Any]: ...  # GET /api/profiles
    async def activate_profile(self, name: str) -> dict[str, Any]: ...  # POST /api/profiles/{name}/activate
    async def deactivate_profile(self) -> None: ...  # POST /api/profiles/deactivate
    async def steering(self) -> dict[str, Any]: ...  # GET /api/steering
    async def set_steering(self, body: dict[str, Any]) -> dict[str, Any]: ...  # PUT /api/steering
    async def clear_steering(self) -> dict[str, Any]: ...  # DELETE /api/steering
    async def chat(self, body: dict[str, Any]) -> dict[str, Any]: ...  # POST /v1/chat/completions
    async def compare(self, body: dict[str, Any]) -> dict[str, Any]: ...  # POST /api/compare (stream false)
    async def monitor_config(self, body: dict[str, Any] | None) -> dict[str, Any]: ...  # GET/PUT /api/monitor/config
    async def monitor_history(self, request_id: str | None) -> dict[str, Any]: ...  # GET /api/monitor/history


def _json(model: BaseModel | None) -> dict[str, Any]:
    return {} if model is None else model.model_dump(mode="json")


def _validated(cls: type[BaseModel], body: dict[str, Any]) -> Any:
    from millm.api.errors import validation_message

    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        message, param = validation_message(cast(list[dict[str, Any]], exc.errors()))
        raise BackendError(400, message, param=param, code="invalid_value") from exc


class LocalBackend:
    """Calls the services of the server it is mounted in (`runtime()` gives the app's Runtime)."""

    def __init__(self, runtime: Callable[[], Any]) -> None:
        self._runtime = runtime

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a route function (or any coroutine function) as FastAPI would for a request that gives only
        `args`/`kwargs`: a parameter declared with `Query(...)`/`Header(...)` and not given gets its default."""
        sig = inspect.signature(fn)
        bound = sig.bind_partial(*args, **kwargs)
        for name, param in sig.parameters.items():
            if name not in bound.arguments and isinstance(param.default, FieldInfo):
                bound.arguments[name] = None if param.default.default is PydanticUndefined else param.default.default
        try:
            return await fn(*bound.args, **bound.kwargs)
        except MillmError as exc:
            raise BackendError(exc.status, exc.message, param=exc.param, code=exc.code) from exc

    async def status(self) -> dict[str, Any]:
        from millm.api import admin_routes

        return _json(await self._call(admin_routes.status, self._runtime()))

    async def models(self) -> dict[str, Any]:
        from millm.api import openai_routes

        return _json(await self._call(openai_routes.list_models, self._runtime()))

    async def labels(self) -> dict[str, Any]:
        from millm.api import admin_routes

        return _json(await self._call(admin_routes.sae_labels, self._runtime()))

    async def profiles(self) -> dict[str, Any]:
        rt = self._runtime()

        async def listed() -> Any:
            return await asyncio.to_thread(rt.profiles.list)

        return _json(await self._call(listed))

    async def activate_profile(self, name: str) -> dict[str, Any]:
        from fastapi import Response

        from millm.api import profile_routes

        return _json(await self._call(profile_routes.activate_profile, name, self._runtime(), Response()))

    async def deactivate_profile(self) -> None:
        from millm.api import profile_routes

        await self._call(profile_routes.deactivate, self._runtime())

    async def steering(self) -> dict[str, Any]:
        from millm.api import admin_routes

        return _json(await self._call(admin_routes.get_steering, self._runtime()))

    async def set_steering(self, body: dict[str, Any]) -> dict[str, Any]:
        from millm.api import admin_routes
        from millm.protocol.admin import SteeringSetIn

        return _json(await self._call(admin_routes.set_steering, _validated(SteeringSetIn, body), self._runtime()))

    async def clear_steering(self) -> dict[str, Any]:
        from millm.api import admin_routes

        return _json(await self._call(admin_routes.clear_steering, self._runtime()))

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        from millm.protocol.openai import ChatCompletionRequest

        req = _validated(ChatCompletionRequest, {**body, "stream": False})
        result = await self._call(self._runtime().generation.chat, req)
        return _json(result.value)

    async def compare(self, body: dict[str, Any]) -> dict[str, Any]:
        from millm.api import compare_routes
        from millm.protocol.compare import CompareRequest

        req = _validated(CompareRequest, {**body, "stream": False})
        return _json(await self._call(compare_routes.compare_steering, req, self._runtime()))

    async def monitor_config(self, body: dict[str, Any] | None) -> dict[str, Any]:
        from millm.api import monitor_routes
        from millm.protocol.monitor import MonitorConfigIn

        rt = self._runtime()
        if body is None:
            return _json(await self._call(monitor_routes.get_config, rt))
        return _json(await self._call(monitor_routes.set_config, _validated(MonitorConfigIn, body), rt))

    async def monitor_history(self, request_id: str | None) -> dict[str, Any]:
        from millm.api import monitor_routes

        return _json(await self._call(monitor_routes.history, self._runtime(), request_id))


class HttpBackend:
    """Talks to a running `millm serve` over its REST and OpenAI APIs."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 300.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"X-MiLLM-Client": "mcp"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout,
                                         transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = await self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise BackendError(503, f"cannot reach the miLLM server at {self.base_url} ({exc}); is `millm serve` "
                                    "running? (set MILLM_URL, or MILLM_HOST and MILLM_PORT)",
                               code="server_unreachable") from exc
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                raise BackendError(r.status_code, str(err["message"]), param=err.get("param"), code=err.get("code"))
            except (ValueError, KeyError, TypeError):
                raise BackendError(r.status_code, r.text.strip() or r.reason_phrase) from None
        return r.json() if r.content else None

    async def status(self) -> dict[str, Any]:
        return await self._request("GET", "/api/status")

    async def models(self) -> dict[str, Any]:
        return await self._request("GET", "/v1/models")

    async def labels(self) -> dict[str, Any]:
        return await self._request("GET", "/api/saes/attached/labels")

    async def profiles(self) -> dict[str, Any]:
        return await self._request("GET", "/api/profiles")

    async def activate_profile(self, name: str) -> dict[str, Any]:
        from urllib.parse import quote

        return await self._request("POST", f"/api/profiles/{quote(name, safe='')}/activate")

    async def deactivate_profile(self) -> None:
        await self._request("POST", "/api/profiles/deactivate")

    async def steering(self) -> dict[str, Any]:
        return await self._request("GET", "/api/steering")

    async def set_steering(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("PUT", "/api/steering", json=body)

    async def clear_steering(self) -> dict[str, Any]:
        return await self._request("DELETE", "/api/steering")

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", "/v1/chat/completions", json={**body, "stream": False})

    async def compare(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", "/api/compare", json={**body, "stream": False})

    async def monitor_config(self, body: dict[str, Any] | None) -> dict[str, Any]:
        if body is None:
            return await self._request("GET", "/api/monitor/config")
        return await self._request("PUT", "/api/monitor/config", json=body)

    async def monitor_history(self, request_id: str | None) -> dict[str, Any]:
        params = {"request_id": request_id} if request_id else None
        return await self._request("GET", "/api/monitor/history", params=params)
