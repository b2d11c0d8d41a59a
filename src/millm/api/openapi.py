"""What /openapi.json says about the API as a whole: its description (WebSockets included, which OpenAPI
cannot list as operations), the tags that group the routes, and how operations are named and summarised.

Every route sets an explicit `operation_id` (OpenAI's own ids under /v1, `verbNoun` under /api) and one
tag from `TAGS`; tests/api/test_openapi.py checks both. Generated clients (the web UI's among them) name
their functions after these ids, so renaming one is a breaking change.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import BaseModel

DESCRIPTION = """\
OpenAI-compatible inference with Sparse Autoencoder (SAE) feature steering and live monitoring.

* **`/v1`**: the OpenAI API (chat, completions, embeddings, models). Any of them accepts a top-level
  `steering` object (the SDKs' `extra_body`); every answer reports the steering it used, in the
  `X-MiLLM-Steering` header (compact JSON) and in the body's `millm.steering` (the same object).
* **`/api`**: management: the model, the attached SAE, server-wide steering, profiles, monitoring,
  Hub downloads and the cache. Errors use the OpenAI envelope `{"error": {"message", "type", "param", "code"}}`.
* Times are ISO 8601 strings in UTC (`2026-12-06T09:10:24.123456Z`).

## WebSockets

WebSockets are not operations in OpenAPI; their messages are JSON documents whose JSON Schemas are
published with the web UI's sources (`frontend/frames.schema.json`, built from the same pydantic models).

* **`/ws/monitor`**: one `ActivationFrame` per token of every request, from any client, while monitoring
  is enabled and not paused (`/api/monitor/config`): `request_id`, `choice`, `position`, `token`,
  `phase` (`prompt`, `generated`, `embedding`) and `activations` (feature `index`, `value`, `label`).
  Messages the client sends are ignored.
* **`/ws/downloads`**: one `DownloadEvent` per message: the state of every active download first, then
  `state` events on every state change and `progress` events while bytes move. With `?job_id=` only that
  job, and the socket closes after its final state (an unknown job: one error envelope, then close code 1008).
  The same events are served as server-sent events at `GET /api/downloads/events` and
  `GET /api/downloads/{job_id}/events`.
"""

TAGS: list[dict[str, str]] = [
    {"name": "openai", "description": "The OpenAI-compatible API: chat, completions, embeddings and the model "
                                      "list (the loaded model plus one `<model>+<profile>` id per profile)."},
    {"name": "models", "description": "The served model: load or switch (with a memory estimate first), unload, "
                                      "and estimate what a model would need before loading it."},
    {"name": "saes", "description": "Sparse Autoencoders: attach one to a layer of the loaded model, detach it, "
                                    "read its feature labels, and browse the SAEs a Hub repo holds."},
    {"name": "steering", "description": "Server-wide steering: which SAE features are added or clamped, and how "
                                        "strongly, for requests that bring no steering of their own."},
    {"name": "profiles", "description": "Saved steering configurations: create, edit, activate, duplicate, "
                                        "import (miLLM, Neuronpedia, Goodfire) and export."},
    {"name": "monitor", "description": "Live SAE activations: what is captured (selected features or top-k), "
                                       "pause and resume, history per request, statistics and export. Frames "
                                       "stream over the `/ws/monitor` WebSocket."},
    {"name": "downloads", "description": "Hub downloads as background jobs with progress (also as server-sent "
                                         "events and over `/ws/downloads`), and the local model and SAE cache."},
    {"name": "operations", "description": "Server status for dashboards, the health check and Prometheus metrics."},
]

OPERATION_ID = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def sse_item_schema(model: type[BaseModel] | None = None) -> dict[str, Any]:
    """One server-sent event as OpenAPI 3.2 (and FastAPI's own SSE routes) describe it, for a response's
    `text/event-stream` content: `{"itemSchema": ...}`, whose `data` is a JSON document, of `model` when given (its
    nested models must be components that other routes use, as they are referenced, not inlined)."""
    data: dict[str, Any] = {"type": "string", "contentMediaType": "application/json"}
    if model is not None:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
        data["contentSchema"] = schema
    return {"itemSchema": {"type": "object", "required": ["data"], "properties": {
        "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer", "minimum": 0},
        "data": data}}}


def operation_id(route: APIRoute) -> str:
    """Fallback for a route without an explicit operation_id: its function name in camelCase
    (the test on /openapi.json still asks every route for an explicit one)."""
    head, *rest = route.name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def describe_operations(router: APIRouter) -> None:
    """Summary = the first line of each route's docstring, description = the rest (FastAPI would use the
    whole docstring as the description and the title-cased function name as the summary). Call it on a
    router before it is included."""
    for route in router.routes:
        if not isinstance(route, APIRoute) or route.summary is not None:
            continue
        doc = inspect.cleandoc(route.endpoint.__doc__ or "")
        first, _, rest = doc.partition("\n")
        if first:
            route.summary = first.strip().rstrip(".")
            route.description = inspect.cleandoc(rest) if rest.strip() else first.strip()
