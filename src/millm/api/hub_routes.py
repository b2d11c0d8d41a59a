"""/api/downloads (jobs, SSE events), /ws/downloads, /api/cache and /api/models/estimate.

HTTP framing only: every route calls one method of the runtime's one `HubService`
(`millm.services.hub`). Jobs and cache entries are named by repo id, revision and folder inside
the repo, never by server path.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Depends, Path, Query, Response, WebSocket, WebSocketDisconnect
from sse_starlette import EventSourceResponse

from millm.api.errors import error_body
from millm.api.openapi import sse_item_schema
from millm.api.sse import EventStream
from millm.api.state import RuntimeDep, WsRuntimeDep
from millm.api.websockets import push_until_closed
from millm.errors import MillmError
from millm.protocol import hub as h
from millm.protocol.openai import ErrorResponse
from millm.services.hub import EventFeed, HubService

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 502)}


# The event streams: server-sent events, each `data:` one DownloadEvent. (Their errors are JSON: spelt out, since
# FastAPI would document a `model` in the route's own media type.)
EVENTS: dict[int | str, dict[str, Any]] = {**{code: {"content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/ErrorResponse"}}}} for code in ERRORS}, 200: {
    "description": "Server-sent events (`event: state` or `progress`), each `data:` a DownloadEvent",
    "content": {"text/event-stream": sse_item_schema(h.DownloadEvent)}}}
SSE_PING_S = 15


async def hub_service(rt: RuntimeDep) -> HubService:
    return rt.hub


HubDep = Annotated[HubService, Depends(hub_service)]
JobId = Annotated[str, Path(description="The job's id, as POST /api/downloads and GET /api/downloads give it.")]


# ---------------------------------------------------------------------------- downloads


@router.post("/api/downloads", operation_id="startDownload", tags=["downloads"],
             status_code=202, response_model=h.JobOut, responses=ERRORS)
async def start_download(body: h.DownloadIn, hub: HubDep) -> h.JobOut:
    """Start a download.

    Pull a model or an SAE into the cache as a background job; an identical queued or running job is returned
    instead of a second one. Follow it with `GET /api/downloads/{job_id}`, its event stream, or `/ws/downloads`."""
    return await asyncio.to_thread(hub.submit, kind=body.kind, repo_id=body.repo_id, revision=body.revision,
                                   path=body.path, release=body.release, sae_id=body.sae_id,
                                   trust_remote_code=body.trust_remote_code)


@router.get("/api/downloads", operation_id="listDownloads", tags=["downloads"], response_model=h.JobList)
async def list_downloads(
    hub: HubDep, active: Annotated[bool, Query(description="Only queued and running jobs.")] = False,
) -> h.JobList:
    """List downloads.

    Every job the server knows (`active=true`: queued and running ones), oldest first, with total progress
    across files, speed and ETA."""
    data = hub.list_jobs(active_only=active)
    return h.JobList(data=data, count=len(data))


async def _sse_events(feed: EventFeed) -> AsyncIterator[dict[str, str]]:
    async with feed:
        async for event in feed:
            yield {"event": event.type, "data": event.model_dump_json()}


@router.get("/api/downloads/events", operation_id="streamDownloadEvents", tags=["downloads"],
            response_class=EventStream, responses=EVENTS)
async def download_events(hub: HubDep) -> EventSourceResponse:
    """Stream download events.

    Server-sent events: the state of every active job first, then every job's `state` and `progress` events
    (each `data:` is a DownloadEvent)."""
    return EventStream(_sse_events(hub.events()), ping=SSE_PING_S)


@router.get("/api/downloads/{job_id}", operation_id="getDownload", tags=["downloads"],
            response_model=h.JobOut, responses=ERRORS)
async def get_download(job_id: JobId, hub: HubDep) -> h.JobOut:
    """Get a download.

    One job: state, bytes and files done of the total, speed, ETA, current file and error."""
    return hub.job(job_id)


@router.get("/api/downloads/{job_id}/events", operation_id="streamDownload", tags=["downloads"],
            response_class=EventStream, responses=EVENTS)
async def job_events(job_id: JobId, hub: HubDep) -> EventSourceResponse:
    """Stream one download's events.

    Server-sent events for one job: its current state, then its events; the stream ends after a final state."""
    feed = hub.events(job_id)  # NotFound before the stream starts -> a 404
    return EventStream(_sse_events(feed), ping=SSE_PING_S)


@router.post("/api/downloads/{job_id}/cancel", operation_id="cancelDownload", tags=["downloads"],
             response_model=h.JobOut, responses=ERRORS)
async def cancel_download(job_id: JobId, hub: HubDep) -> h.JobOut:
    """Cancel a download.

    Stop a job; the file being transferred is deleted, finished files stay in the cache."""
    return hub.cancel(job_id)


@router.post("/api/downloads/{job_id}/resume", operation_id="resumeDownload", tags=["downloads"],
             response_model=h.JobOut, responses=ERRORS)
async def resume_download(job_id: JobId, hub: HubDep) -> h.JobOut:
    """Resume a download.

    Run a failed or cancelled job again; files already complete are not fetched twice."""
    return hub.resume(job_id)


@router.delete("/api/downloads/{job_id}", operation_id="deleteDownload", tags=["downloads"],
               status_code=204, responses=ERRORS)
async def forget_download(job_id: JobId, hub: HubDep) -> Response:
    """Delete a download from the list.

    Forget a finished job (409 while it is queued or running). The downloaded files stay in the cache."""
    hub.forget(job_id)
    return Response(status_code=204)


@router.websocket("/ws/downloads")
async def downloads_ws(websocket: WebSocket, rt: WsRuntimeDep, job_id: str | None = None) -> None:
    """One JSON DownloadEvent per message: active jobs' states first (or the one job's), then events.

    For one job (``?job_id=``) the socket is closed after its final state."""
    await websocket.accept()
    try:
        feed = rt.hub.events(job_id)
    except MillmError as e:
        await websocket.send_text(json.dumps(error_body(e)))
        await websocket.close(code=1008)
        return

    async def send(event: h.DownloadEvent | None) -> bool:
        if event is None:  # the one job finished
            await websocket.close()
            return False
        await websocket.send_text(event.model_dump_json())
        return True

    try:
        async with feed:
            await push_until_closed(websocket, feed.next, send)
    except (WebSocketDisconnect, RuntimeError):
        pass


# ---------------------------------------------------------------------------- cache


@router.get("/api/cache", operation_id="listCache", tags=["downloads"], response_model=h.CacheList)
async def list_cache(hub: HubDep, kind: str | None = Query(
        None, pattern="^(model|sae)$", description="Only models or only SAEs.")) -> h.CacheList:
    """List the cache.

    Cached models and SAEs: size, files, revisions, last use, SAE folders, and whether each is in use or
    downloading; named by repo id, never by server path."""
    return await asyncio.to_thread(hub.list_cache, kind)


@router.delete("/api/cache/{repo_id:path}", operation_id="deleteCacheEntry", tags=["downloads"],
               response_model=h.CacheDeleteOut, responses=ERRORS)
async def delete_cached(
    repo_id: Annotated[str, Path(description="Hub repo id, `owner/name`.")], hub: HubDep,
    revision: Annotated[str | None, Query(description="Delete only this revision (commit or ref); none: all of it.")]
    = None,
) -> h.CacheDeleteOut:
    """Delete a cache entry.

    Delete a cached repo (or one revision); refused (409) while it is loaded, attached or being downloaded."""
    return await asyncio.to_thread(hub.delete, repo_id, revision)


# ---------------------------------------------------------------------------- estimates


@router.get("/api/models/estimate", operation_id="estimateModel", tags=["models"],
            response_model=h.ModelEstimateOut, responses=ERRORS)
async def estimate_model(
    hub: HubDep,
    model: Annotated[str, Query(description="A local folder, `millm-demo`, a cached or a Hub repo id.")],
    revision: Annotated[str | None, Query(description="Hub branch, tag or commit (default: main).")] = None,
    dtype: str | None = Query(None, pattern="^(auto|float32|float16|bfloat16)$",
                              description="Precision of the weights (default: the server's)."),
    quantization: str | None = Query(None, pattern="^(none|8bit|4bit)$",
                                     description="bitsandbytes quantization (default: the server's)."),
    device: str | None = Query(None, pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
                               description="Device to estimate for; one not on this machine is estimated too."),
    context: int | None = Query(None, ge=1, description="Tokens of KV cache (default: the model's, capped)."),
) -> h.ModelEstimateOut:
    """Estimate a model's memory.

    Memory a load would need (weights, KV cache for one sequence, attached SAE, overhead) against free memory on
    the device. `model` is a local folder, a cached repo id, or a Hub repo id (read from its safetensors
    headers, nothing downloaded). Defaults are the server's dtype, quantization, device and max context. A device
    this machine does not have (e.g. `cuda` on a CPU-only install) is estimated from the files alone:
    `device_present` is false and `available_bytes` and `fits` are null."""
    return await asyncio.to_thread(hub.estimate_out, model, revision=revision, dtype=dtype,
                                   quantization=quantization, device=device, context=context)



# ---------------------------------------------------------------------------- browsing the Hub


@router.get("/api/hub/saes", operation_id="listRepoSaes", tags=["saes"], response_model=h.RepoSaeList,
            responses=ERRORS)
async def list_repo_saes(
    hub: HubDep,
    repo_id: Annotated[str, Query(description="Hub repo id, `owner/name` (e.g. google/gemma-scope-2b-pt-res).",
                                  max_length=200)],
    revision: Annotated[str | None, Query(description="Branch, tag or commit (default: main).", max_length=200)]
    = None,
) -> h.RepoSaeList:
    """List a Hub repo's SAEs.

    Every SAE folder of the repo (Gemma Scope, Gemma Scope 2, Llama Scope, SAELens, sparsify, dictionary_learning
    layouts) with its layer, site, width, L0 and size parsed from its path, and d_in, hook, architecture and
    Neuronpedia id from its config where the format has one; nothing is downloaded into the cache. Pick one and
    pull it with `POST /api/downloads` (`kind: sae`, `repo_id`, `path`) or attach its `source`."""
    return await asyncio.to_thread(hub.list_repo_saes, repo_id, revision)


@router.get("/api/hub/models/{repo_id:path}", operation_id="previewModel", tags=["models"],
            response_model=h.ModelPreviewOut, responses=ERRORS)
async def preview_model(
    repo_id: Annotated[str, Path(description="Hub repo id, `owner/name`.", max_length=200)],
    hub: HubDep,
    revision: Annotated[str | None, Query(description="Branch, tag or commit (default: main).", max_length=200)]
    = None,
) -> h.ModelPreviewOut:
    """Preview a Hub model.

    Before downloading: the Hub's downloads, likes, pipeline tag, model_type and architectures, tags, license,
    languages and gating, whether loading it runs the repo's own code (`needs_remote_code`) and whether this
    server allows that, and a memory estimate per precision (fp32, fp16, bf16, 8-bit, 4-bit) on the server's
    device from the safetensors headers and config.json. Nothing is downloaded into the cache."""
    return await asyncio.to_thread(hub.preview_model, repo_id, revision)
