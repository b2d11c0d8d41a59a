from __future__ import annotations

import torch

from tests.sae.builders import make_sae


def test_relu_of_affine_with_optional_b_dec_subtraction() -> None:
    for apply in (False, True):
        sae = make_sae("standard", apply_b_dec_to_input=apply)
        x = torch.randn(5, 16)
        x_in = x - sae.b_dec if apply else x
        torch.testing.assert_close(sae.encode(x), torch.relu(x_in @ sae.W_enc + sae.b_enc))
        f = sae.encode(x)
        torch.testing.assert_close(sae.decode(f), f @ sae.W_dec + sae.b_dec)
