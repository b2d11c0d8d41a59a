"""Training the demo SAE: a TopK sparse autoencoder on the model's residual stream at one layer.

Contract: `collect_activations` runs the model over BOS-started windows of a token stream and
returns the output of `model.model.layers[layer]` (SAELens `blocks.{layer}.hook_resid_post`) for
every non-BOS token, with the token's index in the stream. `train_sae` fits a `TopKSae`
(training on inputs scaled to norm ≈ √d_in, folded back out afterwards, so the returned SAE acts
on raw residuals and its decoder rows have unit norm). With `pinned` (p, d_in) directions, the
decoder rows of latents `pinned_at`.. are fixed to those unit directions for the whole run (supervised
latents): their encoder columns and biases learn as usual, so each fires in proportion to how much
of its direction the input holds, and the other latents learn the rest. `save_sae` writes the SAELens v6 layout:
`cfg.json` + `sae_weights.safetensors` with W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

SAE_LENS_VERSION = "6.0.0"


@dataclass(frozen=True)
class SaeConfig:
    d_sae: int = 1536
    k: int = 32
    lr: float = 5e-4
    batch_size: int = 4096
    epochs: int = 4
    aux_k: int = 256  # AuxK: the dead features that model the residual error
    aux_coef: float = 1 / 32
    dead_after_tokens: int = 200_000
    # Matryoshka prefixes: the first m features must also reconstruct the input on their own, for
    # each m here (d_sae is always included). Early features then hold general directions (ALL
    # CAPS, topic) instead of being absorbed into per-token features. Empty: a plain TopK SAE.
    prefixes: tuple[int, ...] = (16, 64, 256)


class TopKSae(nn.Module):
    def __init__(self, d_in: int, d_sae: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:  # (..., d_in) -> (..., d_sae)
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (..., d_in) -> (..., d_sae), k non-zeros at most
        pre = self.pre_acts(x)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def decode(self, f: torch.Tensor) -> torch.Tensor:  # (..., d_sae) -> (..., d_in)
        return f @ self.W_dec + self.b_dec


@dataclass
class SaeTrainingResult:
    sae: TopKSae
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- activations


def window_starts(doc_starts: np.ndarray, n_tokens: int, context: int) -> list[tuple[int, int]]:
    """(start, keep) pairs: windows beginning at a BOS, keeping tokens up to the next window's start."""
    out: list[tuple[int, int]] = []
    p = 0
    starts = np.asarray(doc_starts)
    while p + 1 < n_tokens:
        inside = starts[(starts > p) & (starts <= p + context)]
        nxt = int(inside[-1]) if len(inside) and p + context < n_tokens else min(p + context, n_tokens)
        out.append((p, nxt - p))
        p = nxt
    return out


@torch.no_grad()
def residuals(model: PreTrainedModel, layer: int, batch: torch.Tensor) -> torch.Tensor:
    """Output of `model.model.layers[layer]` for a (B, T) batch → (B, T, d_model)."""
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = model.model.layers[layer].register_forward_hook(hook)
    try:
        model(input_ids=batch, use_cache=False)
    finally:
        handle.remove()
    return captured[0].float()


@torch.no_grad()
def collect_activations(
    model: PreTrainedModel, *, ids: np.ndarray, doc_starts: np.ndarray, layer: int, context: int, max_tokens: int,
    bos_id: int,
) -> tuple[torch.Tensor, np.ndarray]:
    """Residuals (N, d_model) of the first ~max_tokens non-BOS tokens, and their stream indices (N,)."""
    acts: list[torch.Tensor] = []
    index: list[np.ndarray] = []
    total = 0
    for start, keep in window_starts(doc_starts, len(ids), context):
        window = torch.from_numpy(ids[start : start + context].astype(np.int64))[None]
        res = residuals(model, layer, window)[0, :keep]
        positions = np.arange(start, start + keep)
        mask = ids[positions] != bos_id
        acts.append(res[torch.from_numpy(mask)])
        index.append(positions[mask])
        total += int(mask.sum())
        if total >= max_tokens:
            break
    return torch.cat(acts), np.concatenate(index)


# ----------------------------------------------------------------------------- training


def _init(
    sae: TopKSae, x: torch.Tensor, gen: torch.Generator, pinned: torch.Tensor | None = None, pinned_at: int = 0
) -> None:
    d_sae, d_in = sae.W_dec.shape
    w = torch.randn(d_sae, d_in, generator=gen)
    sae.W_dec.data = w / w.norm(dim=1, keepdim=True)
    if pinned is not None:
        sae.W_dec.data[pinned_at : pinned_at + len(pinned)] = pinned
    sae.W_enc.data = sae.W_dec.data.T.clone()
    sae.b_dec.data = x.mean(0)


def train_sae(
    acts: torch.Tensor, cfg: SaeConfig, seed: int, pinned: torch.Tensor | None = None, pinned_at: int = 0
) -> SaeTrainingResult:
    """Fit a TopK SAE to `acts` (N, d_in); the result works on raw (unscaled) residuals. `pinned`
    (p, d_in), if given, fixes the decoder rows of latents pinned_at..pinned_at+p-1 to those
    directions (normalised)."""
    gen = torch.Generator().manual_seed(seed)
    scale = float(acts.shape[1] ** 0.5 / acts.norm(dim=1).mean())
    x_all = acts * scale
    sae = TopKSae(acts.shape[1], cfg.d_sae, cfg.k)
    if pinned is not None:
        pinned = pinned.float().reshape(-1, acts.shape[1])
        pinned = pinned / pinned.norm(dim=1, keepdim=True)
    _init(sae, x_all, gen, pinned, pinned_at)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    since_fired = torch.zeros(cfg.d_sae)
    result = SaeTrainingResult(sae=sae)
    t0 = time.perf_counter()
    n = len(x_all)
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - cfg.batch_size + 1, cfg.batch_size):
            x = x_all[order[i : i + cfg.batch_size]]
            pre = sae.pre_acts(x)
            top = pre.topk(cfg.k, dim=-1)
            f = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
            recon = sae.decode(f)
            err = x - recon
            total_var = x.var(0).sum()
            loss = err.pow(2).sum(-1).mean() / total_var
            prefixes = [m for m in cfg.prefixes if m < cfg.d_sae]
            for m in prefixes:
                partial = f[:, :m] @ sae.W_dec[:m] + sae.b_dec
                loss = loss + (x - partial).pow(2).sum(-1).mean() / total_var
            loss = loss / (1 + len(prefixes))
            fired = (f > 0).any(0)
            since_fired = torch.where(fired, torch.zeros_like(since_fired), since_fired + len(x))
            dead = since_fired > cfg.dead_after_tokens
            if dead.any():
                dead_pre = pre.masked_fill(~dead, float("-inf"))
                aux = dead_pre.topk(min(cfg.aux_k, int(dead.sum())), dim=-1)
                f_aux = torch.zeros_like(pre).scatter(-1, aux.indices, aux.values.relu())
                aux_err = (err.detach() - f_aux @ sae.W_dec).pow(2).sum(-1).mean() / err.detach().pow(2).sum(-1).mean()
                loss = loss + cfg.aux_coef * aux_err
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                sae.W_dec.data /= sae.W_dec.data.norm(dim=1, keepdim=True)
                if pinned is not None:
                    sae.W_dec.data[pinned_at : pinned_at + len(pinned)] = pinned
            result.losses.append(float(loss.detach()))
        log.info("SAE epoch %d/%d loss %.4f dead %d", epoch + 1, cfg.epochs, result.losses[-1], int(dead.sum()))
    with torch.no_grad():  # fold the input scale out: features in raw residual units, unit decoder rows
        sae.b_enc.data /= scale
        sae.b_dec.data /= scale
    result.seconds = time.perf_counter() - t0
    return result


@torch.no_grad()
def reconstruction_quality(sae: TopKSae, acts: torch.Tensor, batch_size: int = 8192) -> dict[str, float]:
    """Fraction of variance explained, mean L0 and the fraction of features that never fire."""
    sq_err = 0.0
    l0 = 0.0
    fired = torch.zeros(sae.W_dec.shape[0], dtype=torch.bool)
    for i in range(0, len(acts), batch_size):
        x = acts[i : i + batch_size]
        f = sae.encode(x)
        sq_err += float((x - sae.decode(f)).pow(2).sum())
        l0 += float((f > 0).sum())
        fired |= (f > 0).any(0)
    total_var = float((acts - acts.mean(0)).pow(2).sum())
    return {
        "fve": 1 - sq_err / total_var,
        "l0": l0 / len(acts),
        "dead_fraction": 1 - float(fired.float().mean()),
    }


def save_sae(sae: TopKSae, out_dir: Path, *, model_name: str, layer: int, context: int) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    d_sae, d_in = sae.W_dec.shape
    cfg = {
        "architecture": "topk",
        "d_in": d_in,
        "d_sae": d_sae,
        "k": sae.k,
        "rescale_acts_by_decoder_norm": False,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": model_name,
            "hook_name": f"blocks.{layer}.hook_resid_post",
            "hf_hook_name": f"model.layers.{layer}",
            "hook_head_index": None,
            "prepend_bos": True,
            "context_size": context,
            "exclude_special_tokens": False,
            "model_class_name": "AutoModelForCausalLM",
            "dataset_path": "millm.demo.corpus (generated)",
            "sae_lens_version": SAE_LENS_VERSION,
            "sae_lens_training_version": SAE_LENS_VERSION,
        },
    }
    tensors = {name: p.detach().float().contiguous() for name, p in sae.named_parameters()}
    save_file(tensors, str(out_dir / "sae_weights.safetensors"))
    (out_dir / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return cfg


def load_sae(sae_dir: Path) -> TopKSae:
    """Read back what `save_sae` wrote (TopK only; the server has its own general loader)."""
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    assert cfg["architecture"] == "topk", cfg["architecture"]
    sae = TopKSae(cfg["d_in"], cfg["d_sae"], cfg["k"])
    sae.load_state_dict(load_file(str(sae_dir / "sae_weights.safetensors")))
    return sae.eval()
