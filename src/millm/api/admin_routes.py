"""/api/status, /api/models, /api/saes and /api/steering; /health and /metrics."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile as StarletteUpload
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from millm import __version__
from millm.api.hub_routes import estimate_out
from millm.api.state import RuntimeDep
from millm.errors import InvalidRequest
from millm.protocol import admin as a
from millm.protocol.openai import ErrorResponse
from millm.services.local_paths import looks_like_path
from millm.services.runtime import Runtime
from millm.services.saes import AttachedSae

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 409, 503)}
# Loads and attaches may pull from the Hub first: its refusals and failures pass through (401, 403, 502).
HUB_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, **{code: {"model": ErrorResponse} for code in (401, 403, 502)}}


def looks_local(source: str) -> bool:
    try:
        return looks_like_path(source) or Path(source).expanduser().is_dir()
    except (OSError, RuntimeError, ValueError):
        return False


def model_out(rt: Runtime) -> a.LoadedModelOut | None:
    lm = rt.worker.loaded
    if lm is None:
        return None
    cfg = lm.model.config.get_text_config()
    return a.LoadedModelOut(
        id=rt.models.served_name() or lm.model_id, source="local" if looks_local(lm.source) else lm.source,
        revision=lm.revision, device=str(lm.device), dtype=str(lm.dtype).removeprefix("torch."),
        quantization=lm.quantization, parameters=lm.num_parameters, context_length=lm.context_length,
        d_model=lm.d_model, num_layers=int(cfg.num_hidden_layers),
    )


def sae_out(att: AttachedSae | None) -> a.SaeOut | None:
    if att is None:
        return None
    cfg = att.sae.cfg
    return a.SaeOut(
        id=att.sae_id, hook_name=att.hook_name, module=att.hookpoint.module_path, layer=att.hookpoint.layer,
        d_in=cfg.d_in, d_sae=cfg.d_sae, architecture=cfg.architecture, dtype=str(att.sae.dtype).removeprefix("torch."),
        source_format=cfg.source_format, repo_id=att.source.get("repo_id"), path=att.source.get("path"),
        revision=att.source.get("revision"), model_name=cfg.model_name, labelled_features=len(att.labels),
        imported_labels=len(att.imported_labels),
        neuronpedia_id=cfg.neuronpedia_id or None,
    )


def steering_out(rt: Runtime) -> a.SteeringStateOut:
    s = rt.steering.state
    return a.SteeringStateOut(
        enabled=s.enabled, mode=s.mode, normalize=s.normalize, steer_special_tokens=s.steer_special_tokens,
        features=[a.SteeringFeatureOut(index=i, strength=v, label=s.labels.get(i) or rt.monitor.labels.get(i))
                  for i, v in sorted(s.features.items())],
        profile=s.profile, scale=s.scale,
    )


# ---------------------------------------------------------------------------- health, metrics, status


@router.get("/health", operation_id="getHealth", tags=["operations"], response_model=a.HealthOut,
            responses={503: {"model": a.HealthOut, "description": "Starting, loading or no model (with Retry-After)"}})
async def health(rt: RuntimeDep) -> Any:
    """Health check.

    200 `{"status": "ok"}` when a model is loaded and serving; 503 with `Retry-After` while the server starts,
    loads, has no model or drains before exit (`draining`)."""
    status = "draining" if rt.draining else rt.status
    if status != "ok":
        return JSONResponse({"status": status, "error": rt.boot_error}, status_code=503, headers={"Retry-After": "5"})
    return {"status": "ok"}


@router.get("/metrics", operation_id="getMetrics", tags=["operations"], response_class=Response, responses={200: {
    "description": "Prometheus text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(rt: RuntimeDep) -> Response:
    """Prometheus metrics.

    Requests, tokens, latencies, queue depth, running sequences and downloads, in the Prometheus text format."""
    rt.metrics.queue_depth.set(rt.worker.queue_depth)
    rt.metrics.active_sequences.set(rt.worker.active_sequences)
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/status", operation_id="getStatus", tags=["operations"], response_model=a.StatusOut)
async def status(rt: RuntimeDep) -> a.StatusOut:
    """Server status.

    Everything a dashboard shows at a glance: version and uptime, serving state, host CPU and RAM, accelerator
    use where present, the loaded model and its precision, the attached SAE and its layer, steering, the active
    profile, queue depth and running sequences. Cheap enough to poll every second."""
    lm = rt.worker.loaded
    return a.StatusOut(
        version=__version__, uptime_s=round(time.time() - rt.started_at, 3), status=rt.status,  # type: ignore[arg-type]
        loading=rt.models.loading, device=str(lm.device) if lm else None, memory=a.MemoryOut(**rt.memory()),
        host=a.HostOut(**asdict(rt.system.host())), gpus=[a.GpuOut(**asdict(g)) for g in rt.system.gpus()],
        model=model_out(rt), sae=sae_out(rt.saes.attached), steering=steering_out(rt),
        active_profile=rt.steering.state.profile, queue_depth=rt.worker.queue_depth,
        active_sequences=rt.worker.active_sequences, max_batch_size=rt.worker.max_batch_size,
        downloads=downloads_summary(rt),
    )


def downloads_summary(rt: Runtime) -> a.DownloadsSummaryOut:
    active = rt.jobs.list(active_only=True)
    return a.DownloadsSummaryOut(active=len(active), bytes_done=sum(j.bytes_done for j in active),
                                 bytes_total=sum(j.bytes_total for j in active),
                                 speed_bps=round(sum(j.speed_bps for j in active), 1))


# ---------------------------------------------------------------------------- models


@router.get("/api/models/loaded", operation_id="getLoadedModel", tags=["models"],
            response_model=a.LoadedModelOut | None)
async def loaded_model(rt: RuntimeDep) -> a.LoadedModelOut | None:
    """Get the loaded model.

    The served model (id, source, precision, parameters, context length, width, number of layers), or null when
    none is loaded."""
    return model_out(rt)


@router.post("/api/models/load", operation_id="loadModel", tags=["models"],
             response_model=a.ModelLoadOut, responses=HUB_ERRORS)
async def load_model(body: a.ModelLoadIn, rt: RuntimeDep) -> a.ModelLoadOut:
    """Load a model.

    Load or switch to a model: a local folder, `millm-demo`, or a Hub repo id (a repo not in the cache is pulled
    first). The previous model keeps serving until the new one is ready, and a failed load keeps it. A load the
    memory estimate says will not fit is refused with a 400 `insufficient_memory` whose `memory_estimate` gives the
    breakdown (weights, KV cache, SAE, overhead) against free memory; `force: true` loads anyway."""
    result = await rt.models.load(body.model, revision=body.revision, model_id=body.model_id, dtype=body.dtype,
                                  quantization=body.quantization, device=body.device, force=body.force,
                                  trust_remote_code=body.trust_remote_code)
    if result.sae_message is not None:
        await _clear_steering(rt)
    out = model_out(rt)
    assert out is not None
    estimate = (estimate_out(result.estimate, result.available_bytes)
                if result.estimate is not None and result.available_bytes is not None else None)
    return a.ModelLoadOut(model=out, sae_detached=result.sae_message, sae_attached=result.sae_attached,
                          memory_estimate=estimate)


@router.post("/api/models/unload", operation_id="unloadModel", tags=["models"], status_code=204, responses=ERRORS)
async def unload_model(rt: RuntimeDep) -> Response:
    """Unload the model.

    Free the model's memory; the attached SAE is detached and steering cleared. Requests get 503 until a model
    is loaded again."""
    await rt.models.unload()
    await _clear_steering(rt)
    return Response(status_code=204)


# ---------------------------------------------------------------------------- SAEs


@router.get("/api/saes/attached", operation_id="getAttachedSae", tags=["saes"], response_model=a.SaeStatusOut)
async def sae_status(rt: RuntimeDep) -> a.SaeStatusOut:
    """Get the attached SAE.

    The attached SAE (id, hook, layer, d_in, d_sae, architecture, source, labelled features, Neuronpedia id) or
    `attached: null`."""
    return a.SaeStatusOut(attached=sae_out(rt.saes.attached))


@router.post("/api/saes/attach", operation_id="attachSae", tags=["saes"],
             response_model=a.SaeStatusOut, responses=HUB_ERRORS)
async def attach_sae(body: a.SaeAttachIn, rt: RuntimeDep) -> a.SaeStatusOut:
    """Attach an SAE.

    Attach an SAE from a local folder or file, or a Hub reference `owner/repo[:path/in/repo]` (pulled into the
    cache first), at the layer in its config or at `layer`. Replaces an attached SAE; steering that does not fit
    the new SAE is cleared."""
    att = await rt.saes.attach(body.source, sae_id=body.sae_id, layer=body.layer, revision=body.revision,
                               hint={"format": body.format} if body.format else None)
    state = rt.steering.state
    if state.features and any(i >= att.sae.cfg.d_sae for i in state.features):
        await _clear_steering(rt)
    return a.SaeStatusOut(attached=sae_out(att))


@router.post("/api/saes/detach", operation_id="detachSae", tags=["saes"],
             response_model=a.SaeStatusOut, responses=ERRORS)
async def detach_sae(rt: RuntimeDep) -> a.SaeStatusOut:
    """Detach the SAE.

    Remove the SAE from the model: steering and monitoring stop, and server-wide steering is cleared."""
    await rt.saes.detach()
    await _clear_steering(rt)
    return a.SaeStatusOut(attached=None)


@router.get("/api/saes/attached/labels", operation_id="searchFeatureLabels", tags=["saes"],
            response_model=a.FeatureLabelsOut)
async def sae_labels(
    rt: RuntimeDep,
    q: Annotated[str | None, Query(max_length=200, description="Text to find in the labels, or a feature index.")]
    = None,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000, description="Return at most this many (default: all).")]
    = None,
) -> a.FeatureLabelsOut:
    """Search feature labels.

    The attached SAE's feature labels, by index; `q` keeps those whose label contains it (case-insensitive) or
    whose index it is, `limit` caps how many come back (`count` is the number that matched)."""
    att = rt.saes.attached
    labels = att.labels if att else {}
    imported = att.imported_labels if att else {}
    data = [a.FeatureLabel(index=i, label=str(v.get("label", "")), score=v.get("score"),
                           source="imported" if i in imported else "sae")
            for i, v in sorted(labels.items())]
    needle = (q or "").strip().casefold()
    if needle:
        # the feature whose index was typed first, then the labels containing the text, by index
        data = ([f for f in data if str(f.index) == needle]
                + [f for f in data if needle in f.label.casefold() and str(f.index) != needle])
    return a.FeatureLabelsOut(data=data[:limit] if limit else data, count=len(data))


LABEL_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"description": "The label file's JSON: a Neuronpedia explanation export (array "
                                                   "of records with index and description), or an index -> label "
                                                   "object.", "oneOf": [{"type": "array", "items": {"type": "object"}},
                                                                        {"type": "object"}]}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "A JSON, JSON Lines or CSV label file."}}}},
}}}


@router.post("/api/saes/attached/labels", operation_id="importFeatureLabels", tags=["saes"],
             response_model=a.LabelImportOut, responses=ERRORS, openapi_extra=LABEL_BODY)
async def import_labels(
    request: Request, rt: RuntimeDep,
    format: Literal["neuronpedia", "map", "csv"] | None = Query(
        None, description="Read the content as this format (default: detected)."),
    replace: bool = Query(False, description="Replace the labels imported before for this SAE instead of adding "
                                             "to them."),
) -> a.LabelImportOut:
    """Import feature labels for the attached SAE.

    Neuronpedia explanation exports (JSON or JSON Lines records with `index` and `description`), an
    `index -> label` JSON object, or a CSV with `index` and `label` columns; as the JSON body, or a file uploaded
    as multipart `file`. Labels are kept per SAE in the profile store (they come back on restart and re-attach)
    and show in monitor frames, receipts and label search. Labels for another SAE (an index past its d_sae, or
    another `d_sae` in the file) are a 400 naming `file`."""
    filename = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, StarletteUpload):
            raise InvalidRequest("upload the labels as the multipart field 'file'", param="file")
        raw, filename = await upload.read(), upload.filename
    else:
        raw = await request.body()
    parsed, att = await rt.saes.import_labels(raw, filename=filename, fmt=format, replace=replace)
    return a.LabelImportOut(sae=att.sae_id, format=parsed.format, read=len(parsed.labels),
                            imported=len(att.imported_labels), labelled_features=len(att.labels))


@router.delete("/api/saes/attached/labels", operation_id="deleteFeatureLabels", tags=["saes"],
               response_model=a.SaeStatusOut, responses=ERRORS)
async def delete_labels(rt: RuntimeDep) -> a.SaeStatusOut:
    """Delete the imported feature labels.

    Forget the labels imported for the attached SAE (the ones shipped with it stay)."""
    return a.SaeStatusOut(attached=sae_out(await rt.saes.clear_imported_labels()))


# ---------------------------------------------------------------------------- steering


@router.get("/api/steering", operation_id="getSteering", tags=["steering"], response_model=a.SteeringStateOut)
async def get_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    """Get the steering.

    Server-wide steering: on/off, mode, features with strengths and labels, and the profile it came from."""
    return steering_out(rt)


@router.put("/api/steering", operation_id="setSteering", tags=["steering"],
            response_model=a.SteeringStateOut, responses=ERRORS)
async def set_steering(body: a.SteeringSetIn, rt: RuntimeDep) -> a.SteeringStateOut:
    """Set the steering.

    Replace the server-wide steering (features, mode, normalisation). Applies to the next token of every request
    that brings no steering of its own; the active profile, if any, is no longer active."""
    indices = [f.index for f in body.features]
    if len(set(indices)) != len(indices):
        raise InvalidRequest("each feature index may appear once", param="features")
    rt.steering.set(features=[(f.index, f.strength) for f in body.features], mode=body.mode,
                    normalize=body.normalize, steer_special_tokens=body.steer_special_tokens, scale=body.scale)
    await _forget_active_profile(rt)
    return steering_out(rt)


@router.patch("/api/steering", operation_id="updateSteering", tags=["steering"],
              response_model=a.SteeringStateOut, responses=ERRORS)
async def patch_steering(body: a.SteeringPatchIn, rt: RuntimeDep) -> a.SteeringStateOut:
    """Update the steering.

    Change some features' strengths (`strength: null` removes one) or the mode, keeping the rest."""
    rt.steering.patch(features=[(f.index, f.strength) for f in body.features], mode=body.mode, scale=body.scale)
    await _forget_active_profile(rt)
    return steering_out(rt)


@router.delete("/api/steering", operation_id="clearSteering", tags=["steering"], response_model=a.SteeringStateOut)
async def clear_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    """Clear the steering.

    Remove every feature from the server-wide steering and deactivate the active profile."""
    await _clear_steering(rt)
    return steering_out(rt)


@router.post("/api/steering/enable", operation_id="enableSteering", tags=["steering"],
             response_model=a.SteeringStateOut)
async def enable_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    """Turn steering on.

    Apply the server-wide steering again (the features are kept while it is off)."""
    rt.steering.set_enabled(True)
    return steering_out(rt)


@router.post("/api/steering/disable", operation_id="disableSteering", tags=["steering"],
             response_model=a.SteeringStateOut)
async def disable_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    """Turn steering off.

    Stop applying the server-wide steering without forgetting its features."""
    rt.steering.set_enabled(False)
    return steering_out(rt)


async def _forget_active_profile(rt: Runtime) -> None:
    """The server-wide steering no longer comes from a profile: stop recording one as active
    (so it is neither shown as active nor restored at the next start)."""
    await asyncio.to_thread(rt.profiles.deactivate)


async def _clear_steering(rt: Runtime) -> None:
    rt.steering.clear()
    await _forget_active_profile(rt)
