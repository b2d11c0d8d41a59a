"""The in-memory SAE: one config dataclass and one abstract module.

Contract:
- Weights are held in SAELens orientation whatever the file said: W_enc [d_in, d_sae], W_dec [d_sae, d_in],
  b_enc [d_sae], b_dec [d_in], plus per-architecture tensors ([d_sae] each). They are buffers, never
  parameters: nothing here needs gradients. Loaders fix orientation and key names; nothing below does.
- Inputs are any [..., d_in] tensor in any float dtype. `normalize` casts to the SAE dtype, so `encode`,
  `decode` and `steering_vector` return the SAE dtype, while the residual-to-residual maps (`forward`,
  `clamp_delta`, `clamp_full`) return the input's dtype, ready to be written back into the model.
- Normalisation (`cfg.normalize_activations`) follows SAELens: "none"; "expected_average_only_in" is
  folded into the weights at load, so it is the identity at run time; "constant_norm_rescale" scales each
  token to norm sqrt(d_in); "layer_norm" uses (x - mu) / (sigma + 1e-5) in and y * sigma + mu out (sigma the
  unbiased std, exactly as SAELens; the eps makes in and out not quite inverse). `center_input` subtracts
  the per-token mean first (GPT-2 SAEs trained with TransformerLens' center_writing_weights) and adds it
  back on the way out. Per-token statistics travel explicitly in `NormStats`, never on `self`, so one SAE
  can serve concurrent batches.
- Methods never modify their inputs in place, never sync with the device (no `.item()`), and work under
  `torch.inference_mode()`; callers are expected to run them there.
- Feature ids passed as `idx` are a LongTensor [m] on the SAE's device, unique and in range; validate
  user input once with `check_features` rather than on every forward pass.

Length (over 400 lines): the config, the shared encode/decode contract and its checks form one type;
each architecture and each on-disk format already lives in its own file.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from millm.errors import SaeError, SaeMismatch

NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
LAYER_NORM_EPS = 1e-5

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
    "double": torch.float64,
}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float32', 'torch.bfloat16', 'bf16', torch.float16 ... -> torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.").lower()
    if name not in _DTYPES:
        raise SaeError(f"unknown SAE dtype {dtype!r}; expected one of {sorted(set(_DTYPES))}")
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class SaeConfig:
    """Everything about an SAE except its tensors. Loaders fill in what the file tells them."""

    architecture: str  # registry name: standard | jumprelu | topk | gated
    d_in: int
    d_sae: int
    dtype: str = "float32"
    hook_name: str = ""  # as written in the source (TransformerLens name or HF module path)
    layer: int | None = None  # parsed from hook_name where possible
    site: str | None = None  # resid_pre | resid_mid | resid_post | attn_out | mlp_out | attn_z | module
    model_name: str | None = None
    apply_b_dec_to_input: bool = False
    normalize_activations: str = "none"
    norm_scaling_factor: float | None = None  # folded into the weights (expected_average_only_in)
    center_input: bool = False
    k: int | None = None  # topk only
    rescale_acts_by_decoder_norm: bool = False  # topk only
    prepend_bos: bool = True
    context_size: int | None = None
    hook_head_index: int | None = None
    source_format: str = "unknown"  # saelens | saelens_pre_v6 | gemma_scope | gemma_scope_2 | ...
    neuronpedia_id: str | None = None
    repo_id: str | None = None
    subpath: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # format-specific leftovers, for display only

    def __post_init__(self) -> None:
        if self.normalize_activations not in NORMALIZATIONS:
            raise SaeError(
                f"unsupported normalize_activations {self.normalize_activations!r}; "
                f"supported: {', '.join(NORMALIZATIONS)}"
            )
        self.dtype = dtype_name(parse_dtype(self.dtype))
        if self.d_in <= 0 or self.d_sae <= 0:
            raise SaeError(f"SAE dims must be positive, found d_in={self.d_in}, d_sae={self.d_sae}")


@dataclass(frozen=True)
class CompiledClamp:
    """A clamp of features idx to values, prepared once for the per-token path (`Sae.clamped`)."""

    idx: Tensor  # [m]
    values: Tensor  # [m], SAE dtype
    rows: Tensor  # [m, d_in]: W_dec[idx], with decoder_coefficients' per-feature scale folded in


@dataclass(frozen=True)
class NormStats:
    """Per-token statistics from `Sae.normalize`; `denormalize(y) = y * scale + shift`."""

    scale: Tensor | None = None  # [..., 1]
    shift: Tensor | None = None  # [..., 1]


class Sae(nn.Module, ABC):
    """An SAE of one architecture. Subclasses define the activation; the linear algebra lives here."""

    architecture: ClassVar[str]
    # per-architecture tensors, each [d_sae]
    extra_tensors: ClassVar[tuple[str, ...]] = ()
    # True when encode_selected can use only the selected encoder columns
    selective_encode: ClassVar[bool] = True

    W_enc: Tensor  # [d_in, d_sae]
    W_dec: Tensor  # [d_sae, d_in]
    b_enc: Tensor  # [d_sae]
    b_dec: Tensor  # [d_in]

    def __init__(self, cfg: SaeConfig, tensors: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.cfg = cfg
        dtype = parse_dtype(cfg.dtype)
        expected = {
            "W_enc": (cfg.d_in, cfg.d_sae),
            "W_dec": (cfg.d_sae, cfg.d_in),
            "b_enc": (cfg.d_sae,),
            "b_dec": (cfg.d_in,),
            **{name: (cfg.d_sae,) for name in self.extra_tensors},
        }
        missing = [name for name in expected if name not in tensors]
        if missing:
            raise SaeError(f"{cfg.architecture} SAE is missing tensors {missing}; found {sorted(tensors)}")
        for name, shape in expected.items():
            t = tensors[name]
            if tuple(t.shape) != shape:
                raise SaeMismatch(
                    f"{cfg.architecture} SAE tensor {name}: expected shape {list(shape)} "
                    f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}), found {list(t.shape)}"
                )
            self.register_buffer(name, t.detach().to(dtype).contiguous())
        self._check_params()

    def _check_params(self) -> None:
        """Architecture-specific config checks; raise SaeError."""

    # ---------------------------------------------------------------- properties

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def to(  # type: ignore[override]
        self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
    ) -> Sae:
        """Move and/or cast all tensors; keeps `cfg.dtype` in step. Returns self. `sae.to(torch.float16)`
        (a dtype in the device position) works too."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        dt = parse_dtype(dtype) if dtype is not None else None
        super().to(device=device, dtype=dt)
        if dt is not None:
            self.cfg = replace(self.cfg, dtype=dtype_name(dt))
        return self

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"architecture={c.architecture}, d_in={c.d_in}, d_sae={c.d_sae}, hook={c.hook_name!r}, "
            f"norm={c.normalize_activations}, dtype={c.dtype}"
        )

    def fold_norm_scaling_factor(self, s: float) -> None:
        """Fold expected_average_only_in's input scale s (x_norm = s * x) into the weights, so the SAE
        reads raw activations: W_enc * s, W_dec / s, b_dec / s (SAELens' fold). Records s in cfg."""
        if s <= 0 or not math.isfinite(s):
            raise SaeError(f"norm_scaling_factor must be a positive number, found {s}")
        self.W_enc = self.W_enc * s
        self.W_dec = self.W_dec / s
        self.b_dec = self.b_dec / s
        self.cfg = replace(self.cfg, norm_scaling_factor=s)

    def fold_decoder_norm(self) -> None:
        """Make every W_dec row unit-norm and scale the encoder so reconstructions are unchanged and each
        activation is multiplied by its old ||W_dec[i]|| -- the units Neuronpedia's dashboards use (it calls
        SAELens' fold_W_dec_norm). Not possible for topk without rescale_acts_by_decoder_norm (the top-k set
        would change)."""
        n = self.W_dec.norm(dim=-1).clamp_min(1e-12)  # [d_sae]
        self._fold_decoder_norm_params(n)
        self.W_dec = self.W_dec / n[:, None]
        self.W_enc = self.W_enc * n
        self.b_enc = self.b_enc * n

    def _fold_decoder_norm_params(self, n: Tensor) -> None:
        """Scale architecture-specific tensors for `fold_decoder_norm` (n: [d_sae]); raise if impossible."""

    def prepare_encoder(self) -> None:
        """Precompute what the per-token encoder reuses (topk: its folded bias), so that the first forward pass
        after attaching does no set-up work (none of it inside a CUDA-graph capture, say). Optional: the
        maps prepare lazily otherwise."""

    # ---------------------------------------------------------------- normalisation

    def normalize(self, x: Tensor) -> tuple[Tensor, NormStats]:
        """x [..., d_in] (any dtype) -> (x_norm [..., d_in] in SAE dtype, stats)."""
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        shift: Tensor | None = None
        scale: Tensor | None = None
        if self.cfg.center_input:
            shift = x.mean(dim=-1, keepdim=True)  # [..., 1]
            x = x - shift
        norm = self.cfg.normalize_activations
        if norm == "constant_norm_rescale":
            coeff = math.sqrt(self.cfg.d_in) / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [..., 1]
            x = x * coeff
            scale = 1.0 / coeff
        elif norm == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)  # [..., 1]
            x = x - mu
            std = x.std(dim=-1, keepdim=True)  # [..., 1]
            x = x / (std + LAYER_NORM_EPS)
            shift = mu if shift is None else shift + mu
            scale = std
        return x, NormStats(scale=scale, shift=shift)

    def denormalize(self, y: Tensor, stats: NormStats | None) -> Tensor:
        """y [..., d_in] in normalised space -> activation space, using stats from `normalize`."""
        if stats is None:
            if self.needs_stats:
                raise SaeError(
                    f"this SAE normalises per token ({self._norm_label()}); pass the stats from normalize(x)"
                )
            return y
        if stats.scale is not None:
            y = y * stats.scale
        if stats.shift is not None:
            y = y + stats.shift
        return y

    def _delta_to_activation_space(self, delta: Tensor, stats: NormStats) -> Tensor:
        """A difference of two normalised-space points -> activation space (the shift cancels)."""
        return delta * stats.scale if stats.scale is not None else delta

    @property
    def needs_stats(self) -> bool:
        return self.cfg.center_input or self.cfg.normalize_activations in ("constant_norm_rescale", "layer_norm")

    def _norm_label(self) -> str:
        return f"normalize_activations={self.cfg.normalize_activations}, center_input={self.cfg.center_input}"

    # ---------------------------------------------------------------- architecture hooks

    def _sae_in(self, x_norm: Tensor) -> Tensor:
        return x_norm - self.b_dec if self.cfg.apply_b_dec_to_input else x_norm

    @abstractmethod
    def encode_normalized(self, x_norm: Tensor) -> Tensor:
        """x_norm [..., d_in] (SAE dtype, normalised) -> feature activations [..., d_sae]."""

    @abstractmethod
    def encode_selected_normalized(self, x_norm: Tensor, idx: Tensor) -> Tensor:
        """x_norm [..., d_in], idx [m] -> activations of features idx [..., m], exactly as encode gives them."""

    def decoder_coefficients(self, f: Tensor, idx: Tensor | None = None) -> Tensor:
        """Feature activations [..., m] -> the coefficients that multiply W_dec rows (idx: which rows;
        None = all). Identity except for topk with rescale_acts_by_decoder_norm."""
        return f

    def decode_normalized(self, f: Tensor) -> Tensor:
        """f [..., d_sae] -> reconstruction [..., d_in] in normalised space (SAE dtype)."""
        return self.decoder_coefficients(f.to(self.dtype)) @ self.W_dec + self.b_dec

    # ---------------------------------------------------------------- public maps

    def encode(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> feature activations [..., d_sae] (SAE dtype)."""
        x_norm, _ = self.normalize(x)
        return self.encode_normalized(x_norm)

    def decode(self, f: Tensor, stats: NormStats | None = None) -> Tensor:
        """f [..., d_sae] -> reconstruction [..., d_in] (SAE dtype). Per-token normalisations need the
        `stats` of the x that f came from (from `normalize(x)`)."""
        return self.denormalize(self.decode_normalized(f), stats)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> reconstruction [..., d_in] in x's dtype."""
        x_norm, stats = self.normalize(x)
        y = self.decode_normalized(self.encode_normalized(x_norm))
        return self.denormalize(y, stats).to(x.dtype)

    def encode_selected(self, x: Tensor, idx: Tensor) -> Tensor:
        """x [..., d_in], idx LongTensor [m] -> activations of features idx [..., m] (SAE dtype).
        Standard/jumprelu/gated compute only the m encoder columns; topk needs every pre-activation
        to know the top-k set, so it runs the full encode and gathers (exact either way)."""
        x_norm, _ = self.normalize(x)
        return self.encode_selected_normalized(x_norm, idx)

    def clamp_delta(self, x: Tensor, idx: Tensor, values: Tensor | float) -> Tensor:
        """The change to x [..., d_in] from clamping features idx [m] to values ([m], [..., m] or a scalar)
        with the reconstruction error kept: decode(f') + (x - decode(f)) - x, which (the decoder being
        affine) is (values - f_idx(x)) . W_dec[idx], taken back to activation space. Uses only the selected
        encoder columns (topk: full encode). Returns x's dtype; the steered activation is x + delta."""
        x_norm, stats = self.normalize(x)
        f_sel = self.encode_selected_normalized(x_norm, idx)  # [..., m]
        coef = self.decoder_coefficients(_as_tensor(values, f_sel) - f_sel, idx)  # [..., m]
        delta = coef @ self.W_dec.index_select(0, idx)  # [..., d_in]
        return self._delta_to_activation_space(delta, stats).to(x.dtype)

    def compile_clamp(self, idx: Tensor, values: Tensor | float) -> CompiledClamp:
        """Prepare clamping features idx [m] to values ([m] or a scalar) for `clamped`: the decoder rows are
        gathered (and scaled, for topk's rescale_acts_by_decoder_norm) once instead of on every token."""
        vals = torch.as_tensor(values, dtype=self.dtype, device=self.device).expand(idx.shape).contiguous()
        scale = self.decoder_coefficients(torch.ones(idx.shape, dtype=self.dtype, device=self.device), idx)
        rows = self.W_dec.index_select(0, idx) * scale[:, None]  # [m, d_in]
        return CompiledClamp(idx=idx, values=vals, rows=rows.contiguous())

    def clamped(self, x: Tensor, clamp: CompiledClamp, mask: Tensor | None = None) -> Tensor:
        """x [..., d_in] steered by a compiled clamp: x + clamp_delta(x, clamp.idx, clamp.values), the delta
        multiplied by mask [...] (bool or float, 0 = leave the token alone) when given. Returns x's dtype.
        Without a mask or per-token scale, and with x in the SAE dtype, the write-back is one fused addmm."""
        x_norm, stats = self.normalize(x)
        coef = clamp.values - self.encode_selected_normalized(x_norm, clamp.idx)  # [..., m]
        if mask is None and stats.scale is None and x.dtype == self.dtype:
            d = x.shape[-1]
            return torch.addmm(x.reshape(-1, d), coef.reshape(-1, coef.shape[-1]), clamp.rows).view(x.shape)
        delta = self._delta_to_activation_space(coef @ clamp.rows, stats)  # [..., d_in]
        if delta.dtype != x.dtype:
            delta = delta.to(x.dtype)
        return x + (delta * mask[..., None] if mask is not None else delta)

    def clamped_rows(self, x: Tensor, idx: Tensor, values: Tensor, rows: Tensor, on: Tensor | None = None) -> Tensor:
        """x [B, T, d_in] with a different clamp per batch row: row b sets features idx[b] [F] to values[b] [F],
        whose decoder rows are rows[b] [F, d_in] (`CompiledClamp.rows`; zero rows pad a short clamp). on [B, T]
        (0 = leave the token alone) multiplies the delta. One full encode and a gather: the same work for any mix
        of clamps, so a CUDA graph can replay it (`engine/cuda_graphs.py`); equals `clamped` row by row."""
        x_norm, stats = self.normalize(x)
        f = self.encode_normalized(x_norm)  # [B, T, d_sae]
        act = f.gather(-1, idx[:, None, :].expand(-1, f.shape[1], -1))  # [B, T, F]
        coef = values[:, None, :].to(act.dtype) - act
        delta = self._delta_to_activation_space(torch.bmm(coef, rows.to(coef.dtype)), stats)  # [B, T, d_in]
        if on is not None:
            delta = delta * on[..., None].to(delta.dtype)
        return x + delta.to(x.dtype)

    def top_features(self, x: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """x [..., d_in] -> (values, indices) of the n largest feature activations per token, each [..., n],
        sorted descending (SAE dtype): torch.topk over `encode(x)`."""
        return torch.topk(self.encode(x), min(n, self.cfg.d_sae), dim=-1)

    def clamp_full(self, x: Tensor, idx: Tensor, values: Tensor | float) -> Tensor:
        """Reference path for `clamp_delta`: full encode, set features idx to values, decode, add the
        reconstruction error back. Returns the steered activation [..., d_in] (x's dtype), so
        `clamp_full(x, i, v) ~= x + clamp_delta(x, i, v)`."""
        x_norm, stats = self.normalize(x)
        f = self.encode_normalized(x_norm)  # [..., d_sae]
        f_set = f.clone()
        f_set[..., idx] = _as_tensor(values, f_set[..., idx]).expand_as(f_set[..., idx])
        recon = self.denormalize(self.decode_normalized(f), stats)
        steered = self.denormalize(self.decode_normalized(f_set), stats)
        return (steered + (x.to(self.dtype) - recon)).to(x.dtype)

    def steering_vector(
        self, idx: Tensor | Sequence[int], strengths: Tensor | Sequence[float], normalize: bool = False
    ) -> Tensor:
        """sum_i strengths[i] * W_dec[idx[i]] -> [d_in] (SAE dtype); with `normalize`, unit-norm rows (as
        Neuronpedia's normalize_steering). No de-normalisation is applied: W_dec rows are used as stored
        (already in activation units for folded expected_average_only_in SAEs; in the SAE's normalised
        units for layer_norm / constant_norm_rescale SAEs, where the per-token scale is unknown here)."""
        idx_t = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        s = torch.as_tensor(strengths, dtype=self.dtype, device=self.device)
        if idx_t.ndim != 1 or s.shape != idx_t.shape:
            raise SaeError(
                f"steering_vector needs idx and strengths of equal 1-D length, found {list(idx_t.shape)} "
                f"and {list(s.shape)}"
            )
        rows = self.W_dec[idx_t]  # [m, d_in]
        if normalize:
            rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return s @ rows

    def check_features(self, idx: Tensor | Sequence[int]) -> Tensor:
        """Validate user-given feature ids once (range, uniqueness); returns a LongTensor [m] on the
        SAE's device. Raises SaeError."""
        idx_t = torch.as_tensor(idx, dtype=torch.long).flatten().cpu()
        bad = [int(i) for i in idx_t if not 0 <= int(i) < self.cfg.d_sae]
        if bad:
            raise SaeError(f"feature ids {bad[:10]} out of range: this SAE has d_sae={self.cfg.d_sae}")
        if torch.unique(idx_t).numel() != idx_t.numel():
            raise SaeError(f"feature ids must be unique, found {idx_t.tolist()}")
        return idx_t.to(self.device)


def _as_tensor(values: Tensor | float, like: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)
