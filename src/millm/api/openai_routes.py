"""/v1/*: the OpenAI-compatible endpoints. SSE framing and headers only; the work is in services."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Awaitable

from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse
from starlette.types import Message, Send

from millm.api.errors import error_body
from millm.api.state import RuntimeDep
from millm.errors import MillmError, ModelNotFound
from millm.protocol import openai as p
from millm.services.generation import Result

router = APIRouter(prefix="/v1", tags=["openai"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": p.ErrorResponse} for code in (400, 404, 429, 500, 503)
}
STREAMED: dict[int | str, dict[str, Any]] = {**ERRORS, 200: {
    "description": "The completion; with `stream: true`, server-sent events of chunks ending with `data: [DONE]`",
    "content": {"text/event-stream": {}}}}
STEERING_HEADER = "X-MiLLM-Steering"


def steering_header(applied: p.AppliedSteering) -> str:
    return json.dumps(applied.model_dump(exclude_none=True), separators=(",", ":"))


class _EventStream(EventSourceResponse):
    """sse-starlette wraps every send in an anyio cancel scope for its optional send timeout; without
    a timeout (none is set here) that scope does nothing but costs time on the event loop per token."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


def _event(data: str) -> bytes:
    # One SSE event, as sse-starlette frames {"data": data} with sep="\n"; JSON text has no line breaks.
    return b"data: " + data.encode() + b"\n\n"


async def _sse(chunks: AsyncIterator[str]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield _event(chunk)
    except MillmError as e:
        yield _event(json.dumps(error_body(e)))
        return
    yield _event("[DONE]")


async def _unless_disconnected(request: Request, work: Awaitable[Result]) -> Result | Response:
    """Await `work` (a whole non-streamed completion, or a stream's prefill); if the client disconnects first,
    cancel it, which cancels its engine requests (the worker drops them within a decode step)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if not watcher.done() or watcher.cancelled():
            raise  # (cancelled from outside, not by the watcher)
        return Response(status_code=499)  # nobody reads it: nginx's "client closed request"
    finally:
        watcher.cancel()


def _respond(result: Result, response: Response) -> Any:
    header = steering_header(result.applied)
    if result.stream:
        return _EventStream(_sse(result.value), sep="\n", ping=15, headers={STEERING_HEADER: header})
    response.headers[STEERING_HEADER] = header
    return result.value


@router.get("/models", response_model=p.ModelList)
async def list_models(rt: RuntimeDep) -> p.ModelList:
    name = rt.models.served_name()
    if name is None:
        return p.ModelList(data=[])
    created = int(rt.started_at)
    cards = [p.ModelCard(id=name, created=created)]
    cards += [p.ModelCard(id=f"{name}+{prof}", created=created, root=name, profile=prof)
              for prof in rt.profile_names_for_model()]
    return p.ModelList(data=cards)


@router.get("/models/{model_id:path}", response_model=p.ModelCard, responses=ERRORS)
async def retrieve_model(model_id: str, rt: RuntimeDep) -> p.ModelCard:
    for card in (await list_models(rt)).data:
        if card.id == model_id:
            return card
    raise ModelNotFound(f"the model {model_id!r} does not exist", param="model")


@router.post("/chat/completions", response_model=p.ChatCompletion, responses=STREAMED)
async def chat_completions(body: p.ChatCompletionRequest, rt: RuntimeDep, request: Request, response: Response) -> Any:
    result = await _unless_disconnected(request, rt.generation.chat(body))
    return result if isinstance(result, Response) else _respond(result, response)


@router.post("/completions", response_model=p.Completion, responses=STREAMED)
async def completions(body: p.CompletionRequest, rt: RuntimeDep, request: Request, response: Response) -> Any:
    result = await _unless_disconnected(request, rt.generation.completion(body))
    return result if isinstance(result, Response) else _respond(result, response)


@router.post("/embeddings", response_model=p.EmbeddingList, responses=ERRORS)
async def embeddings(body: p.EmbeddingRequest, rt: RuntimeDep, response: Response) -> p.EmbeddingList:
    result = await rt.embeddings.embed(body)
    response.headers[STEERING_HEADER] = steering_header(result.millm.steering) if result.millm else ""
    return result
