"""/v1/*: the OpenAI-compatible endpoints. SSE framing and headers only; the work is in services."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, AsyncGenerator, AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Header, Path, Request, Response

from millm.api.errors import error_body
from millm.api.sse import CompletionStream, Connection, event
from millm.api.state import RuntimeDep
from millm.errors import InvalidRequest, MillmError
from millm.protocol import fields
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
HASH_HEADER = "X-MiLLM-Steering-Hash"


def steering_header(applied: p.AppliedSteering, exclude: set[str] | None = None) -> str:
    return json.dumps(applied.model_dump(exclude_none=True, exclude=exclude), separators=(",", ":"))


class _Sse:
    """A stream's chunks as server-sent events, ending with `data: [DONE]` (or an error's event), and the chunks'
    shortcut (`ChunkStream.bypass`) passed on with the same framing (`api.sse.EventStream` sets it)."""

    def __init__(self, chunks: Any) -> None:
        self.chunks = chunks
        self._events = self._frame()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events

    async def aclose(self) -> None:
        await self._events.aclose()

    async def _frame(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self.chunks:
                yield event(chunk)
        except MillmError as e:
            yield event(json.dumps(error_body(e)))
            return
        yield event("[DONE]")

    def bypass(self, send: Callable[[bytes], bool] | None) -> None:
        bypass = getattr(self.chunks, "bypass", None)
        if bypass is not None:
            bypass(None if send is None else lambda texts: send(b"".join([event(t) for t in texts])))

    def worker_writes(self, conn: Connection) -> Any:
        """The chunks' worker writes (`ChunkStream.worker_writes`) on `conn`, each chunk one event in one body
        message, as the loop would write it."""
        writes = getattr(self.chunks, "worker_writes", None)
        chunk = conn.chunk
        return None if writes is None else writes(lambda text: chunk(event(text)), conn)


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


def steering_headers(applied: p.AppliedSteering) -> dict[str, str]:
    """The receipt as resolved at the start (no evidence) and its hash, when steering was applied."""
    headers = {STEERING_HEADER: steering_header(applied, exclude={"evidence"})}
    if applied.hash:
        headers[HASH_HEADER] = applied.hash
    return headers


StrictHeader = Annotated[str | None, Header(
    alias=fields.STRICT_HEADER, description="`true`: a field this server would ignore is a 400 naming it instead "
    "of a name in the X-MiLLM-Ignored-Fields response header.")]


def honest_fields(body: Any, endpoint: fields.Endpoint, strict: str | None) -> dict[str, str]:
    """The X-MiLLM-Ignored-Fields header for a request's ignored fields, or a 400 naming the first when strict."""
    ignored = fields.ignored_fields(body, endpoint)
    if not ignored:
        return {}
    if fields.strict(strict):
        status, note = fields.FIELDS[endpoint].get(ignored[0], ("ignored", "not a field of this endpoint"))
        raise InvalidRequest(f"{ignored[0]} would be ignored ({note}) and X-MiLLM-Strict is set", param=ignored[0],
                             code="unsupported_field")
    # Names as sent, but a header holds printable ASCII only: anything else (and any line break) escaped as \\uXXXX.
    return {fields.IGNORED_HEADER: ", ".join(fields.header_safe(name) for name in ignored)}


def _respond(result: Result, response: Response, extra: dict[str, str] | None = None) -> Any:
    headers = {**steering_headers(result.applied), **(extra or {})}
    if result.stream:
        return CompletionStream(_Sse(result.value), sep="\n", ping=15, headers=headers)
    response.headers.update(headers)
    return result.value


@router.get("/models", operation_id="listModels", response_model=p.ModelList)
async def list_models(rt: RuntimeDep) -> p.ModelList:
    """List models.

    The loaded model, then one virtual id `<model>+<profile>` per profile that fits the loaded model and
    attached SAE: a chat client that picks one is steered by that profile. Empty while no model is loaded."""
    return rt.views.model_list()


@router.get("/models/{model_id:path}", operation_id="retrieveModel", response_model=p.ModelCard, responses=ERRORS)
async def retrieve_model(
    model_id: Annotated[str, Path(description="A model id from GET /v1/models (may contain '/').")],
    rt: RuntimeDep,
) -> p.ModelCard:
    """Retrieve a model.

    One entry of the model list; ids may contain `/` (raw or percent-encoded). 404 in the OpenAI envelope for an
    unknown id."""
    return rt.views.model_card(model_id)


@router.post("/chat/completions", operation_id="createChatCompletion",
             response_model=p.ChatCompletion, responses=STREAMED)
async def chat_completions(body: p.ChatCompletionRequest, rt: RuntimeDep, request: Request, response: Response,
                           strict: StrictHeader = None) -> Any:
    """Create a chat completion.

    The OpenAI chat API with the model's chat template; `stream: true` answers server-sent events ending with
    `data: [DONE]`. A top-level `steering` object steers this request only; the steering used is reported in
    `millm.steering` and the `X-MiLLM-Steering` header."""
    extra = honest_fields(body, "chat", strict)
    result = await _unless_disconnected(request, rt.generation.chat(body))
    return result if isinstance(result, Response) else _respond(result, response, extra)


@router.post("/completions", operation_id="createCompletion", response_model=p.Completion, responses=STREAMED)
async def completions(body: p.CompletionRequest, rt: RuntimeDep, request: Request, response: Response,
                      strict: StrictHeader = None) -> Any:
    """Create a completion.

    The OpenAI (legacy) completions API: `prompt` as text, texts, token ids or lists of token ids; `stream:
    true` answers server-sent events. Takes the same `steering` object as chat completions."""
    extra = honest_fields(body, "completions", strict)
    result = await _unless_disconnected(request, rt.generation.completion(body))
    return result if isinstance(result, Response) else _respond(result, response, extra)


@router.post("/embeddings", operation_id="createEmbedding", response_model=p.EmbeddingList, responses=ERRORS)
async def embeddings(body: p.EmbeddingRequest, rt: RuntimeDep, response: Response,
                     strict: StrictHeader = None) -> p.EmbeddingList:
    """Create embeddings.

    The mean of the last layer's hidden states (after the final norm), L2-normalised; `encoding_format` float or
    base64. Steering applies to embeddings too."""
    response.headers.update(honest_fields(body, "embeddings", strict))
    result = await rt.embeddings.embed(body)
    if result.millm:
        response.headers.update(steering_headers(result.millm.steering))
    else:
        response.headers[STEERING_HEADER] = ""
    return result
