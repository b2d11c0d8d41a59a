"""Standard (ReLU) SAE: f = ReLU((x' - b_dec?) W_enc + b_enc)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from millm.sae.base import Sae


class StandardSae(Sae):
    architecture: ClassVar[str] = "standard"

    def encode_normalized(self, x_norm: Tensor) -> Tensor:
        # x_norm: [..., d_in] -> [..., d_sae]
        return torch.relu(self._sae_in(x_norm) @ self.W_enc + self.b_enc)

    def encode_selected_normalized(self, x_norm: Tensor, idx: Tensor) -> Tensor:
        # x_norm: [..., d_in], idx: [m] -> [..., m]
        return torch.relu(self._sae_in(x_norm) @ self.W_enc.index_select(1, idx) + self.b_enc.index_select(0, idx))
