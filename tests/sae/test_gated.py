from __future__ import annotations

import torch

from tests.sae.builders import make_sae


def test_gate_times_magnitude() -> None:
    sae = make_sae("gated", apply_b_dec_to_input=True)
    x = torch.randn(30, 16)
    z = (x - sae.b_dec) @ sae.W_enc
    gate = (z + sae.b_gate) > 0
    mag = torch.relu(z * torch.exp(sae.r_mag) + sae.b_mag)
    f = sae.encode(x)
    torch.testing.assert_close(f, mag * gate)
    assert (gate & (mag > 0)).any() and (~gate & (mag > 0)).any(), "both gate outcomes are exercised"


def test_fold_decoder_norm() -> None:
    sae = make_sae("gated", apply_b_dec_to_input=True)
    x = torch.randn(7, 16)
    n = sae.W_dec.norm(dim=-1)
    f, y = sae.encode(x), sae(x)
    sae.fold_decoder_norm()
    torch.testing.assert_close(sae.encode(x), f * n, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x), y, atol=1e-5, rtol=1e-5)
