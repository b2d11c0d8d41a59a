"""/api/downloads (jobs, SSE events), /ws/downloads, /api/cache and /api/models/estimate.

HTTP framing only: the work is in `millm.services.hub` and `millm.hub.jobs`. Jobs and cache
entries are named by repo id, revision and folder inside the repo, never by server path.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Depends, Path, Query, Response, WebSocket, WebSocketDisconnect
from sse_starlette import EventSourceResponse

from millm.api.errors import error_body
from millm.api.openapi import sse_item_schema
from millm.api.websockets import push_until_closed
from millm.api.state import RuntimeDep, WsRuntimeDep
from millm.errors import MillmError
from millm.hub.cache import CachedRepo
from millm.hub.events import JobEvent, Subscription
from millm.hub.jobs import Job
from millm.hub.memory import MemoryEstimate
from millm.protocol import hub as h
from millm.protocol.openai import ErrorResponse
from millm.services.hub import HubService
from millm.services.remote_code import check_allowed

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 502)}


# The event streams: server-sent events, each `data:` one DownloadEvent. (Their errors are JSON: spelt out, since
# FastAPI would document a `model` in the route's own media type.)
EVENTS: dict[int | str, dict[str, Any]] = {**{code: {"content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/ErrorResponse"}}}} for code in ERRORS}, 200: {
    "description": "Server-sent events (`event: state` or `progress`), each `data:` a DownloadEvent",
    "content": {"text/event-stream": sse_item_schema(h.DownloadEvent)}}}
SSE_PING_S = 15


class EventStream(EventSourceResponse):
    media_type = "text/event-stream"  # (a class attribute, so that OpenAPI documents the stream's content type)


def hub_service(rt: RuntimeDep) -> HubService:
    """A HubService over the runtime's one JobManager, knowing which repos are loaded right now."""
    in_use: set[str] = set()
    lm = rt.worker.loaded
    if lm is not None:
        in_use.add(lm.source)
    att = rt.saes.attached
    sae_numel = 0
    if att is not None:
        if att.source.get("repo_id"):
            in_use.add(str(att.source["repo_id"]))
        sae_numel = sum(t.numel() for t in (*att.sae.parameters(), *att.sae.buffers()))
    s = rt.settings
    return HubService(jobs=rt.jobs, in_use=frozenset(in_use), sae_numel=sae_numel, roots=rt.roots,
                      defaults={"device": s.device, "dtype": s.dtype, "quantization": s.quantization,
                                "max_context": s.max_context, "trust_remote_code": s.trust_remote_code})


HubDep = Annotated[HubService, Depends(hub_service)]
JobId = Annotated[str, Path(description="The job's id, as POST /api/downloads and GET /api/downloads give it.")]


# ---------------------------------------------------------------------------- shapes


def job_out(job: Job | dict[str, Any]) -> h.JobOut:
    d = job.to_dict() if isinstance(job, Job) else dict(job)
    total, done = d["bytes_total"], d["bytes_done"]
    progress = 1.0 if d["state"] == "completed" else (min(1.0, done / total) if total else 0.0)
    return h.JobOut(
        id=d["id"], kind=d["kind"], repo_id=d["repo_id"], name=d["repo_id"].rsplit("/", 1)[-1],
        revision=d["revision"], path=d["path"], state=d["state"], commit=d["commit"], bytes_done=done,
        bytes_total=total, files_done=d["files_done"], files_total=d["files_total"], progress=round(progress, 4),
        current_file=d["current_file"], speed_bps=d.get("speed_bps", 0.0), eta_s=_eta(d),
        error=h.JobError(**d["error"]) if d["error"] else None,
        attempts=d["attempts"], created_at=utc(d["created_at"]), updated_at=utc(d["updated_at"]),
        finished_at=utc(d["finished_at"]) if d["finished_at"] is not None else None,
    )


def _eta(d: dict[str, Any]) -> float | None:
    speed = d.get("speed_bps") or 0.0
    if d["state"] != "running" or speed <= 0 or not d["bytes_total"]:
        return None
    return round(max(0, d["bytes_total"] - d["bytes_done"]) / speed, 1)


def event_out(event: JobEvent) -> h.DownloadEvent:
    return h.DownloadEvent(type=event.type, job=job_out(event.job))  # type: ignore[arg-type]


def utc(timestamp: float) -> datetime:
    """A Unix time as the API writes times: an aware UTC datetime (ISO 8601 in JSON)."""
    return datetime.fromtimestamp(timestamp, UTC)


def cached_out(repo: CachedRepo, hub: HubService) -> h.CachedRepoOut:
    d = repo.to_dict()
    d["last_modified"] = utc(d["last_modified"])
    d["last_used"] = utc(d["last_used"]) if d["last_used"] is not None else None
    return h.CachedRepoOut(**d, in_use=repo.repo_id in hub.in_use, downloading=hub.jobs.is_busy(repo.repo_id))


def estimate_out(est: MemoryEstimate, available: int | None) -> h.MemoryEstimateOut:
    """`available` None: the device is not on this machine, so there is nothing to compare with."""
    summary = est.describe() + ("" if available is not None else f"; {est.device} is not present on this machine")
    return h.MemoryEstimateOut(**est.to_dict(), available_bytes=available, device_present=available is not None,
                               fits=est.total_bytes <= available if available is not None else None, summary=summary)


# ---------------------------------------------------------------------------- downloads


@router.post("/api/downloads", operation_id="startDownload", tags=["downloads"],
             status_code=202, response_model=h.JobOut, responses=ERRORS)
async def start_download(body: h.DownloadIn, hub: HubDep) -> h.JobOut:
    """Start a download.

    Pull a model or an SAE into the cache as a background job; an identical queued or running job is returned
    instead of a second one. Follow it with `GET /api/downloads/{job_id}`, its event stream, or `/ws/downloads`."""
    check_allowed(body.trust_remote_code, allowed=bool(hub.defaults.get("trust_remote_code")))
    job = await asyncio.to_thread(hub.submit, kind=body.kind, repo_id=body.repo_id, revision=body.revision,
                                  path=body.path, release=body.release, sae_id=body.sae_id)
    return job_out(job)


@router.get("/api/downloads", operation_id="listDownloads", tags=["downloads"], response_model=h.JobList)
async def list_downloads(
    rt: RuntimeDep, active: Annotated[bool, Query(description="Only queued and running jobs.")] = False,
) -> h.JobList:
    """List downloads.

    Every job the server knows (`active=true`: queued and running ones), oldest first, with total progress
    across files, speed and ETA."""
    data = [job_out(j) for j in rt.jobs.list(active_only=active)]
    return h.JobList(data=data, count=len(data))


async def _sse_events(sub: Subscription, initial: list[Job]) -> AsyncIterator[dict[str, str]]:
    try:
        for job in initial:
            yield {"event": "state", "data": h.DownloadEvent(type="state", job=job_out(job)).model_dump_json()}
        async for event in sub:
            yield {"event": event.type, "data": event_out(event).model_dump_json()}
    finally:
        sub.close()


@router.get("/api/downloads/events", operation_id="streamDownloadEvents", tags=["downloads"],
            response_class=EventStream, responses=EVENTS)
async def download_events(rt: RuntimeDep) -> EventSourceResponse:
    """Stream download events.

    Server-sent events: the state of every active job first, then every job's `state` and `progress` events
    (each `data:` is a DownloadEvent)."""
    sub = rt.jobs.subscribe_async()
    return EventStream(_sse_events(sub, rt.jobs.list(active_only=True)), ping=SSE_PING_S)


@router.get("/api/downloads/{job_id}", operation_id="getDownload", tags=["downloads"],
            response_model=h.JobOut, responses=ERRORS)
async def get_download(job_id: JobId, rt: RuntimeDep) -> h.JobOut:
    """Get a download.

    One job: state, bytes and files done of the total, speed, ETA, current file and error."""
    return job_out(rt.jobs.get(job_id))


@router.get("/api/downloads/{job_id}/events", operation_id="streamDownload", tags=["downloads"],
            response_class=EventStream, responses=EVENTS)
async def job_events(job_id: JobId, rt: RuntimeDep) -> EventSourceResponse:
    """Stream one download's events.

    Server-sent events for one job: its current state, then its events; the stream ends after a final state."""
    sub = rt.jobs.subscribe_async(job_id)  # NotFound before the stream starts -> a 404
    return EventStream(_sse_events(sub, []), ping=SSE_PING_S)


@router.post("/api/downloads/{job_id}/cancel", operation_id="cancelDownload", tags=["downloads"],
             response_model=h.JobOut, responses=ERRORS)
async def cancel_download(job_id: JobId, rt: RuntimeDep) -> h.JobOut:
    """Cancel a download.

    Stop a job; the file being transferred is deleted, finished files stay in the cache."""
    return job_out(rt.jobs.cancel(job_id))


@router.post("/api/downloads/{job_id}/resume", operation_id="resumeDownload", tags=["downloads"],
             response_model=h.JobOut, responses=ERRORS)
async def resume_download(job_id: JobId, rt: RuntimeDep) -> h.JobOut:
    """Resume a download.

    Run a failed or cancelled job again; files already complete are not fetched twice."""
    return job_out(rt.jobs.resume(job_id))


@router.delete("/api/downloads/{job_id}", operation_id="deleteDownload", tags=["downloads"],
               status_code=204, responses=ERRORS)
async def forget_download(job_id: JobId, rt: RuntimeDep) -> Response:
    """Delete a download from the list.

    Forget a finished job (409 while it is queued or running). The downloaded files stay in the cache."""
    rt.jobs.forget(job_id)
    return Response(status_code=204)


@router.websocket("/ws/downloads")
async def downloads_ws(websocket: WebSocket, rt: WsRuntimeDep, job_id: str | None = None) -> None:
    """One JSON DownloadEvent per message: active jobs' states first (or the one job's), then events.

    For one job (``?job_id=``) the socket is closed after its final state."""
    await websocket.accept()
    try:
        sub = rt.jobs.subscribe_async(job_id)
    except MillmError as e:
        await websocket.send_text(json.dumps(error_body(e)))
        await websocket.close(code=1008)
        return
    async def send(event: object) -> bool:
        if event is None:  # the one job finished
            await websocket.close()
            return False
        await websocket.send_text(event_out(event).model_dump_json())  # type: ignore[arg-type]
        return True

    try:
        if job_id is None:
            for job in rt.jobs.list(active_only=True):
                await websocket.send_text(h.DownloadEvent(type="state", job=job_out(job)).model_dump_json())
        await push_until_closed(websocket, sub.aget, send)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        sub.close()


# ---------------------------------------------------------------------------- cache


@router.get("/api/cache", operation_id="listCache", tags=["downloads"], response_model=h.CacheList)
async def list_cache(hub: HubDep, kind: str | None = Query(
        None, pattern="^(model|sae)$", description="Only models or only SAEs.")) -> h.CacheList:
    """List the cache.

    Cached models and SAEs: size, files, revisions, last use, SAE folders, and whether each is in use or
    downloading; named by repo id, never by server path."""
    repos = await asyncio.to_thread(hub.cached, kind)
    data = [cached_out(r, hub) for r in repos]
    return h.CacheList(data=data, count=len(data), size_bytes=sum(r.size_bytes for r in repos))


@router.delete("/api/cache/{repo_id:path}", operation_id="deleteCacheEntry", tags=["downloads"],
               response_model=h.CacheDeleteOut, responses=ERRORS)
async def delete_cached(
    repo_id: Annotated[str, Path(description="Hub repo id, `owner/name`.")], hub: HubDep,
    revision: Annotated[str | None, Query(description="Delete only this revision (commit or ref); none: all of it.")]
    = None,
) -> h.CacheDeleteOut:
    """Delete a cache entry.

    Delete a cached repo (or one revision); refused (409) while it is loaded, attached or being downloaded."""
    freed = await asyncio.to_thread(hub.delete, repo_id, revision)
    return h.CacheDeleteOut(repo_id=repo_id, revision=revision, freed_bytes=freed)


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
    result = await asyncio.to_thread(hub.estimate, model, revision=revision, dtype=dtype,
                                     quantization=quantization, device=device, context=context)
    name = model if result.origin != "local" else model.rstrip("/").rsplit("/", 1)[-1]
    return h.ModelEstimateOut(model=name, source=result.origin,  # type: ignore[arg-type]
                              estimate=estimate_out(result.estimate, result.available_bytes))



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
    listing = await asyncio.to_thread(hub.repo_saes, repo_id, revision)
    data = [h.RepoSaeOut(path=s.path, source=f"{listing.repo_id}:{s.path}" if s.path else listing.repo_id,
                         format=s.format, layer=s.layer, site=s.site, hook_name=s.hook_name, width=s.width,
                         d_in=s.d_in, l0=s.l0, l0_label=s.l0_label, architecture=s.architecture,
                         neuronpedia_id=s.neuronpedia_id, size_bytes=s.size_bytes, files=s.files,
                         cached=s.path in listing.cached_paths)
            for s in listing.saes]
    return h.RepoSaeList(repo_id=listing.repo_id, revision=listing.revision, commit=listing.commit, data=data,
                         count=len(data), configs_read=listing.configs_read)


@router.get("/api/hub/models/{repo_id:path}", operation_id="previewModel", tags=["models"],
            response_model=h.ModelPreviewOut, responses=ERRORS)
async def preview_model(
    repo_id: Annotated[str, Path(description="Hub repo id, `owner/name`.", max_length=200)],
    hub: HubDep, rt: RuntimeDep,
    revision: Annotated[str | None, Query(description="Branch, tag or commit (default: main).", max_length=200)]
    = None,
) -> h.ModelPreviewOut:
    """Preview a Hub model.

    Before downloading: the Hub's downloads, likes, pipeline tag, model_type and architectures, tags, license,
    languages and gating, whether loading it runs the repo's own code (`needs_remote_code`) and whether this
    server allows that, and a memory estimate per precision (fp32, fp16, bf16, 8-bit, 4-bit) on the server's
    device from the safetensors headers and config.json. Nothing is downloaded into the cache."""
    p, available = await asyncio.to_thread(hub.preview_model, repo_id, revision)
    rows = [h.PrecisionEstimateOut(precision=label, dtype=e.dtype, quantization=e.quantization,  # type: ignore[arg-type]
                                   weights_bytes=e.weights_bytes, kv_cache_bytes=e.kv_cache_bytes,
                                   sae_bytes=e.sae_bytes, overhead_bytes=e.overhead_bytes, total_bytes=e.total_bytes,
                                   fits=e.total_bytes <= available if available is not None else None)
            for label, e in p.estimates]
    return h.ModelPreviewOut(
        repo_id=p.repo_id, revision=p.revision, commit=p.commit, author=p.author, downloads=p.downloads,
        likes=p.likes, pipeline_tag=p.pipeline_tag, library_name=p.library_name, model_type=p.model_type,
        architectures=p.architectures, tags=p.tags, license=p.license, languages=p.languages, gated=p.gated,
        private=p.private, needs_remote_code=p.needs_remote_code,
        trust_remote_code_allowed=rt.settings.trust_remote_code,
        last_modified=datetime.fromisoformat(p.last_modified) if p.last_modified else None, files=p.files,
        size_bytes=p.size_bytes, params=p.params, context=p.context,
        device=p.estimates[0][1].device if p.estimates else str(hub.defaults.get("device", "auto")),
        available_bytes=available, estimates=rows, estimate_error=p.estimate_error,
    )  # fmt: skip
