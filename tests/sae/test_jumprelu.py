from __future__ import annotations

import torch

from tests.sae.builders import make_sae


def test_threshold_gates_each_feature() -> None:
    sae = make_sae("jumprelu")
    x = torch.randn(50, 16)
    pre = x @ sae.W_enc + sae.b_enc
    f = sae.encode(x)
    torch.testing.assert_close(f, torch.where(pre > sae.threshold, pre, torch.zeros_like(pre)))
    below = (pre > 0) & (pre <= sae.threshold)
    assert below.any() and (f[below] == 0).all(), "features between 0 and the threshold stay off"


def test_fold_decoder_norm_keeps_reconstruction_and_scales_acts() -> None:
    sae = make_sae("jumprelu")
    x = torch.randn(7, 16)
    n = sae.W_dec.norm(dim=-1)
    f, y = sae.encode(x), sae(x)
    sae.fold_decoder_norm()
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(64))
    torch.testing.assert_close(sae.encode(x), f * n, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x), y, atol=1e-5, rtol=1e-5)
