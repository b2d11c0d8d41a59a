"""TopK SAE: keep the k largest pre-activations per token, ReLU on the kept values (SAELens `topk`; the same
as sparsify's and dictionary_learning's ReLU-then-TopK).

With `rescale_acts_by_decoder_norm` the ranking uses pre * ||W_dec[i]|| and decoding divides by ||W_dec[i]||
again (SAELens semantics). Which features make the top k depends on every pre-activation, so `encode_selected`
needs the whole encoder product; it then needs only the k-th largest pre-activation per token, not the dense
activation vector: feature i is active iff pre_i >= that value, and is then ReLU(pre_i). (Exactly tied
pre-activations at the k-th place all count as active, where torch.topk would keep an arbitrary k of them.)
`top_features` with n <= k is the top n of the pre-activations, ReLU'd.

The pre-activation is one addmm: `apply_b_dec_to_input`'s x - b_dec is folded into the bias
(b_enc - b_dec W_enc), computed once per set of weights and rebuilt when a weight tensor is replaced
(`to`, the folds). Weights are never modified in place.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, cast

import torch
from torch import Tensor

from millm.errors import SaeError
from millm.sae.base import Sae


class TopKSae(Sae):
    architecture: ClassVar[str] = "topk"
    selective_encode: ClassVar[bool] = False
    _encoder_cache: tuple[tuple[Any, ...], Tensor, Tensor | None] | None = None

    def _check_params(self) -> None:
        k = self.cfg.k
        if k is None or not 0 < k <= self.cfg.d_sae:
            raise SaeError(f"topk SAE needs 0 < k <= d_sae={self.cfg.d_sae}, found k={k}")

    def _fold_decoder_norm_params(self, n: Tensor) -> None:
        if not self.cfg.rescale_acts_by_decoder_norm:
            raise SaeError("cannot fold decoder norms into a topk SAE without rescale_acts_by_decoder_norm: "
                           "scaling pre-activations would change which k features win")
        # ranking already used pre * n; after folding the norms are 1 and pre carries n itself
        self.cfg = replace(self.cfg, rescale_acts_by_decoder_norm=False)

    def _decoder_norms(self, idx: Tensor | None = None) -> Tensor:
        w = self.W_dec if idx is None else self.W_dec[idx]
        norms: Tensor = w.norm(dim=-1)  # [d_sae] or [m]
        return norms

    def _encoder(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """(W_enc, bias [d_sae], decoder norms [d_sae] or None) with pre = (x_norm W_enc + bias) * norms."""
        buf = self._buffers  # the same tensors as self.W_enc etc., without nn.Module.__getattr__ per name
        w_enc = cast(Tensor, buf["W_enc"])
        key = (self.cfg, w_enc, buf["b_enc"], buf["b_dec"], buf["W_dec"])
        hit = self._encoder_cache
        if hit is None or any(a is not b for a, b in zip(hit[0], key, strict=True)):
            bias = self.b_enc - self.b_dec @ self.W_enc if self.cfg.apply_b_dec_to_input else self.b_enc
            norms = self._decoder_norms() if self.cfg.rescale_acts_by_decoder_norm else None
            hit = self._encoder_cache = (key, bias.contiguous(), norms)
        return w_enc, hit[1], hit[2]

    def prepare_encoder(self) -> None:
        self._encoder()

    def _pre(self, x_norm: Tensor) -> Tensor:
        # x_norm: [..., d_in] -> pre-activations [N, d_sae], N = the number of tokens
        w, bias, norms = self._encoder()
        pre = torch.addmm(bias, x_norm.reshape(-1, x_norm.shape[-1]), w)
        return pre.mul_(norms) if norms is not None else pre

    def encode_normalized(self, x_norm: Tensor) -> Tensor:
        # x_norm: [..., d_in] -> [..., d_sae]
        pre = self._pre(x_norm)
        top = torch.topk(pre, k=self.cfg.k or 0, dim=-1, sorted=False)
        f = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu_())
        return f.view(*x_norm.shape[:-1], self.cfg.d_sae)

    def encode_selected_normalized(self, x_norm: Tensor, idx: Tensor) -> Tensor:
        # x_norm: [..., d_in], idx: [m] -> [..., m]
        # ReLU first: it keeps the order, so the k-th largest of ReLU(pre) is ReLU of the k-th largest pre.
        pre = self._pre(x_norm).relu_()  # [N, d_sae]
        kth = torch.topk(pre, k=self.cfg.k or 0, dim=-1).values[:, -1:]  # [N, 1], sorted: the k-th largest
        sel = pre.index_select(-1, idx)  # [N, m]
        return (sel * (sel >= kth)).view(*x_norm.shape[:-1], idx.shape[0])

    def top_features(self, x: Tensor, n: int) -> tuple[Tensor, Tensor]:
        # x: [..., d_in] -> ([..., n], [..., n])
        if n > (self.cfg.k or 0):
            return super().top_features(x, n)
        x_norm, _ = self.normalize(x)
        top = torch.topk(self._pre(x_norm), n, dim=-1)
        shape = (*x.shape[:-1], n)
        return top.values.relu_().view(shape), top.indices.view(shape)

    def decoder_coefficients(self, f: Tensor, idx: Tensor | None = None) -> Tensor:
        if self.cfg.rescale_acts_by_decoder_norm:
            return f / self._decoder_norms(idx)
        return f
