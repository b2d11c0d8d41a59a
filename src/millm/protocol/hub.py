"""Wire shapes of downloads (/api/downloads, /ws/downloads), the cache (/api/cache) and memory estimates.

Every repo is named by its Hub id, revision and the folder inside the repo; no shape here has a
field for a path on the server's disk.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# ---------------------------------------------------------------------------- downloads


class DownloadIn(_Strict):
    """A pull: a model by repo id, or an SAE by repo id (+ folder) or by SAELens release + sae_id."""

    kind: Literal["model", "sae"] = Field("model", description="What is pulled: a model or an SAE.")
    repo_id: str | None = Field(None, description="Hub repo id, 'namespace/name'.")
    revision: str | None = Field(None, description="Branch, tag or commit (default: main).")
    path: str | None = Field(None, description="SAE only: the folder (or file) inside the repo; none: the whole repo.")
    release: str | None = Field(None, description="SAE only: a SAELens release (needs sae_lens installed).")
    sae_id: str | None = Field(None, description="SAE only: the SAE id within the SAELens release.")
    trust_remote_code: bool = Field(False, description="Model only: the caller means to load it with its own Python "
                                                       "code; refused (403) unless the server allows remote code "
                                                       "(--trust-remote-code), so a download is not wasted.")

    @model_validator(mode="after")
    def _one_source(self) -> DownloadIn:
        if self.kind == "model":
            if self.path or self.release or self.sae_id:
                raise ValueError("path, release and sae_id are for SAE downloads (kind 'sae')")
            if not self.repo_id:
                raise ValueError("repo_id is required")
        elif self.release or self.sae_id:
            if not (self.release and self.sae_id):
                raise ValueError("give both release and sae_id")
            if self.repo_id or self.path:
                raise ValueError("give either repo_id (+ path) or release + sae_id, not both")
        elif not self.repo_id:
            raise ValueError("give repo_id (+ path) or release + sae_id")
        return self


class JobError(BaseModel):
    code: str | None
    message: str
    status: int
    type: str
    param: str | None = None


class JobOut(BaseModel):
    id: str
    kind: Literal["model", "sae"]
    repo_id: str
    name: str = Field(description="The repo name without its namespace.")
    revision: str
    path: str = Field(description="SAE folder inside the repo; '' for models and whole-repo SAEs.")
    state: Literal["queued", "running", "completed", "failed", "cancelled"]
    commit: str | None
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    progress: float = Field(description="bytes_done / bytes_total, 0..1 (1 when finished).")
    current_file: str | None = Field(description="Path inside the repo of the file being transferred.")
    speed_bps: float = Field(description="Transfer rate over the last few seconds, bytes per second (0 unless running).")
    eta_s: float | None = Field(description="Seconds left at that rate (null when not running or not moving).")
    error: JobError | None
    attempts: int
    created_at: datetime = Field(description="When the job was submitted (ISO 8601, UTC).")
    updated_at: datetime = Field(description="Its last change of state or progress (ISO 8601, UTC).")
    finished_at: datetime | None = Field(description="When it completed, failed or was cancelled.")


class JobList(BaseModel):
    data: list[JobOut]
    count: int


class DownloadEvent(BaseModel):
    """One SSE `data:` or WebSocket message. 'state' on every state change, 'progress' while bytes move."""

    type: Literal["state", "progress"]
    job: JobOut


# ---------------------------------------------------------------------------- cache


class CachedRevisionOut(BaseModel):
    commit: str
    refs: list[str]
    size_bytes: int
    files: int


class CachedRepoOut(BaseModel):
    repo_id: str
    name: str
    kind: Literal["model", "sae"]
    size_bytes: int
    nb_files: int
    refs: list[str]
    revisions: list[CachedRevisionOut]
    last_modified: datetime = Field(description="Newest file change in the repo's cache folder (ISO 8601, UTC).")
    last_used: datetime | None = Field(description="Last load or attach by miLLM, else the newest file access.")
    sae_paths: list[str] = Field(description="SAE folders present in the repo ('' = the repo root).")
    in_use: bool = Field(description="The loaded model or the attached SAE comes from this repo.")
    downloading: bool = Field(description="A download job for this repo is queued or running.")


class CacheList(BaseModel):
    data: list[CachedRepoOut]
    count: int
    size_bytes: int


class CacheDeleteOut(BaseModel):
    repo_id: str
    revision: str | None
    freed_bytes: int


# ---------------------------------------------------------------------------- memory estimates


class MemoryEstimateOut(BaseModel):
    """What a load needs (weights + KV cache + SAE + overhead) against free memory on the device."""

    params: int
    weights_bytes: int
    kv_cache_bytes: int
    sae_bytes: int
    overhead_bytes: int
    total_bytes: int
    dtype: str
    quantization: str
    context: int
    batch: int
    device: str
    available_bytes: int | None = Field(description="Free memory on the device; null when it is not on this machine.")
    device_present: bool = Field(True, description="Whether the device exists on this machine.")
    fits: bool | None = Field(description="Whether total_bytes <= available_bytes; null when the device is absent.")
    summary: str


class ModelEstimateOut(BaseModel):
    model: str = Field(description="The model as asked (a repo id or the name of a local folder).")
    source: Literal["local", "cache", "hub"] = Field(description="Where the parameter count was read.")
    estimate: MemoryEstimateOut


# ---------------------------------------------------------------------------- browsing a Hub repo's SAEs


class RepoSaeOut(BaseModel):
    """One SAE folder of a Hub repo, with what its path and (where the format has one) its config say."""

    path: str = Field(description="Folder inside the repo ('' = the repo root): the `path` of a download.")
    source: str = Field(description="`repo_id:path` (or the repo id for the root), ready for POST /api/saes/attach.")
    format: str = Field(description="gemma_scope, gemma_scope_2, saelens, sparsify, llama_scope, llama_scope_r1 or "
                                    "dictionary_learning.")
    layer: int | None = Field(description="The model layer it reads.")
    site: str | None = Field(description="Where in the layer: resid_post, resid_pre, mlp_out, attn_out, attn_z, "
                                         "transcoder, embedding, module.")
    hook_name: str | None = Field(description="The hook as the SAE names it, when known.")
    width: int | None = Field(description="Number of features (d_sae).")
    d_in: int | None = Field(description="Width of the activations it reads, when its config says.")
    l0: float | None = Field(description="Average number of active features per token (Gemma Scope's average_l0).")
    l0_label: str | None = Field(description="Gemma Scope 2's relative L0: small, medium or big.")
    architecture: str | None = Field(description="standard, jumprelu, topk or gated, when known.")
    neuronpedia_id: str | None = Field(description="Neuronpedia's id of the SAE, when its config names one.")
    size_bytes: int = Field(description="Bytes of its files on the Hub.")
    files: int
    cached: bool = Field(description="Already downloaded into the local cache.")


class RepoSaeList(BaseModel):
    repo_id: str
    revision: str
    commit: str = Field(description="The commit the revision resolved to.")
    data: list[RepoSaeOut] = Field(description="Sorted by site, layer, width and L0, ready to group.")
    count: int
    configs_read: int = Field(description="How many SAE configs were read for d_in, width, hook and Neuronpedia id.")


# ---------------------------------------------------------------------------- previewing a Hub model


class PrecisionEstimateOut(BaseModel):
    """What loading the model at one precision would take, against free memory on the server's device."""

    precision: Literal["fp32", "fp16", "bf16", "8-bit", "4-bit"] = Field(
        description="The precision as the load dialog names it.")
    dtype: str = Field(description="`dtype` of a load at this precision.")
    quantization: str = Field(description="`quantization` of a load at this precision.")
    weights_bytes: int
    kv_cache_bytes: int
    sae_bytes: int
    overhead_bytes: int
    total_bytes: int
    fits: bool | None = Field(description="Whether total_bytes <= available_bytes; null when the device is absent.")


class ModelPreviewOut(BaseModel):
    """A Hub model before downloading it: its card metadata and a memory estimate per precision."""

    repo_id: str
    revision: str = Field(description="The revision as asked (default main).")
    commit: str = Field(description="The commit it resolved to.")
    author: str | None
    downloads: int | None = Field(description="Downloads in the last 30 days, as the Hub counts them.")
    likes: int | None
    pipeline_tag: str | None = Field(description="The Hub's task, e.g. text-generation.")
    library_name: str | None
    model_type: str | None = Field(description="config.json's model_type, e.g. llama.")
    architectures: list[str] = Field(description="config.json's architectures, e.g. LlamaForCausalLM.")
    tags: list[str]
    license: str | None
    languages: list[str]
    gated: str | None = Field(description="null: open; `auto` or `manual`: accept its terms on the Hub and use a "
                                          "token that has been granted access.")
    private: bool
    needs_remote_code: bool = Field(description="Its config maps classes to the repo's own Python code (auto_map): "
                                                "loading it runs that code, and needs `trust_remote_code`.")
    trust_remote_code_allowed: bool = Field(description="Whether this server was started with --trust-remote-code.")
    last_modified: datetime | None
    files: int = Field(description="Files in the repo at this commit.")
    size_bytes: int = Field(description="Total size of the repo's files.")
    params: int | None = Field(description="Parameters, from the safetensors headers.")
    context: int | None = Field(description="Tokens of KV cache the estimates count (the model's, capped by the "
                                            "server's max context).")
    device: str = Field(description="The device estimated for (the server's).")
    available_bytes: int | None = Field(description="Free memory on the device; null when it is not on this machine.")
    estimates: list[PrecisionEstimateOut] = Field(description="One row per precision; empty when it cannot be "
                                                              "estimated (see estimate_error).")
    estimate_error: str | None = Field(description="Why there is no memory table (no safetensors, no config.json).")
