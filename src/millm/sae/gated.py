"""Gated SAE: f = 1[x' W_enc + b_gate > 0] * ReLU(x' (W_enc * exp(r_mag)) + b_mag).

`b_enc` holds the gate bias (SAELens' `b_gate`); loaders may pass either name. `b_mag` and `r_mag` are [d_sae].
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from millm.sae.base import Sae


class GatedSae(Sae):
    architecture: ClassVar[str] = "gated"
    extra_tensors: ClassVar[tuple[str, ...]] = ("b_mag", "r_mag")

    b_mag: Tensor  # [d_sae]
    r_mag: Tensor  # [d_sae]

    def _fold_decoder_norm_params(self, n: Tensor) -> None:
        self.b_mag = self.b_mag * n  # gate: sign of (x W_enc + b_gate) * n is unchanged

    @property
    def b_gate(self) -> Tensor:
        return self.b_enc

    def encode_normalized(self, x_norm: Tensor) -> Tensor:
        # x_norm: [..., d_in] -> [..., d_sae]
        z = self._sae_in(x_norm) @ self.W_enc  # [..., d_sae]
        gate = (z + self.b_enc) > 0
        mag = torch.relu(z * torch.exp(self.r_mag) + self.b_mag)
        return mag * gate.to(mag.dtype)

    def encode_selected_normalized(self, x_norm: Tensor, idx: Tensor) -> Tensor:
        # x_norm: [..., d_in], idx: [m] -> [..., m]
        z = self._sae_in(x_norm) @ self.W_enc.index_select(1, idx)  # [..., m]
        gate = (z + self.b_enc.index_select(0, idx)) > 0
        mag = torch.relu(z * torch.exp(self.r_mag.index_select(0, idx)) + self.b_mag.index_select(0, idx))
        return mag * gate.to(mag.dtype)
