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


# The fast paths: k-th largest pre-activation instead of the dense activation vector, compiled clamps, top n of
# the pre-activations. Each must equal the dense reference (encode, then gather / set / topk).

SHAPES = [(1, 1, 16), (3, 16), (8, 1, 16), (2, 5, 16)]


def _x(shape: tuple[int, ...], seed: int = 3) -> torch.Tensor:
    return 2.0 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + 0.3


def _dense_topk(sae, x: torch.Tensor) -> torch.Tensor:
    # SAELens' encode, step by step: pre, (rescale), top k, ReLU on the kept values
    x_norm, _ = sae.normalize(x)
    sae_in = x_norm - sae.b_dec if sae.cfg.apply_b_dec_to_input else x_norm
    pre = sae_in @ sae.W_enc + sae.b_enc
    if sae.cfg.rescale_acts_by_decoder_norm:
        pre = pre * sae.W_dec.norm(dim=-1)
    top = pre.topk(sae.cfg.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))


@pytest.mark.parametrize("k", [1, 5, 32, 64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", ["plain", "b_dec", "rescale", "layer_norm"])
def test_fast_paths_equal_the_dense_encode(k: int, shape: tuple[int, ...], variant: str) -> None:
    sae = make_sae("topk", k=k, apply_b_dec_to_input=variant != "plain",
                   rescale_acts_by_decoder_norm=variant == "rescale",
                   normalize_activations="layer_norm" if variant == "layer_norm" else "none")
    if variant == "rescale":
        sae.W_dec = sae.W_dec * torch.linspace(0.3, 3.0, 64)[:, None]
    x = _x(shape)
    idx = torch.tensor([0, 7, 33, 63, 12, 40])
    values = torch.tensor([3.0, 0.0, -1.0, 2.5, 0.5, 8.0])
    with torch.inference_mode():
        dense = _dense_topk(sae, x)
        torch.testing.assert_close(sae.encode(x), dense, atol=1e-5, rtol=0)
        torch.testing.assert_close(sae.encode_selected(x, idx), dense[..., idx], atol=1e-5, rtol=0)
        for n in (1, 4, k):
            vals, ind = sae.top_features(x, n)
            ref = dense.topk(n, dim=-1)
            torch.testing.assert_close(vals, ref.values, atol=1e-5, rtol=0)
            positive = ref.values > 0  # indices of zero activations are arbitrary ties
            assert torch.equal(ind[positive], ref.indices[positive])
        clamp = sae.compile_clamp(idx, values)
        reference = sae.clamp_full(x, idx, values)
        torch.testing.assert_close(sae.clamped(x, clamp), reference, atol=1e-5, rtol=0)
        torch.testing.assert_close(x + sae.clamp_delta(x, idx, values), reference, atol=1e-5, rtol=0)
        mask = torch.rand(shape[:-1], generator=torch.Generator().manual_seed(1)) > 0.5
        expected = torch.where(mask[..., None], reference, x)
        torch.testing.assert_close(sae.clamped(x, clamp, mask), expected, atol=1e-5, rtol=0)


def test_top_features_beyond_k_fall_back_to_the_dense_vector() -> None:
    sae = make_sae("topk", k=3)
    x = _x((4, 16))
    vals, ind = sae.top_features(x, 10)
    ref = sae.encode(x).topk(10, dim=-1)
    torch.testing.assert_close(vals, ref.values)
    assert (vals[..., 3:] == 0).all()


def test_encoder_cache_follows_replaced_weights() -> None:
    sae = make_sae("topk", k=6, apply_b_dec_to_input=True)
    x = _x((5, 16))
    before = sae.encode(x)
    sae.b_dec = sae.b_dec + 1.0
    torch.testing.assert_close(sae.encode(x), _dense_topk(sae, x), atol=1e-5, rtol=0)
    assert not torch.allclose(sae.encode(x), before)
    sae.to(torch.float64)
    assert sae.encode(x).dtype == torch.float64
    torch.testing.assert_close(sae.encode(x), _dense_topk(sae, x.double()), atol=1e-9, rtol=0)
