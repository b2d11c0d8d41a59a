"""Server settings: one pydantic-settings class, read from MILLM_* environment variables.

`millm serve` generates one command-line flag per field, so the environment, the CLI
and `--help` all come from the field declarations below. Imports nothing from millm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda", "mps"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
Quantization = Literal["none", "8bit", "4bit"]
LEGACY_DATA_DIR = Path("data")  # before 0.2: ./data, relative to wherever the server was started
LEGACY_MARKERS = ("millm.db", "jobs", "hub")


def platform_data_dir() -> Path:
    """The platform's place for miLLM's data: ~/.local/share/millm (Linux, or $XDG_DATA_HOME/millm),
    ~/Library/Application Support/millm (macOS), %LOCALAPPDATA%\\millm (Windows)."""
    return platformdirs.user_data_path("millm", appauthor=False)


def default_data_dir() -> Path:
    """./data when a miLLM data folder is already there (older versions kept it there), else the platform's place."""
    if any((LEGACY_DATA_DIR / marker).exists() for marker in LEGACY_MARKERS):
        return LEGACY_DATA_DIR
    return platform_data_dir()


def data_dir_origin(settings: "Settings") -> str:
    """Why `settings.data_dir` is what it is, for the start-up log."""
    if "data_dir" in settings.model_fields_set:
        return "set by MILLM_DATA_DIR or --data-dir"
    if settings.data_dir == LEGACY_DATA_DIR:
        return "the ./data folder of an earlier version, found in the working directory"
    return "the platform's data folder"


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
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the profile database, download jobs and cache index live (default: the platform's data "
        "folder, e.g. ~/.local/share/millm; ./data if an earlier version left one there).",
    )
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
    stream_hold_ms: float = Field(
        10.0, ge=0, description="Longest a streamed token may wait to share a socket write with the stream's next "
        "ones, when writing each at once would take over 5% of the generation thread's time (small models, many "
        "streams); 0 writes every token as soon as its step ends.")
    cuda_graphs: bool = Field(
        False, description="Replay decode steps of Llama models from CUDA graphs over a static KV cache (CUDA only)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="Log format: text or json (one object per line).")
    access_log: bool = Field(
        True, description="Log one access record per HTTP request (logger millm.access); --no-access-log turns "
        "them off, as uvicorn's --no-access-log does.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS (JSON list in the environment; '*' for any). Empty: the UI's own "
        "origin and http(s)://localhost, 127.0.0.1 and [::1] on any port.",
    )
    steering_max_scale: float = Field(
        10.0, gt=0, description="Largest steering.scale (intensity dial) a request may ask for, unless a profile "
        "sets its own range.")
    steering_evidence: bool = Field(
        False, description="Measure steered features before and after the intervention for every steered request "
        "(else only for requests with steering.evidence: true); see docs/benchmarks.md for its cost.")
    restore_state: bool = Field(True, description="Restore the active profile at start-up.")
    force_load: bool = Field(False, description="Load models even when the memory estimate says they do not fit.")
    ui_dir: Path | None = Field(
        None, description="Folder of the built web UI served at / (default: the copy packaged with miLLM)."
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes; larger ones get a 413."
    )
    api_key: str | None = Field(
        None, description="Require this key on /v1, /api and the WebSockets (Authorization: Bearer <key>, or "
        "?api_key=<key> on WebSockets). /health and the web UI stay open. Empty: no key."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values accepted (DNS-rebinding guard; '*' for any, '*.example.com' for a "
        "domain). Empty: localhost, 127.0.0.1, ::1 and the bind address.",
    )
    allowed_paths: list[Path] = Field(
        default_factory=list,
        description="Local folders the API may load models and SAEs from, besides the Hugging Face cache, the "
        "data dir, the bundled demo and the start-up model's and SAE's own folders.",
    )
    shutdown_timeout: float = Field(
        30.0, ge=0, description="Seconds running requests may take to finish after SIGTERM before they are ended."
    )
    exit_on_load_failure: bool = Field(
        False, description="Exit at start-up when the configured model or SAE cannot be loaded, instead of "
        "serving without a model (for scripted use)."
    )
