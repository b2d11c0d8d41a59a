from __future__ import annotations

import pytest
import torch

from millm.errors import SaeError
from tests.sae.builders import make_sae


def test_keeps_k_largest_then_relu() -> None:
    sae = make_sae("topk", k=5)
    x = torch.randn(20, 16)
    pre = x @ sae.W_enc + sae.b_enc
    f = sae.encode(x)
    assert ((f != 0).sum(-1) <= 5).all()
    top = pre.topk(5, dim=-1)
    expected = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    torch.testing.assert_close(f, expected)


def test_rescale_acts_by_decoder_norm_ranks_by_scaled_pre_and_decodes_back() -> None:
    sae = make_sae("topk", k=4, rescale_acts_by_decoder_norm=True)
    sae.W_dec = sae.W_dec * torch.linspace(0.2, 5.0, 64)[:, None]
    x = torch.randn(9, 16)
    n = sae.W_dec.norm(dim=-1)
    scaled = (x @ sae.W_enc + sae.b_enc) * n
    top = scaled.topk(4, dim=-1)
    f = sae.encode(x)
    torch.testing.assert_close(f, torch.zeros_like(scaled).scatter(-1, top.indices, torch.relu(top.values)))
    torch.testing.assert_close(sae.decode(f), (f / n) @ sae.W_dec + sae.b_dec)
    y = sae(x)
    sae.fold_decoder_norm()
    assert not sae.cfg.rescale_acts_by_decoder_norm
    torch.testing.assert_close(sae(x), y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.encode(x), f, atol=1e-5, rtol=1e-5)


def test_bad_k_and_unfoldable() -> None:
    with pytest.raises(SaeError, match="k"):
        make_sae("topk", k=0)
    with pytest.raises(SaeError, match="rescale_acts_by_decoder_norm"):
        make_sae("topk").fold_decoder_norm()
