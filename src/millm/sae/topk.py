"""TopK SAE: keep the k largest pre-activations per token, ReLU on the kept values (SAELens `topk`; the same
as sparsify's and dictionary_learning's ReLU-then-TopK).

With `rescale_acts_by_decoder_norm` the ranking uses pre * ||W_dec[i]|| and decoding divides by ||W_dec[i]||
again (SAELens semantics). `encode_selected` cannot be computed from the selected columns alone -- which
features make the top k depends on all of them -- so it runs the full encode and gathers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import torch
from torch import Tensor

from millm.errors import SaeError
from millm.sae.base import Sae


class TopKSae(Sae):
    architecture: ClassVar[str] = "topk"
    selective_encode: ClassVar[bool] = False

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
        return w.norm(dim=-1)  # [d_sae] or [m]

    def encode_normalized(self, x_norm: Tensor) -> Tensor:
        # x_norm: [..., d_in] -> [..., d_sae]
        pre = self._sae_in(x_norm) @ self.W_enc + self.b_enc
        if self.cfg.rescale_acts_by_decoder_norm:
            pre = pre * self._decoder_norms()
        top = torch.topk(pre, k=self.cfg.k or 0, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def encode_selected_normalized(self, x_norm: Tensor, idx: Tensor) -> Tensor:
        # x_norm: [..., d_in], idx: [m] -> [..., m]
        return self.encode_normalized(x_norm)[..., idx]

    def decoder_coefficients(self, f: Tensor, idx: Tensor | None = None) -> Tensor:
        if self.cfg.rescale_acts_by_decoder_norm:
            return f / self._decoder_norms(idx)
        return f
