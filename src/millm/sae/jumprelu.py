"""JumpReLU SAE: f = ReLU(pre) * 1[pre > threshold], threshold [d_sae] per feature (Gemma Scope, Llama Scope,
saved BatchTopK/Matryoshka dictionaries)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from millm.sae.base import Sae


class JumpReluSae(Sae):
    architecture: ClassVar[str] = "jumprelu"
    extra_tensors: ClassVar[tuple[str, ...]] = ("threshold",)

    threshold: Tensor  # [d_sae]

    def _fold_decoder_norm_params(self, n: Tensor) -> None:
        self.threshold = self.threshold * n

    @staticmethod
    def _jump(pre: Tensor, threshold: Tensor) -> Tensor:
        return torch.relu(pre) * (pre > threshold).to(pre.dtype)

    def encode_normalized(self, x_norm: Tensor) -> Tensor:
        # x_norm: [..., d_in] -> [..., d_sae]
        pre = self._sae_in(x_norm) @ self.W_enc + self.b_enc
        return self._jump(pre, self.threshold)

    def encode_selected_normalized(self, x_norm: Tensor, idx: Tensor) -> Tensor:
        # x_norm: [..., d_in], idx: [m] -> [..., m]
        pre = self._sae_in(x_norm) @ self.W_enc.index_select(1, idx) + self.b_enc.index_select(0, idx)
        return self._jump(pre, self.threshold.index_select(0, idx))
