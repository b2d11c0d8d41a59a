from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from millm.sae.base import SaeConfig
from millm.sae.registry import SAE_CLASSES, build_sae, get_sae_class, register_sae_class
from millm.sae.standard import StandardSae


def test_aliases() -> None:
    assert get_sae_class("relu") is StandardSae
    assert get_sae_class("jump_relu").architecture == "jumprelu"


def test_register_a_new_architecture() -> None:
    class AbsSae(StandardSae):
        architecture: ClassVar[str] = "test_abs"

        def encode_normalized(self, x_norm: Tensor) -> Tensor:
            return (self._sae_in(x_norm) @ self.W_enc + self.b_enc).abs()

    register_sae_class(AbsSae)
    try:
        t = {"W_enc": torch.eye(2), "W_dec": torch.eye(2), "b_enc": torch.zeros(2), "b_dec": torch.zeros(2)}
        sae = build_sae(SaeConfig(architecture="test_abs", d_in=2, d_sae=2), t)
        assert sae.encode(torch.tensor([-1.0, 2.0])).tolist() == [1.0, 2.0]
    finally:
        SAE_CLASSES.pop("test_abs")
