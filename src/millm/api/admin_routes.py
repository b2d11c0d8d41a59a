"""/api/status, /api/models, /api/saes and /api/steering; /health and /metrics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import UploadFile as StarletteUpload

from millm.api.state import RuntimeDep
from millm.errors import InvalidRequest
from millm.protocol import admin as a
from millm.protocol.openai import ErrorResponse
from millm.services.hub import estimate_out
from millm.services.load_options import LoadOptions

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 409, 503)}
# Loads and attaches may pull from the Hub first: its refusals and failures pass through (401, 403, 502).
HUB_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, **{code: {"model": ErrorResponse} for code in (401, 403, 502)}}


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
    return Response(rt.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/status", operation_id="getStatus", tags=["operations"], response_model=a.StatusOut)
async def status(rt: RuntimeDep) -> a.StatusOut:
    """Server status.

    Everything a dashboard shows at a glance: version and uptime, serving state, host CPU and RAM, accelerator
    use where present, the loaded model and its precision, the attached SAE and its layer, steering, the active
    profile, queue depth and running sequences. Cheap enough to poll every second."""
    return rt.views.status()


# ---------------------------------------------------------------------------- models


@router.get("/api/models/loaded", operation_id="getLoadedModel", tags=["models"],
            response_model=a.LoadedModelOut | None)
async def loaded_model(rt: RuntimeDep) -> a.LoadedModelOut | None:
    """Get the loaded model.

    The served model (id, source, precision, parameters, context length, width, number of layers), or null when
    none is loaded."""
    return rt.views.model()


@router.post("/api/models/load", operation_id="loadModel", tags=["models"],
             response_model=a.ModelLoadOut, responses=HUB_ERRORS)
async def load_model(body: a.ModelLoadIn, rt: RuntimeDep) -> a.ModelLoadOut:
    """Load a model.

    Load or switch to a model: a local folder, `millm-demo`, or a Hub repo id (a repo not in the cache is pulled
    first). The previous model keeps serving until the new one is ready, and a failed load keeps it. A load the
    memory estimate says will not fit is refused with a 400 `insufficient_memory` whose `memory_estimate` gives the
    breakdown (weights, KV cache, SAE, overhead) against free memory; `force: true` loads anyway."""
    options = LoadOptions(revision=body.revision, model_id=body.model_id, dtype=body.dtype,
                          quantization=body.quantization, device=body.device,
                          trust_remote_code=body.trust_remote_code)
    result = await rt.control.load_model(body.model, options=options, force=body.force)
    out = rt.views.model()
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
    await rt.control.unload_model()
    return Response(status_code=204)


# ---------------------------------------------------------------------------- SAEs


@router.get("/api/saes/attached", operation_id="getAttachedSae", tags=["saes"], response_model=a.SaeStatusOut)
async def sae_status(rt: RuntimeDep) -> a.SaeStatusOut:
    """Get the attached SAE.

    The attached SAE (id, hook, layer, d_in, d_sae, architecture, source, labelled features, Neuronpedia id) or
    `attached: null`."""
    return a.SaeStatusOut(attached=rt.views.sae())


@router.post("/api/saes/attach", operation_id="attachSae", tags=["saes"],
             response_model=a.SaeStatusOut, responses=HUB_ERRORS)
async def attach_sae(body: a.SaeAttachIn, rt: RuntimeDep) -> a.SaeStatusOut:
    """Attach an SAE.

    Attach an SAE from a local folder or file, or a Hub reference `owner/repo[:path/in/repo]` (pulled into the
    cache first), at the layer in its config or at `layer`. Replaces an attached SAE; steering that does not fit
    the new SAE is cleared."""
    await rt.control.attach_sae(body.source, sae_id=body.sae_id, layer=body.layer, revision=body.revision,
                                format=body.format)
    return a.SaeStatusOut(attached=rt.views.sae())


@router.post("/api/saes/detach", operation_id="detachSae", tags=["saes"],
             response_model=a.SaeStatusOut, responses=ERRORS)
async def detach_sae(rt: RuntimeDep) -> a.SaeStatusOut:
    """Detach the SAE.

    Remove the SAE from the model: steering and monitoring stop, and server-wide steering is cleared."""
    await rt.control.detach_sae()
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
    return rt.saes.search_labels(q, limit)


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
    await rt.saes.clear_imported_labels()
    return a.SaeStatusOut(attached=rt.views.sae())


# ---------------------------------------------------------------------------- steering


@router.get("/api/steering", operation_id="getSteering", tags=["steering"], response_model=a.SteeringStateOut)
async def get_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    """Get the steering.

    Server-wide steering: on/off, mode, features with strengths and labels, and the profile it came from."""
    return rt.views.steering_state()


@router.put("/api/steering", operation_id="setSteering", tags=["steering"],
            response_model=a.SteeringStateOut, responses=ERRORS)
async def set_steering(body: a.SteeringSetIn, rt: RuntimeDep) -> a.SteeringStateOut:
    """Set the steering.

    Replace the server-wide steering (features, mode, normalisation). Applies to the next token of every request
    that brings no steering of its own; the active profile, if any, is no longer active."""
    await rt.control.set_steering(features=[(f.index, f.strength) for f in body.features], mode=body.mode,
                                  normalize=body.normalize, steer_special_tokens=body.steer_special_tokens,
                                  scale=body.scale)
    return rt.views.steering_state()


@router.patch("/api/steering", operation_id="updateSteering", tags=["steering"],
              response_model=a.SteeringStateOut, responses=ERRORS)
async def patch_steering(body: a.SteeringPatchIn, rt: RuntimeDep) -> a.SteeringStateOut:
    """Update the steering.

    Change some features' strengths (`strength: null` removes one) or the mode, keeping the rest."""
    await rt.control.patch_steering(features=[(f.index, f.strength) for f in body.features], mode=body.mode,
                                    scale=body.scale)
    return rt.views.steering_state()


@router.delete("/api/steering", operation_id="clearSteering", tags=["steering"], response_model=a.SteeringStateOut)
async def clear_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    """Clear the steering.

    Remove every feature from the server-wide steering and deactivate the active profile."""
    await rt.control.clear_steering()
    return rt.views.steering_state()


@router.post("/api/steering/enable", operation_id="enableSteering", tags=["steering"],
             response_model=a.SteeringStateOut)
async def enable_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    """Turn steering on.

    Apply the server-wide steering again (the features are kept while it is off)."""
    rt.control.set_steering_enabled(True)
    return rt.views.steering_state()


@router.post("/api/steering/disable", operation_id="disableSteering", tags=["steering"],
             response_model=a.SteeringStateOut)
async def disable_steering(rt: RuntimeDep) -> a.SteeringStateOut:
    """Turn steering off.

    Stop applying the server-wide steering without forgetting its features."""
    rt.control.set_steering_enabled(False)
    return rt.views.steering_state()
