"""The benchmark models, built offline into a cache folder outside git (benchmarks/out/models).

- `demo`: the bundled demo model and SAE when their assets exist; otherwise a random Llama of
  the demo's shape (d_model 256, 4 layers, d_ff 688, vocabulary 4096) with a random TopK SAE
  of the demo SAE's shape (8x, k 32) at `blocks.2.hook_resid_post`.
- `350m`: a random ~370M-parameter Llama (24 layers, d_model 1024, d_ff 2816, 16 heads,
  vocabulary 32000) with a random standard SAE, 8x wide, at `blocks.12.hook_resid_post`.

Random models get a word-level tokenizer whose vocabulary covers every id (`w3 w4 ...`), so
any prompt of n tokens is the text of n words and every generated id decodes. Nothing here
touches the network.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

OUT = Path(__file__).resolve().parent / "out"
SPECIALS = ("<s>", "</s>", "<pad>", "<unk>")


@dataclass(frozen=True)
class ModelShape:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    vocab: int
    context: int
    sae_arch: str
    sae_width: int  # multiple of d_model
    sae_layer: int
    sae_k: int = 32
    family: str = "llama"  # llama, gemma2 or qwen2 (the size and family sweep, benchmarks/sweep.py)
    n_kv_heads: int | None = None  # None: as many as query heads
    tied: bool = False  # the LM head shares the input embedding (Gemma-2, small Qwen2)


SHAPES = {
    "demo": ModelShape(d_model=256, n_layers=4, n_heads=4, d_ff=688, vocab=4096, context=256,
                       sae_arch="topk", sae_width=8, sae_layer=2),
    "350m": ModelShape(d_model=1024, n_layers=24, n_heads=16, d_ff=2816, vocab=32000, context=4096,
                       sae_arch="standard", sae_width=8, sae_layer=12),
}

# The size and family sweep's own models (benchmarks/sweep.py; its 2M and Llama 350M are the two above).
# Gemma-2 and Qwen2 shapes follow their families: grouped-query attention, a tied LM head, Gemma-2's
# 256-wide heads scaled down to 64 at these widths.
SWEEP_SHAPES = {
    "llama-25m": ModelShape(d_model=512, n_layers=6, n_heads=8, d_ff=1408, vocab=8192, context=2048,
                            sae_arch="standard", sae_width=8, sae_layer=3),
    "llama-100m": ModelShape(d_model=768, n_layers=12, n_heads=12, d_ff=2048, vocab=16000, context=2048,
                             sae_arch="standard", sae_width=8, sae_layer=6),
    "gemma2-25m": ModelShape(d_model=512, n_layers=6, n_heads=8, d_ff=1536, vocab=8192, context=2048,
                             sae_arch="jumprelu", sae_width=8, sae_layer=3, family="gemma2", n_kv_heads=4, tied=True),
    "gemma2-350m": ModelShape(d_model=1024, n_layers=24, n_heads=16, d_ff=3072, vocab=32000, context=4096,
                              sae_arch="jumprelu", sae_width=8, sae_layer=12, family="gemma2", n_kv_heads=8,
                              tied=True),
    "qwen2-25m": ModelShape(d_model=512, n_layers=6, n_heads=8, d_ff=1536, vocab=8192, context=2048,
                            sae_arch="standard", sae_width=8, sae_layer=3, family="qwen2", n_kv_heads=2, tied=True),
    "qwen2-350m": ModelShape(d_model=1024, n_layers=24, n_heads=16, d_ff=3072, vocab=32000, context=4096,
                             sae_arch="standard", sae_width=8, sae_layer=12, family="qwen2", n_kv_heads=2, tied=True),
}


@dataclass(frozen=True)
class BenchModel:
    name: str
    model_dir: Path
    sae_dir: Path
    description: str
    serve_as: str | None = None  # the `--model` argument for the server when not the folder (a name it knows)


def word_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with ids 0..vocab-1: specials first, then `w<id>`."""
    words = {tok: i for i, tok in enumerate(SPECIALS)}
    words.update({f"w{i}": i for i in range(len(SPECIALS), vocab)})
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return fast


def build_random_llama(out_dir: Path, shape: ModelShape, *, seed: int = 0) -> Path:
    """A random model of `shape` (a Llama, or the family it names) plus a word-level tokenizer, saved with
    save_pretrained."""
    tokenizer = word_tokenizer(shape.vocab)
    torch.manual_seed(seed)
    common = dict(
        vocab_size=shape.vocab, hidden_size=shape.d_model, intermediate_size=shape.d_ff,
        num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_kv_heads or shape.n_heads,
        max_position_embeddings=shape.context, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=shape.tied,
    )
    if shape.family == "gemma2":
        from transformers import Gemma2Config, Gemma2ForCausalLM

        head_dim = shape.d_model // shape.n_heads
        model: Any = Gemma2ForCausalLM(Gemma2Config(**common, head_dim=head_dim, query_pre_attn_scalar=head_dim,
                                                    sliding_window=shape.context))
    elif shape.family == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_random_sae(out_dir: Path, shape: ModelShape, *, seed: int = 1, model_name: str = "bench") -> Path:
    """A random SAE in SAELens v6 layout whose features fire on typical residual inputs."""
    d_in, d_sae = shape.d_model, shape.d_model * shape.sae_width
    g = torch.Generator().manual_seed(seed)
    tensors = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        "W_dec": torch.randn(d_sae, d_in, generator=g) / d_sae**0.5,
        "b_enc": 0.1 * torch.randn(d_sae, generator=g),
        "b_dec": 0.1 * torch.randn(d_in, generator=g),
    }
    if shape.sae_arch == "jumprelu":  # Gemma Scope's architecture
        tensors["threshold"] = 0.05 * torch.rand(d_sae, generator=g)
    hook = f"blocks.{shape.sae_layer}.hook_resid_post"
    cfg: dict[str, object] = {
        "architecture": shape.sae_arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": False, "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {"model_name": model_name, "hook_name": hook, "hook_head_index": None, "context_size": 128,
                     "prepend_bos": True, "sae_lens_version": "6.5.0"},
    }
    if shape.sae_arch == "topk":
        cfg["k"] = shape.sae_k
        cfg["rescale_acts_by_decoder_norm"] = False
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cfg.json").write_text(json.dumps(cfg, indent=1))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "sae_weights.safetensors"))
    return out_dir


def _cached(name: str, shape: ModelShape, root: Path) -> tuple[Path, Path]:
    model_dir, sae_dir = root / name / "model", root / name / "sae"
    if not (model_dir / "config.json").exists():
        log.info("building the random %s model into %s", name, model_dir)
        build_random_llama(model_dir, shape)
    # The SAE names the model as the server will (a local folder is served under its folder name), so the
    # server's "SAE was trained on another model" warning stays for real mismatches.
    cfg_path = sae_dir / "cfg.json"
    if not cfg_path.exists():
        build_random_sae(sae_dir, shape, model_name=model_dir.name)
    else:
        cfg = json.loads(cfg_path.read_text())
        if cfg["metadata"].get("model_name") != model_dir.name:
            cfg["metadata"]["model_name"] = model_dir.name
            cfg_path.write_text(json.dumps(cfg, indent=1))
    return model_dir, sae_dir


def get_model(name: str, *, root: Path = OUT / "models") -> BenchModel:
    """The benchmark model `name` ("demo" or "350m"), built on first use."""
    if name == "demo":
        from millm.demo import assets_dir

        assets = assets_dir()
        if (assets / "model" / "config.json").exists() and (assets / "sae" / "cfg.json").exists():
            return BenchModel("demo", assets / "model", assets / "sae", "bundled demo model and SAE",
                              serve_as="millm-demo")
        model_dir, sae_dir = _cached("demo-shaped", SHAPES["demo"], root)
        return BenchModel("demo", model_dir, sae_dir,
                          "random Llama of the demo model's shape (demo assets not built); random TopK SAE")
    if name == "350m":
        model_dir, sae_dir = _cached("350m", SHAPES["350m"], root)
        return BenchModel("350m", model_dir, sae_dir, "random Llama, 24 layers, d_model 1024; random 8x SAE")
    raise ValueError(f"unknown benchmark model {name!r}; expected demo or 350m")


def sweep_model(name: str, *, root: Path = OUT / "models") -> BenchModel:
    """One of SWEEP_SHAPES' random models, built on first use."""
    shape = SWEEP_SHAPES[name]
    model_dir, sae_dir = _cached(name, shape, root)
    family = {"llama": "Llama", "gemma2": "Gemma-2", "qwen2": "Qwen2"}[shape.family]
    return BenchModel(name, model_dir, sae_dir, f"random {family}-shaped, {shape.n_layers} layers, d_model "
                      f"{shape.d_model}; random {shape.sae_width}x {shape.sae_arch} SAE")
