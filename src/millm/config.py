"""Server settings: one pydantic-settings class, read from MILLM_* environment variables.

`millm serve` generates one command-line flag per field, so the environment, the CLI
and `--help` all come from the field declarations below. Imports nothing from millm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda", "mps"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
Quantization = Literal["none", "8bit", "4bit"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MILLM_", extra="ignore", protected_namespaces=())

    model: str | None = Field(
        None,
        description="Model to load at start-up: a local directory or a Hub repo id. "
        "Empty: the bundled demo model (with its SAE attached).",
    )
    model_revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the model.")
    served_model_name: str | None = Field(
        None, description="Name the model is listed under in /v1/models (default: the model id)."
    )
    sae: str | None = Field(
        None,
        description="SAE to attach at start-up: a local folder or a Hub 'repo_id[:path]'. "
        "Ignored for the demo model, whose SAE is attached automatically.",
    )
    sae_layer: int | None = Field(None, description="Override the layer the start-up SAE is attached to.")
    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    data_dir: Path = Field(Path("data"), description="Where the profile database and job state live.")
    cache_dir: Path | None = Field(
        None, description="Hugging Face cache directory for models and SAEs (default: the huggingface_hub default)."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL for the profile store (default: sqlite in the data dir)."
    )
    device: Device = Field("auto", description="Device: auto (CUDA when present, else CPU), cpu, cuda or mps.")
    dtype: DType = Field("auto", description="Weights dtype: auto (bf16/fp16 on GPU, fp32 on CPU), float32, float16, bfloat16.")
    quantization: Quantization = Field("none", description="bitsandbytes quantization: none, 8bit or 4bit (nf4).")
    trust_remote_code: bool = Field(False, description="Allow model repos to run their own Python code.")
    max_context: int | None = Field(
        None, ge=16, description="Cap on the context length (default: the model's max_position_embeddings)."
    )
    queue_size: int = Field(64, ge=1, description="Requests that may wait for a batch slot before 429.")
    max_batch_size: int = Field(16, ge=1, description="Sequences decoded together in one batch.")
    cuda_graphs: bool = Field(
        False, description="Replay decode steps of Llama models from CUDA graphs over a static KV cache (CUDA only)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="Log format: text or json (one object per line).")
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"], description="Origins allowed by CORS (JSON list in the environment)."
    )
    steering_max_scale: float = Field(
        10.0, gt=0, description="Largest steering.scale (intensity dial) a request may ask for, unless a profile "
        "sets its own range.")
    restore_state: bool = Field(True, description="Restore the active profile at start-up.")
    force_load: bool = Field(False, description="Load models even when the memory estimate says they do not fit.")
