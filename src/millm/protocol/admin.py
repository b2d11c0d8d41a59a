"""Wire shapes of the management API (/api/*): status, models, SAEs and steering."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from millm.protocol.openai import SteeringFeatureIn

from millm.protocol.hub import MemoryEstimateOut


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
    hook_name: str
    module: str
    layer: int
    d_in: int
    d_sae: int
    architecture: str
    dtype: str
    source_format: str
    repo_id: str | None = None
    path: str | None = None
    labelled_features: int = 0


class SaeStatusOut(BaseModel):
    attached: SaeOut | None


class FeatureLabel(BaseModel):
    index: int
    label: str
    score: float | None = None


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


class StatusOut(BaseModel):
    version: str
    uptime_s: float
    status: Literal["ok", "loading", "no_model"]
    loading: str | None = None
    device: str | None
    memory: MemoryOut
    model: LoadedModelOut | None
    sae: SaeOut | None
    steering: SteeringStateOut
    active_profile: str | None
    queue_depth: int
    active_sequences: int
    max_batch_size: int
