"""/api/status, /api/models, /api/saes and /api/steering; /health and /metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
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

router = APIRouter(tags=["admin"])
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
        labelled_features=len(att.labels),
    )


def steering_out(rt: Runtime) -> a.SteeringStateOut:
    s = rt.steering.state
    return a.SteeringStateOut(
        enabled=s.enabled, mode=s.mode, normalize=s.normalize, steer_special_tokens=s.steer_special_tokens,
        features=[a.SteeringFeatureOut(index=i, strength=v, label=s.labels.get(i) or rt.monitor.labels.get(i))
                  for i, v in sorted(s.features.items())],
        profile=s.profile,
    )


# ---------------------------------------------------------------------------- health, metrics, status


@router.get("/health", responses={503: {"model": ErrorResponse}})
async def health(rt: RuntimeDep) -> Any:
    status = "draining" if rt.draining else rt.status
    if status != "ok":
        return JSONResponse({"status": status, "error": rt.boot_error}, status_code=503, headers={"Retry-After": "5"})
    return {"status": "ok"}


@router.get("/metrics", response_class=Response, responses={200: {
    "description": "Prometheus text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(rt: RuntimeDep) -> Response:
    rt.metrics.queue_depth.set(rt.worker.queue_depth)
    rt.metrics.active_sequences.set(rt.worker.active_sequences)
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/status", response_model=a.StatusOut)
async def status(rt: RuntimeDep) -> a.StatusOut:
    lm = rt.worker.loaded
    return a.StatusOut(
        version=__version__, uptime_s=round(time.time() - rt.started_at, 3), status=rt.status,  # type: ignore[arg-type]
        loading=rt.models.loading, device=str(lm.device) if lm else None, memory=a.MemoryOut(**rt.memory()),
        model=model_out(rt), sae=sae_out(rt.saes.attached), steering=steering_out(rt),
        active_profile=rt.steering.state.profile, queue_depth=rt.worker.queue_depth,
        active_sequences=rt.worker.active_sequences, max_batch_size=rt.worker.max_batch_size,
    )


# ---------------------------------------------------------------------------- models


@router.get("/api/models/loaded", response_model=a.LoadedModelOut | None)
async def loaded_model(rt: RuntimeDep) -> a.LoadedModelOut | None:
    return model_out(rt)


@router.post("/api/models/load", response_model=a.ModelLoadOut, responses=HUB_ERRORS)
async def load_model(body: a.ModelLoadIn, rt: RuntimeDep) -> a.ModelLoadOut:
    """Load or switch to a model (local folder or Hub repo id; a repo not in the cache is pulled first).

    The previous model keeps serving until the new one is ready; a failed load keeps it."""
    result = await rt.models.load(body.model, revision=body.revision, model_id=body.model_id, dtype=body.dtype,
                                  quantization=body.quantization, device=body.device, force=body.force)
    if result.sae_message is not None:
        await _clear_steering(rt)
    out = model_out(rt)
    assert out is not None
    estimate = (estimate_out(result.estimate, result.available_bytes)
                if result.estimate is not None and result.available_bytes is not None else None)
    return a.ModelLoadOut(model=out, sae_detached=result.sae_message, memory_estimate=estimate)


@router.post("/api/models/unload", status_code=204, responses=ERRORS)
async def unload_model(rt: RuntimeDep) -> Response:
    await rt.models.unload()
    await _clear_steering(rt)
    return Response(status_code=204)


# ---------------------------------------------------------------------------- SAEs


@router.get("/api/saes/attached", response_model=a.SaeStatusOut)
async def sae_status(rt: RuntimeDep) -> a.SaeStatusOut:
    return a.SaeStatusOut(attached=sae_out(rt.saes.attached))


@router.post("/api/saes/attach", response_model=a.SaeStatusOut, responses=HUB_ERRORS)
async def attach_sae(body: a.SaeAttachIn, rt: RuntimeDep) -> a.SaeStatusOut:
    att = await rt.saes.attach(body.source, sae_id=body.sae_id, layer=body.layer, revision=body.revision,
                               hint={"format": body.format} if body.format else None)
    state = rt.steering.state
    if state.features and any(i >= att.sae.cfg.d_sae for i in state.features):
        await _clear_steering(rt)
    return a.SaeStatusOut(attached=sae_out(att))


@router.post("/api/saes/detach", response_model=a.SaeStatusOut, responses=ERRORS)
async def detach_sae(rt: RuntimeDep) -> a.SaeStatusOut:
    await rt.saes.detach()
    await _clear_steering(rt)
    return a.SaeStatusOut(attached=None)


@router.get("/api/saes/attached/labels", response_model=a.FeatureLabelsOut)
async def sae_labels(rt: RuntimeDep) -> a.FeatureLabelsOut:
    att = rt.saes.attached
    labels = att.labels if att else {}
    data = [a.FeatureLabel(index=i, label=str(v.get("label", "")), score=v.get("score"))
            for i, v in sorted(labels.items())]
    return a.FeatureLabelsOut(data=data, count=len(data))


# ---------------------------------------------------------------------------- steering


@router.get("/api/steering", response_model=a.SteeringStateOut)
async def get_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    return steering_out(rt)


@router.put("/api/steering", response_model=a.SteeringStateOut, responses=ERRORS)
async def set_steering(body: a.SteeringSetIn, rt: RuntimeDep) -> a.SteeringStateOut:
    indices = [f.index for f in body.features]
    if len(set(indices)) != len(indices):
        raise InvalidRequest("each feature index may appear once", param="features")
    rt.steering.set(features=[(f.index, f.strength) for f in body.features], mode=body.mode,
                    normalize=body.normalize, steer_special_tokens=body.steer_special_tokens)
    await _forget_active_profile(rt)
    return steering_out(rt)


@router.patch("/api/steering", response_model=a.SteeringStateOut, responses=ERRORS)
async def patch_steering(body: a.SteeringPatchIn, rt: RuntimeDep) -> a.SteeringStateOut:
    rt.steering.patch(features=[(f.index, f.strength) for f in body.features], mode=body.mode)
    await _forget_active_profile(rt)
    return steering_out(rt)


@router.delete("/api/steering", response_model=a.SteeringStateOut)
async def clear_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    await _clear_steering(rt)
    return steering_out(rt)


@router.post("/api/steering/enable", response_model=a.SteeringStateOut)
async def enable_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    rt.steering.set_enabled(True)
    return steering_out(rt)


@router.post("/api/steering/disable", response_model=a.SteeringStateOut)
async def disable_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    rt.steering.set_enabled(False)
    return steering_out(rt)


async def _forget_active_profile(rt: Runtime) -> None:
    """The server-wide steering no longer comes from a profile: stop recording one as active
    (so it is neither shown as active nor restored at the next start)."""
    await asyncio.to_thread(rt.profiles.deactivate)


async def _clear_steering(rt: Runtime) -> None:
    rt.steering.clear()
    await _forget_active_profile(rt)
