"""What the MCP tools call: the server's own services (mounted at /mcp) or its REST API (`millm mcp`).

`Backend` is the contract: each method does what one REST call does and returns that call's JSON
(the same pydantic shapes as the API), or raises `BackendError` carrying the API's error envelope.

- `LocalBackend` runs inside the server (the `/mcp` mount). It calls the same service method the
  matching REST route calls on the app's `Runtime` (`ControlService` for changes, `StatusService`
  for views), which returns the same protocol shape, so an MCP call and the REST call cannot drift
  apart. No HTTP request is made.
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

from millm.errors import MillmError
from millm.protocol.validation import validation_message


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
        """Run a service call (a function or a coroutine function), its MillmError as a BackendError."""
        try:
            result = fn(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result
        except MillmError as exc:
            raise BackendError(exc.status, exc.message, param=exc.param, code=exc.code) from exc

    async def status(self) -> dict[str, Any]:
        return _json(await self._call(self._runtime().views.status))

    async def models(self) -> dict[str, Any]:
        return _json(await self._call(self._runtime().views.model_list))

    async def labels(self) -> dict[str, Any]:
        return _json(await self._call(self._runtime().saes.search_labels))

    async def profiles(self) -> dict[str, Any]:
        return _json(await self._call(asyncio.to_thread, self._runtime().profiles.list))

    async def activate_profile(self, name: str) -> dict[str, Any]:
        return _json(await self._call(self._runtime().control.activate_profile, name))

    async def deactivate_profile(self) -> None:
        await self._call(self._runtime().control.deactivate_profile)

    async def steering(self) -> dict[str, Any]:
        return _json(await self._call(self._runtime().views.steering_state))

    async def set_steering(self, body: dict[str, Any]) -> dict[str, Any]:
        from millm.protocol.admin import SteeringSetIn

        req = _validated(SteeringSetIn, body)
        rt = self._runtime()
        await self._call(rt.control.set_steering, features=[(f.index, f.strength) for f in req.features],
                         mode=req.mode, normalize=req.normalize, steer_special_tokens=req.steer_special_tokens,
                         scale=req.scale)
        return _json(rt.views.steering_state())

    async def clear_steering(self) -> dict[str, Any]:
        rt = self._runtime()
        await self._call(rt.control.clear_steering)
        return _json(rt.views.steering_state())

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        from millm.protocol.openai import ChatCompletionRequest

        req = _validated(ChatCompletionRequest, {**body, "stream": False})
        result = await self._call(self._runtime().generation.chat, req)
        return _json(result.value)

    async def compare(self, body: dict[str, Any]) -> dict[str, Any]:
        from millm.protocol.compare import CompareRequest

        req = _validated(CompareRequest, {**body, "stream": False})
        compare = self._runtime().compare
        plan = await self._call(compare.compare, req)
        return _json(await self._call(compare.collect, plan))

    async def monitor_config(self, body: dict[str, Any] | None) -> dict[str, Any]:
        from millm.protocol.monitor import MonitorConfigIn

        monitor = self._runtime().monitor
        if body is None:
            return _json(await self._call(monitor.config_out))
        return _json(await self._call(monitor.set_config, _validated(MonitorConfigIn, body)))

    async def monitor_history(self, request_id: str | None) -> dict[str, Any]:
        return _json(await self._call(self._runtime().monitor.history_out, request_id))


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
