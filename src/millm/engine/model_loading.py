"""Load a causal LM and its tokenizer from a local folder.

The engine never downloads: `millm.hub.sources` turns a model argument (a folder, `millm-demo`,
a Hub repo id) into a folder first, from the cache or by a pull. PyTorch `.bin` weights are
read by transformers with `weights_only=True`. Remote code runs only when explicitly allowed.
Device and dtype are chosen automatically unless overridden (`millm.placement` resolves "auto"); Gemma-2 gets eager attention so
its attention soft-capping (and therefore its activations) match what SAEs were trained on.
bitsandbytes 8-bit and 4-bit (nf4) quantization runs on CUDA and on the CPU; elsewhere, or without
a working bitsandbytes, it is refused with an `InvalidRequest`. Files that cannot be read (a
truncated or corrupt weights file, a bad config) raise `ModelLoadError`, never a bare exception.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from millm.errors import InvalidRequest, MillmError, ModelLoadError, ModelNotFound
from millm.placement import resolve_placement

log = logging.getLogger(__name__)

EAGER_ATTENTION_TYPES = {"gemma2"}


@dataclass
class LoadedModel:
    model_id: str
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype  # dtype of the residual stream / activations
    quantization: str
    context_length: int
    eos_ids: frozenset[int]
    special_ids: frozenset[int]
    bos_id: int | None
    num_parameters: int
    source: str
    revision: str | None

    @functools.cached_property
    def vocab_size(self) -> int:  # (cached: transformers' get_output_embeddings() costs ~50 us, asked per request)
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.get_text_config().num_hidden_layers)


def bitsandbytes_available(device: torch.device) -> str | None:
    """None when bitsandbytes can quantize on `device`, else the reason it cannot."""
    if device.type not in ("cuda", "cpu"):
        return f"bitsandbytes has no backend for device {device.type!r}; use device cuda or cpu"
    for package in ("bitsandbytes", "accelerate"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (pip install 'millm[quant]')"
    try:
        import bitsandbytes  # noqa: F401 - a broken install (missing native library) fails here
    except Exception as e:  # noqa: BLE001 - any import failure means "cannot run"
        return f"bitsandbytes cannot be imported ({type(e).__name__}: {e})"
    return None


class _OnceFilter(logging.Filter):
    """Lets a log message through once; bitsandbytes' 8-bit matmul warns on every call."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        if self.seen:
            return False
        self.seen = True
        return True


_BNB_8BIT_CAST = _OnceFilter("MatMul8bitLt: inputs will be cast")


def _quiet_bitsandbytes() -> None:
    # LLM.int8 quantizes bf16 inputs through fp16 and logs that for every matmul (every token).
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if _BNB_8BIT_CAST not in logger.filters:
        logger.addFilter(_BNB_8BIT_CAST)


def _quantization_config(quantization: str, compute_dtype: torch.dtype) -> Any:
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)


def load_model(
    source: str,
    *,
    model_id: str | None = None,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    quantization: str = "none",
    trust_remote_code: bool = False,
    max_context: int | None = None,
    local_dir: Path | None = None,
) -> LoadedModel:
    """Load the model in `local_dir` (default: `source`, then a folder), served as `model_id` (default: the
    source's name, or `source` itself when it is not a folder: a Hub repo id).

    With bitsandbytes quantization only the Linear layers of the blocks are quantized; embeddings,
    norms and so the residual stream stay in the 16-bit compute dtype (`LoadedModel.dtype`), which
    is what SAEs are cast to.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    placement = resolve_placement(device, dtype, quantization, require_device=True)
    dev = torch.device(placement.device)
    torch_dtype: torch.dtype = getattr(torch, placement.dtype)
    if quantization != "none":
        reason = bitsandbytes_available(dev)
        if reason:
            raise InvalidRequest(f"{quantization} quantization is unavailable: {reason}", param="quantization")
        _quiet_bitsandbytes()
    path, rev = Path(local_dir) if local_dir is not None else Path(source).expanduser(), revision
    if not path.is_dir():
        raise ModelNotFound(f"model folder {source!r} does not exist", param="model")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
        if config.model_type in EAGER_ATTENTION_TYPES:
            kwargs["attn_implementation"] = "eager"
        if quantization != "none":
            kwargs["quantization_config"] = _quantization_config(quantization, torch_dtype)
            kwargs["device_map"] = {"": dev.index if dev.type == "cuda" and dev.index is not None else dev.type}
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if quantization == "none":
            model = model.to(dev)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except MillmError:
        raise
    except Exception as e:  # noqa: BLE001 - a model that cannot be read is the caller's problem, not a crash
        raise ModelLoadError(f"could not load model {source!r}: {_describe_load_error(e)}", param="model") from e

    text_cfg = model.config.get_text_config()
    ctx = int(getattr(text_cfg, "max_position_embeddings", 0) or getattr(tokenizer, "model_max_length", 2048))
    if max_context:
        ctx = min(ctx, max_context)
    eos: set[int] = set()
    for candidate in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(candidate, int):
            eos.add(candidate)
        elif isinstance(candidate, (list, tuple)):
            eos.update(int(c) for c in candidate)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The residual stream runs in the embeddings' dtype (the compute dtype when quantized).
    residual_dtype = model.get_input_embeddings().weight.dtype
    return LoadedModel(
        # A local folder is served under its name, never its absolute path.
        model_id=model_id or (Path(source).expanduser().name if Path(source).expanduser().is_dir() else source),
        model=model,
        tokenizer=tokenizer,
        device=dev,
        dtype=residual_dtype if residual_dtype.is_floating_point else torch_dtype,
        quantization=quantization,
        context_length=ctx,
        eos_ids=frozenset(eos),
        special_ids=frozenset(int(i) for i in tokenizer.all_special_ids),
        bos_id=tokenizer.bos_token_id,
        num_parameters=int(model.num_parameters()),  # counts packed 4-bit weights at full size
        source=source,
        revision=rev,
    )


def _describe_load_error(e: Exception) -> str:
    """A message that says what is wrong with the files, not where transformers noticed it."""
    text = str(e).strip() or type(e).__name__
    if type(e).__name__ == "SafetensorError" or "deserializ" in text.lower():
        return f"a weights file is corrupt or truncated ({text}); delete it from the cache and pull again"
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return f"out of GPU memory while loading ({text.splitlines()[0]})"
    return text.splitlines()[0] if len(text) > 500 else text
