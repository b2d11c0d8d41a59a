"""Wire shapes of the management API (/api/*): status, models, SAEs and steering."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from millm.protocol.hub import MemoryEstimateOut
from millm.protocol.openai import SteeringFeatureIn


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# ---------------------------------------------------------------------------- models


class ModelLoadIn(_Strict):
    model: str = Field(description="Local folder, `millm-demo`, or Hub repo id `owner/name`.")
    revision: str | None = Field(None, description="Hub branch, tag or commit (default: main).")
    model_id: str | None = Field(None, description="Name to serve it under (default: the model argument).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = Field(
        None, description="Weights' precision (default: the server's --dtype; auto: the checkpoint's own).")
    quantization: Literal["none", "8bit", "4bit"] | None = Field(
        None, description="bitsandbytes 8-bit or 4-bit weights (CUDA only; default: the server's --quantization).")
    device: Literal["auto", "cpu", "cuda", "mps"] | None = Field(
        None, description="Where to load it (default: the server's --device).")
    force: bool = Field(False, description="Load even if the memory estimate says it will not fit.")


class LoadedModelOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: str
    source: str
    revision: str | None
    device: str
    dtype: str
    quantization: str
    parameters: int
    context_length: int
    d_model: int
    num_layers: int


class ModelLoadOut(BaseModel):
    model: LoadedModelOut
    sae_detached: str | None = Field(None, description="Why an attached SAE was detached, if it was.")
    sae_attached: str | None = Field(
        None, description="The SAE attached along with the model: the demo SAE when millm-demo is loaded by name."
    )
    memory_estimate: MemoryEstimateOut | None = Field(
        None, description="The estimate checked before loading (null when the weights have no safetensors headers)."
    )


# ---------------------------------------------------------------------------- SAEs


class SaeAttachIn(_Strict):
    source: str = Field(description="Local folder/file, or a Hub reference 'owner/repo[:path/in/repo]'.")
    revision: str | None = Field(None, description="Hub branch, tag or commit for a Hub reference (default: main).")
    sae_id: str | None = Field(None, description="Id to report the SAE under (default derived from the source).")
    layer: int | None = Field(None, ge=0, description="Attach at this layer instead of the one in its config.")
    format: str | None = Field(None, description="Force a loader (saelens, gemma_scope, sparsify, ...).")


class SaeOut(BaseModel):
    id: str
    hook_name: str = Field(description="The hook as its source names it (TransformerLens name or module path).")
    module: str = Field(description="The model's module the SAE reads and steers.")
    layer: int
    d_in: int
    d_sae: int = Field(description="Number of features; valid indices are 0 .. d_sae - 1.")
    architecture: str = Field(description="standard, jumprelu, topk or gated.")
    dtype: str
    source_format: str = Field(description="The format it was read from (saelens, gemma_scope, sparsify, ...).")
    repo_id: str | None = Field(None, description="Hub repo it came from (null: a local folder).")
    path: str | None = Field(None, description="Folder inside repo_id.")
    revision: str | None = Field(None, description="Hub revision of repo_id.")
    model_name: str | None = Field(None, description="The model its config says it was trained on.")
    labelled_features: int = Field(0, description="Features with a label (GET /api/saes/attached/labels).")
    neuronpedia_id: str | None = Field(
        None, description="Neuronpedia's id of this SAE, `<model>/<sae set>` (e.g. gemma-2-2b/20-gemmascope-res-16k), "
                          "when its config names one: feature i is at https://www.neuronpedia.org/<id>/<i>.")
    imported_labels: int = Field(0, description="Of those, labels imported for this SAE (kept across restarts).")


class SaeStatusOut(BaseModel):
    attached: SaeOut | None


class FeatureLabel(BaseModel):
    index: int
    label: str
    score: float | None = None
    source: Literal["sae", "imported"] | None = Field(
        None, description="sae: shipped with the SAE; imported: from POST /api/saes/attached/labels.")


class LabelImportOut(BaseModel):
    sae: str = Field(description="The SAE the labels were stored for.")
    format: Literal["neuronpedia", "map", "csv"] = Field(description="The format the file was read as.")
    read: int = Field(description="Labels read from this file.")
    imported: int = Field(description="Imported labels kept for this SAE now (across imports, unless replaced).")
    labelled_features: int = Field(description="Features with a label now, shipped or imported.")


class FeatureLabelsOut(BaseModel):
    data: list[FeatureLabel]
    count: int = Field(description="How many labels matched (data holds at most `limit` of them).")


# ---------------------------------------------------------------------------- steering


class SteeringFeatureOut(BaseModel):
    index: int
    strength: float
    label: str | None = None


class SteeringStateOut(BaseModel):
    enabled: bool
    mode: Literal["add", "clamp"]
    normalize: bool
    steer_special_tokens: bool
    features: list[SteeringFeatureOut]
    profile: str | None = Field(None, description="The active profile, when the steering came from one.")
    scale: float = Field(1.0, description="Intensity dial multiplying every strength (a request's steering.scale "
                         "overrides it).")


class SteeringSetIn(_Strict):
    features: list[SteeringFeatureIn] = Field(default_factory=list, description="Features and their strengths.")
    mode: Literal["add", "clamp"] = Field(
        "add", description="add: h += strength x decoder row; clamp: pin the feature's activation to strength.")
    normalize: bool = Field(False, description="Use unit-norm decoder rows for add (as Neuronpedia does).")
    steer_special_tokens: bool = Field(True, description="Also steer BOS and other special-token positions.")
    scale: float = Field(1.0, ge=0, allow_inf_nan=False, description="Intensity dial, 0 to MILLM_STEERING_MAX_SCALE.")


class SteeringFeaturePatch(_Strict):
    index: int = Field(ge=0, description="SAE feature index (0 <= index < d_sae).")
    strength: float | None = Field(description="New strength; null removes the feature.")

    @field_validator("strength")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("strength must be a finite number")
        return v


class SteeringPatchIn(_Strict):
    features: list[SteeringFeaturePatch] = Field(
        default_factory=list, description="Features to add, change (new strength) or remove (strength null).")
    mode: Literal["add", "clamp"] | None = Field(None, description="New mode; null keeps the current one.")
    scale: float | None = Field(None, ge=0, allow_inf_nan=False, description="Intensity dial.")


# ---------------------------------------------------------------------------- status


class MemoryOut(BaseModel):
    device: str
    used_bytes: int
    total_bytes: int


class HostOut(BaseModel):
    cpu_percent: float = Field(description="Whole-machine CPU use since the previous status request, 0..100.")
    cpu_count: int
    ram_used_bytes: int
    ram_total_bytes: int
    process_rss_bytes: int = Field(description="Resident memory of the miLLM process.")
    process_cpu_percent: float = Field(description="CPU use of the miLLM process (100 = one core).")


class GpuOut(BaseModel):
    index: int
    name: str
    utilization_percent: float | None = Field(description="GPU busy time, 0..100 (null without NVML).")
    memory_used_bytes: int | None = Field(
        description="Used memory on the device (null without NVML, on a device miLLM does not use).")
    memory_total_bytes: int


class DownloadsSummaryOut(BaseModel):
    active: int = Field(description="Download jobs queued or running.")
    bytes_done: int = Field(description="Bytes transferred by the active jobs.")
    bytes_total: int = Field(description="Bytes the active jobs fetch in all.")
    speed_bps: float = Field(description="Their transfer rate together, bytes per second.")


class HealthOut(BaseModel):
    status: Literal["ok", "loading", "no_model"] = Field(
        description="ok (200) when a model is serving; otherwise (503) loading or no_model.")
    error: str | None = Field(None, exclude_if=lambda v: v is None, description="Why start-up failed, when it did.")


class StatusOut(BaseModel):
    version: str
    uptime_s: float
    status: Literal["ok", "loading", "no_model"] = Field(
        description="ok: serving; loading: a model is being loaded (the previous one may still serve); "
                    "no_model: nothing to serve.")
    loading: str | None = Field(None, description="The model being loaded, while one is.")
    device: str | None
    memory: MemoryOut = Field(description="Memory of the model's device (the GPU's, else RAM).")
    host: HostOut
    gpus: list[GpuOut] = Field(description="CUDA devices (empty without CUDA).")
    model: LoadedModelOut | None
    sae: SaeOut | None
    steering: SteeringStateOut
    active_profile: str | None
    queue_depth: int = Field(description="Requests waiting for a batch slot.")
    active_sequences: int = Field(description="Sequences being decoded now.")
    max_batch_size: int
    downloads: DownloadsSummaryOut
