"""Memory estimate before loading a model, and the check that refuses loads that won't fit.

    total = weights + KV cache + SAE + overhead

- weights: parameter count from safetensors headers (local files, or ranged reads of the
  headers on the Hub) x bytes per parameter: fp32 4, fp16/bf16 2. With bitsandbytes only
  the 2-D Linear weights are quantized (8bit 1 byte, 4bit 0.5 byte); embeddings, lm_head,
  norms and biases stay in the 2-byte compute dtype.
- KV cache: 2 (K and V) x layers x kv_heads x head_dim x context x bytes x batch, from
  config.json (``text_config`` is used for multimodal configs). Sliding-window layers are
  counted at full context, so this is an upper bound.
- SAE: the bytes of its tensors (safetensors headers or .npz array headers).
- overhead: `OVERHEAD_FRACTION` of the weights for activations and allocator slack, plus
  `CUDA_CONTEXT_BYTES` on CUDA.

Every estimate is for a `millm.placement.Placement` (device, dtype and quantization with "auto"
already resolved, by the rules the loader uses). Free memory is `millm.placement.free_bytes`.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from millm.errors import InsufficientMemory, InvalidRequest, ModelLoadError, NotFound
from millm.hub.files import select_weight_files
from millm.placement import DTYPE_BYTES, QUANT_BYTES, Placement, free_bytes

GIB = 1024**3
OVERHEAD_FRACTION = 0.10
CUDA_CONTEXT_BYTES = 512 * 1024**2
_SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
_NOT_QUANTIZED = ("embed", "lm_head", "wte", "wpe", "norm", "shared")


# ---------------------------------------------------------------------------- parameter counts
@dataclass(frozen=True)
class ParamCount:
    total: int
    quantizable: int  # weights of Linear layers bitsandbytes would quantize
    stored_bytes: int  # bytes of the tensors as stored
    by_dtype: Mapping[str, int] = field(default_factory=dict)

    @property
    def not_quantizable(self) -> int:
        return self.total - self.quantizable


def _is_quantizable(name: str, shape: list[int]) -> bool:
    return len(shape) == 2 and name.endswith(".weight") and not any(k in name.lower() for k in _NOT_QUANTIZED)


def count_from_headers(headers: Iterable[Mapping[str, Any]]) -> ParamCount:
    """Count parameters in parsed safetensors headers ({name: {dtype, shape, ...}} each)."""
    total = quantizable = stored = 0
    by_dtype: dict[str, int] = {}
    for header in headers:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            numel = int(np.prod(info["shape"], dtype=np.int64)) if info["shape"] else 1
            total += numel
            stored += numel * _SAFETENSORS_DTYPE_BYTES.get(info["dtype"], 4)
            by_dtype[info["dtype"]] = by_dtype.get(info["dtype"], 0) + numel
            if _is_quantizable(name, list(info["shape"])):
                quantizable += numel
    return ParamCount(total=total, quantizable=quantizable, stored_bytes=stored, by_dtype=by_dtype)


MAX_SAFETENSORS_HEADER = 100_000_000


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a local safetensors file, without reading its tensors."""
    name = Path(path).name
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ModelLoadError(f"'{name}' is not a safetensors file: it is corrupt or truncated", param="model")
        (size,) = struct.unpack("<Q", raw)
        # A corrupt length must not become a read of that many bytes: the header is in the file, and the format
        # caps it at 100 MB.
        if size > min(MAX_SAFETENSORS_HEADER, os.fstat(f.fileno()).st_size - 8):
            raise ModelLoadError(f"'{name}' is not a valid safetensors file: its header length ({size} bytes) "
                                 "is larger than the file; the file is corrupt or truncated", param="model")
        try:
            header = json.loads(f.read(size))
        except (ValueError, RecursionError):
            header = None
    if not isinstance(header, dict):
        raise ModelLoadError(f"'{name}' has a malformed safetensors header: the file is corrupt or truncated",
                             param="model")
    return header


def read_config(folder: Path) -> dict[str, Any]:
    """A model folder's config.json; a file that is not a JSON object is a ModelLoadError naming `model`."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        config = None
    if not isinstance(config, dict):
        raise ModelLoadError("the model's config.json is not a valid JSON object", param="model")
    return config


def _weight_files(folder: Path) -> list[Path]:
    names = [p.name for p in folder.iterdir() if p.is_file()]
    files = [folder / n for n in select_weight_files(names) if n.endswith(".safetensors")]
    if not files:
        raise NotFound(f"No safetensors weights in '{folder.name}'; cannot count parameters.", param="model")
    return files


def count_local_parameters(folder: str | Path) -> ParamCount:
    """Parameters of the safetensors weights in a model folder (e.g. a cache snapshot)."""
    return count_from_headers(read_safetensors_header(p) for p in _weight_files(Path(folder)))


def count_remote_parameters(
    repo_id: str, revision: str | None = None, *, endpoint: str | None = None, token: str | bool | None = None
) -> ParamCount:
    """Parameters of a Hub repo from its safetensors headers (ranged reads, nothing cached)."""
    from millm.hub.remote import HubClient, translate_hub_error

    client = HubClient(endpoint=endpoint, token=token)
    try:
        info = client.api.model_info(repo_id, revision=revision, token=token)
        names = [s.rfilename for s in info.siblings or []]
        files = [n for n in select_weight_files(names) if n.endswith(".safetensors")]
        if not files:
            raise NotFound(f"'{repo_id}' has no safetensors weights; cannot count parameters.", param="repo_id")
        headers = []
        for name in files:
            meta = client.api.parse_safetensors_file_metadata(repo_id, name, revision=info.sha or revision, token=token)
            headers.append({t: {"dtype": i.dtype, "shape": i.shape} for t, i in meta.tensors.items()})
    except NotFound:
        raise
    except Exception as exc:  # noqa: BLE001 - every Hub failure is translated
        raise translate_hub_error(exc, repo_id=repo_id, revision=revision, endpoint=client.endpoint) from exc
    return count_from_headers(headers)


# ---------------------------------------------------------------------------- SAE size
def sae_size_bytes(folder: str | Path, dtype: str | None = None) -> int:
    """Bytes of an SAE's tensors (stored dtype, or `dtype` if given) from file headers only."""
    per = DTYPE_BYTES.get(dtype) if dtype else None
    total = 0
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix == ".safetensors":
            for name, info in read_safetensors_header(path).items():
                if name == "__metadata__":
                    continue
                numel = int(np.prod(info["shape"], dtype=np.int64)) if info["shape"] else 1
                total += int(numel * (per or _SAFETENSORS_DTYPE_BYTES.get(info["dtype"], 4)))
        elif path.suffix == ".npz":
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    with archive.open(member) as f:
                        major, _minor = np.lib.format.read_magic(f)
                        fmt = np.lib.format
                        read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
                        shape, _, arr_dtype = read(f)  # header only
                    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
                    total += int(numel * (per or arr_dtype.itemsize))
    return total


# ---------------------------------------------------------------------------- estimate
def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = config.get("text_config")
    return inner if isinstance(inner, Mapping) else config


def _first(config: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return None


def max_context(config: Mapping[str, Any]) -> int | None:
    value = _first(_text_config(config), "max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
    return int(value) if value is not None else None


def kv_cache_bytes(config: Mapping[str, Any], *, context: int, batch: int = 1, bytes_per_value: float = 2.0) -> int:
    """2 x layers x kv_heads x head_dim x context x bytes x batch."""
    cfg = _text_config(config)
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(cfg, "num_attention_heads", "n_head", "num_heads")
    if layers is None or heads is None:
        raise InvalidRequest("config.json lacks the layer or head count needed for the KV cache estimate.")
    kv_heads = _first(cfg, "num_key_value_heads", "num_kv_heads", "multi_query_group_num") or heads
    head_dim = _first(cfg, "head_dim")
    if head_dim is None:
        hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
        if hidden is None:
            raise InvalidRequest("config.json lacks hidden_size/head_dim needed for the KV cache estimate.")
        head_dim = int(hidden) // int(heads)
    return int(2 * int(layers) * int(kv_heads) * int(head_dim) * context * bytes_per_value * batch)


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    weights_bytes: int
    kv_cache_bytes: int
    sae_bytes: int
    overhead_bytes: int
    dtype: str
    quantization: str
    context: int
    batch: int
    device: str

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.sae_bytes + self.overhead_bytes

    def describe(self) -> str:
        precision = self.quantization if self.quantization != "none" else self.dtype
        return (
            f"{self.total_bytes / GIB:.2f} GiB (weights {self.weights_bytes / GIB:.2f} GiB for "
            f"{self.params:,} parameters at {precision}, KV cache {self.kv_cache_bytes / GIB:.2f} GiB for "
            f"{self.context} tokens x batch {self.batch}, SAE {self.sae_bytes / GIB:.2f} GiB, "
            f"overhead {self.overhead_bytes / GIB:.2f} GiB)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params, "weights_bytes": self.weights_bytes, "kv_cache_bytes": self.kv_cache_bytes,
            "sae_bytes": self.sae_bytes, "overhead_bytes": self.overhead_bytes, "total_bytes": self.total_bytes,
            "dtype": self.dtype, "quantization": self.quantization, "context": self.context, "batch": self.batch,
            "device": self.device,
        }  # fmt: skip


def estimate_memory(
    *,
    params: ParamCount,
    config: Mapping[str, Any],
    placement: Placement,
    context: int | None = None,
    batch: int = 1,
    sae_bytes: int = 0,
) -> MemoryEstimate:
    """Pure arithmetic: what loading these parameters with this placement would take."""
    if not placement.quantized:
        weights = params.total * placement.bytes_per_value
    else:  # bitsandbytes keeps non-quantized layers and the KV cache in the 16-bit compute dtype
        weights = (params.quantizable * QUANT_BYTES[placement.quantization]
                   + params.not_quantizable * placement.bytes_per_value)
    ctx = context or max_context(config)
    if ctx is None:
        raise InvalidRequest("Give a context length: config.json has no max_position_embeddings.", param="context")
    kv = kv_cache_bytes(config, context=ctx, batch=batch, bytes_per_value=placement.bytes_per_value)
    overhead = int(OVERHEAD_FRACTION * weights) + (CUDA_CONTEXT_BYTES if placement.device_kind == "cuda" else 0)
    return MemoryEstimate(
        params=params.total, weights_bytes=int(weights), kv_cache_bytes=kv, sae_bytes=int(sae_bytes),
        overhead_bytes=overhead, dtype=placement.dtype, quantization=placement.quantization, context=ctx,
        batch=batch, device=placement.device,
    )  # fmt: skip


def check_fits(estimate: MemoryEstimate, *, force: bool = False, available: int | None = None) -> int:
    """Raise InsufficientMemory if the estimate exceeds free memory (unless `force`); returns free bytes."""
    free = available if available is not None else free_bytes(estimate.device)
    if estimate.total_bytes > free and not force:
        where = "GPU memory" if estimate.device.startswith("cuda") else "RAM"
        raise InsufficientMemory(
            f"Loading needs about {estimate.describe()}, but only {free / GIB:.2f} GiB of {where} is free on "
            f"{estimate.device}. Use 8bit/4bit quantization or a smaller dtype, a shorter context, a smaller "
            "batch, or force the load.",
            param="model", estimate=estimate, available=free,
        )
    return free


def estimate_local(
    folder: str | Path,
    *,
    placement: Placement,
    context: int | None = None,
    batch: int = 1,
    sae_bytes: int = 0,
) -> MemoryEstimate:
    """`estimate_memory` for a model folder (config.json + safetensors headers)."""
    root = Path(folder)
    config = read_config(root)
    return estimate_memory(
        params=count_local_parameters(root), config=config, placement=placement, context=context, batch=batch,
        sae_bytes=sae_bytes,
    )  # fmt: skip


def estimate_remote(
    repo_id: str,
    revision: str | None = None,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    placement: Placement,
    context: int | None = None,
    batch: int = 1,
    sae_bytes: int = 0,
) -> MemoryEstimate:
    """`estimate_memory` before pulling: config.json (fetched into the cache) + remote headers."""
    from huggingface_hub import hf_hub_download

    from millm.hub.cache import default_cache_dir
    from millm.hub.remote import HubClient, translate_hub_error

    client = HubClient(endpoint=endpoint, token=token)
    params = count_remote_parameters(repo_id, revision, endpoint=client.endpoint, token=token)
    try:
        path = hf_hub_download(
            repo_id, "config.json", revision=revision, cache_dir=default_cache_dir(cache_dir),
            endpoint=client.endpoint, token=token,
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - every Hub failure is translated
        raise translate_hub_error(exc, repo_id=repo_id, revision=revision, endpoint=client.endpoint) from exc
    config = json.loads(Path(str(path)).read_text())
    return estimate_memory(
        params=params, config=config, placement=placement, context=context, batch=batch, sae_bytes=sae_bytes,
    )  # fmt: skip
