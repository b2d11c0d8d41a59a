"""A Hub model before it is downloaded: its card metadata and what it would take in memory at each precision.

`preview_model` asks the Hub three things, nothing of it lands in the model cache: the model info (downloads,
likes, pipeline tag, tags, license, gated, the `config` summary with model_type/architectures/auto_map, file
sizes), the safetensors headers (ranged reads, for a parameter count that splits quantizable layers from the
rest) and `config.json` (context length and KV-cache shape), fetched into a scratch folder. From those it builds
one memory estimate per precision a load can use (`PRECISIONS`). A repo without safetensors weights or without a
config.json still gets its metadata: the table is empty and `estimate_error` says why.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Any

from millm.errors import MillmError, NotFound
from millm.hub.memory import MemoryEstimate, count_remote_parameters, estimate_memory, max_context
from millm.hub.remote import HubClient, translate_hub_error
from millm.placement import resolve_placement

# (label, dtype, quantization): every precision `POST /api/models/load` accepts, widest first.
PRECISIONS: tuple[tuple[str, str, str], ...] = (
    ("fp32", "float32", "none"),
    ("fp16", "float16", "none"),
    ("bf16", "bfloat16", "none"),
    ("8-bit", "auto", "8bit"),
    ("4-bit", "auto", "4bit"),
)
MAX_TAGS = 200


@dataclass(frozen=True)
class ModelPreview:
    repo_id: str
    revision: str
    commit: str
    author: str | None
    downloads: int | None
    likes: int | None
    pipeline_tag: str | None
    library_name: str | None
    model_type: str | None
    architectures: list[str]
    tags: list[str]
    license: str | None
    languages: list[str]
    gated: str | None  # None (open), "auto" or "manual"
    private: bool
    needs_remote_code: bool  # config.json maps auto classes to the repo's own Python files (auto_map)
    last_modified: str | None
    files: int
    size_bytes: int
    params: int | None
    context: int | None
    estimates: list[tuple[str, MemoryEstimate]] = field(default_factory=list)
    estimate_error: str | None = None


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if v is not None][:MAX_TAGS]


def _card_value(card: Any, key: str) -> Any:
    if card is None:
        return None
    if isinstance(card, dict):
        return card.get(key)
    return getattr(card, key, None)


def preview_model(
    client: HubClient,
    repo_id: str,
    revision: str | None = None,
    *,
    device: str = "cpu",
    max_context_cap: int | None = None,
    sae_numel: int = 0,
) -> ModelPreview:
    """The Hub's description of `repo_id` and a memory estimate per precision on `device`, counting an attached
    SAE of `sae_numel` values cast to each precision's compute dtype. Blocking."""
    rev = revision or "main"
    try:
        info = client.api.model_info(repo_id, revision=rev, files_metadata=True, token=client.token)
    except Exception as exc:  # noqa: BLE001 - every Hub failure is translated
        raise translate_hub_error(exc, repo_id=repo_id, revision=rev, endpoint=client.endpoint) from exc
    commit = info.sha or rev
    hub_config: dict[str, Any] = info.config if isinstance(info.config, dict) else {}
    siblings = info.siblings or []
    sizes = {s.rfilename: s.size or 0 for s in siblings}

    config: dict[str, Any] | None = None
    if "config.json" in sizes:
        with tempfile.TemporaryDirectory(prefix="millm-preview-") as scratch:
            config = client.read_json(repo_id, commit, "config.json", scratch=scratch)
    merged = {**hub_config, **(config or {})}

    estimates: list[tuple[str, MemoryEstimate]] = []
    error: str | None = None
    params: int | None = None
    context: int | None = None
    if config is None:
        error = "The repo has no readable config.json, so its memory cannot be estimated."
    else:
        try:
            count = count_remote_parameters(repo_id, commit, endpoint=client.endpoint, token=client.token)
            params = count.total
            model_ctx = max_context(config)
            context = min(model_ctx, max_context_cap) if model_ctx and max_context_cap else model_ctx or max_context_cap
            for label, dtype, quantization in PRECISIONS:
                placement = resolve_placement(device, dtype, quantization)
                sae_bytes = int(sae_numel * placement.bytes_per_value)
                estimates.append((label, estimate_memory(params=count, config=config, placement=placement,
                                                         context=context, sae_bytes=sae_bytes)))
        except NotFound as exc:
            error = exc.message
        except MillmError as exc:
            if exc.status >= 500:
                raise
            error = exc.message

    card = info.card_data
    gated = info.gated if isinstance(info.gated, str) else None
    return ModelPreview(
        repo_id=info.id or repo_id, revision=rev, commit=commit, author=info.author,
        downloads=info.downloads, likes=info.likes, pipeline_tag=info.pipeline_tag, library_name=info.library_name,
        model_type=merged.get("model_type") if isinstance(merged.get("model_type"), str) else None,
        architectures=_list(merged.get("architectures")), tags=_list(info.tags),
        license=_card_value(card, "license") if isinstance(_card_value(card, "license"), str) else None,
        languages=_list(_card_value(card, "language")), gated=gated, private=bool(info.private),
        needs_remote_code=bool(merged.get("auto_map")),
        last_modified=info.last_modified.isoformat() if info.last_modified else None,
        files=len(siblings), size_bytes=sum(sizes.values()), params=params, context=context,
        estimates=estimates, estimate_error=error,
    )  # fmt: skip
