"""Sae behaviour shared by every architecture: normalisation, selected encoding, clamping, steering vectors."""

from __future__ import annotations

import math

import pytest
import torch

from millm.errors import SaeError, SaeMismatch
from millm.sae.base import SaeConfig
from millm.sae.registry import build_sae
from tests.sae.builders import make_sae

ARCHS = ["standard", "jumprelu", "topk", "gated"]
NORMS = ["none", "constant_norm_rescale", "layer_norm", "center"]


def _make(arch: str, norm: str, **kw: object):
    if norm == "center":
        return make_sae(arch, center_input=True, apply_b_dec_to_input=True, **kw)
    return make_sae(arch, normalize_activations=norm, apply_b_dec_to_input=arch != "jumprelu", **kw)


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn(*shape, generator=g) + 0.5


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", NORMS)
def test_encode_selected_matches_full_encode(arch: str, norm: str) -> None:
    sae = _make(arch, norm)
    x = _x(2, 5, 16)
    idx = torch.tensor([3, 0, 17, 63])
    with torch.inference_mode():
        full = sae.encode(x)
        sel = sae.encode_selected(x, idx)
    assert full.shape == (2, 5, 64) and sel.shape == (2, 5, 4)
    torch.testing.assert_close(sel, full[..., idx], rtol=0, atol=1e-6)
    assert (full > 0).any(), "random SAE should have active features"


def _clamp() -> tuple[torch.Tensor, torch.Tensor]:
    """The clamp these tests share: three features, set to a positive value, zero and a negative value."""
    return torch.tensor([5, 2, 40]), torch.tensor([4.0, 0.0, -1.5])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", NORMS)
def test_clamp_delta_agrees_with_reference_path(arch: str, norm: str) -> None:
    sae = _make(arch, norm)
    x = _x(3, 4, 16)
    idx, values = _clamp()
    with torch.inference_mode():
        fast = x + sae.clamp_delta(x, idx, values)
        slow = sae.clamp_full(x, idx, values)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", NORMS)
def test_compiled_clamp_agrees_with_reference_path(arch: str, norm: str) -> None:
    sae = _make(arch, norm)
    x = _x(3, 4, 16)
    idx, values = _clamp()
    mask = torch.tensor([[True, False, True, True]] * 3)
    with torch.inference_mode():
        clamp = sae.compile_clamp(idx, values)
        slow = sae.clamp_full(x, idx, values)
        torch.testing.assert_close(sae.clamped(x, clamp), slow, rtol=0, atol=1e-5)
        masked = sae.clamped(x, clamp, mask)
        torch.testing.assert_close(masked, torch.where(mask[..., None], slow, x), rtol=0, atol=1e-5)
        xb = x.to(torch.bfloat16)
        assert sae.clamped(xb, clamp).dtype == torch.bfloat16


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", NORMS)
def test_per_row_clamps_agree_with_each_rows_own_clamp(arch: str, norm: str) -> None:
    # clamped_rows (the CUDA-graph form: fixed-shape per-row clamps, zero-padded) equals `clamped` row by row.
    sae = _make(arch, norm)
    x = _x(3, 2, 16)
    clamps = [sae.compile_clamp(*_clamp()), None,
              sae.compile_clamp(torch.tensor([7]), torch.tensor([2.5]))]
    width = 4
    idx = torch.zeros(3, width, dtype=torch.long)
    vals = torch.zeros(3, width)
    rows = torch.zeros(3, width, 16)
    for b, c in enumerate(clamps):
        if c is not None:
            m = c.idx.shape[0]
            idx[b, :m], vals[b, :m], rows[b, :m] = c.idx, c.values, c.rows
    on = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    with torch.inference_mode():
        got = sae.clamped_rows(x, idx, vals, rows, on)
        for b, c in enumerate(clamps):
            want = x[b] if c is None else sae.clamped(x[b : b + 1], c, on[b : b + 1])[0]
            torch.testing.assert_close(got[b], want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_clamp_with_per_token_values_and_scalar(arch: str) -> None:
    sae = make_sae(arch)
    x = _x(2, 3, 16)
    idx = torch.tensor([1, 9])
    per_token = torch.rand(2, 3, 2) * 5
    with torch.inference_mode():
        torch.testing.assert_close(x + sae.clamp_delta(x, idx, per_token), sae.clamp_full(x, idx, per_token), atol=1e-5, rtol=0)
        torch.testing.assert_close(x + sae.clamp_delta(x, idx, 2.0), sae.clamp_full(x, idx, 2.0), atol=1e-5, rtol=0)


def test_clamp_delta_for_norm_none_is_value_minus_activation_times_decoder_row() -> None:
    sae = make_sae("standard")
    x = _x(4, 16)
    idx = torch.tensor([7])
    f = sae.encode(x)[..., 7:8]
    expected = (10.0 - f) * sae.W_dec[7]
    torch.testing.assert_close(sae.clamp_delta(x, idx, torch.tensor([10.0])), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["standard", "jumprelu"])
def test_clamped_feature_reencodes_to_its_value_and_others_barely_move(arch: str) -> None:
    # Exact case: orthonormal decoder rows, a tied encoder, and feature 4 active on every token (large bias),
    # so pre_4(x + delta) = pre_4(x) + (6 - f_4(x)) = 6 and every other pre-activation is untouched.
    sae = make_sae(arch, d_in=32, d_sae=16, apply_b_dec_to_input=True)
    q, _ = torch.linalg.qr(torch.randn(32, 16, generator=torch.Generator().manual_seed(3)))
    sae.W_dec = q.T.contiguous()  # [d_sae, d_in], orthonormal rows
    sae.W_enc = q.contiguous()  # [d_in, d_sae] = W_dec.T
    sae.b_enc = sae.b_enc.clone().index_fill_(0, torch.tensor([4]), 20.0)
    x = _x(5, 32)
    idx = torch.tensor([4])
    before = sae.encode(x)
    steered = x + sae.clamp_delta(x, idx, torch.tensor([6.0]))
    after = sae.encode(steered)
    torch.testing.assert_close(after[..., 4], torch.full((5,), 6.0), atol=1e-5, rtol=0)
    others = torch.ones(16, dtype=torch.bool)
    others[4] = False
    torch.testing.assert_close(after[..., others], before[..., others], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", NORMS)
def test_forward_is_decode_of_encode(arch: str, norm: str) -> None:
    sae = _make(arch, norm)
    x = _x(2, 16)
    x_norm, stats = sae.normalize(x)
    expected = sae.decode(sae.encode(x), stats)
    torch.testing.assert_close(sae(x), expected)
    assert sae.encode_normalized(x_norm).shape == (2, 64)


def test_layer_norm_matches_saelens_formula() -> None:
    sae = make_sae("standard", normalize_activations="layer_norm")
    x = _x(3, 16)
    x_norm, stats = sae.normalize(x)
    mu, std = x.mean(-1, keepdim=True), (x - x.mean(-1, keepdim=True)).std(-1, keepdim=True)
    torch.testing.assert_close(x_norm, (x - mu) / (std + 1e-5))
    torch.testing.assert_close(sae.denormalize(x_norm, stats), x_norm * std + mu)


def test_constant_norm_rescale_scales_each_token_to_sqrt_d_in() -> None:
    sae = make_sae("standard", normalize_activations="constant_norm_rescale")
    x = _x(3, 16)
    x_norm, stats = sae.normalize(x)
    torch.testing.assert_close(x_norm.norm(dim=-1), torch.full((3,), math.sqrt(16)))
    torch.testing.assert_close(sae.denormalize(x_norm, stats), x)


def test_decode_without_stats_is_refused_for_per_token_norms() -> None:
    sae = make_sae("standard", normalize_activations="layer_norm")
    with pytest.raises(SaeError, match="stats"):
        sae.decode(sae.encode(_x(2, 16)))


@pytest.mark.parametrize("arch", ARCHS)
def test_folded_expected_average_scaling_equals_scaling_the_input(arch: str) -> None:
    s = 2.5
    ref = make_sae(arch, apply_b_dec_to_input=True)
    folded = make_sae(arch, apply_b_dec_to_input=True, normalize_activations="expected_average_only_in")
    folded.fold_norm_scaling_factor(s)
    x = _x(4, 16)
    f_ref = ref.encode(s * x)
    f_fold = folded.encode(x)
    if arch == "topk":
        f_ref = f_ref.clone()  # topk acts are unchanged too (no decoder-norm rescale here)
    torch.testing.assert_close(f_fold, f_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(folded.decode(f_fold), ref.decode(f_ref) / s, atol=1e-5, rtol=1e-5)
    assert folded.cfg.norm_scaling_factor == s


def test_steering_vector_is_weighted_sum_of_decoder_rows() -> None:
    sae = make_sae("standard")
    v = sae.steering_vector(torch.tensor([1, 5]), torch.tensor([2.0, -3.0]))
    torch.testing.assert_close(v, 2.0 * sae.W_dec[1] - 3.0 * sae.W_dec[5])
    u = sae.steering_vector([1, 5], [2.0, -3.0], normalize=True)
    rows = sae.W_dec[[1, 5]]
    rows = rows / rows.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(u, 2.0 * rows[0] - 3.0 * rows[1])
    with pytest.raises(SaeError, match="equal"):
        sae.steering_vector([1, 2], [1.0])


def test_dtypes_and_to() -> None:
    sae = make_sae("jumprelu")
    x = _x(2, 16).to(torch.bfloat16)
    assert sae.encode(x).dtype == torch.float32
    assert sae(x).dtype == torch.bfloat16
    assert sae.clamp_delta(x, torch.tensor([0]), torch.tensor([1.0])).dtype == torch.bfloat16
    out = sae.to("cpu", torch.float16)
    assert out is sae and sae.W_enc.dtype == torch.float16 and sae.threshold.dtype == torch.float16
    assert sae.cfg.dtype == "float16"
    assert sae.encode(x).dtype == torch.float16
    assert sae.to(torch.float32).cfg.dtype == "float32" and sae.W_dec.dtype == torch.float32
    assert not any(p.requires_grad for p in sae.buffers()) and not list(sae.parameters())


def test_check_features() -> None:
    sae = make_sae("standard", d_sae=8)
    assert sae.check_features([1, 2]).tolist() == [1, 2]
    with pytest.raises(SaeError, match="d_sae=8"):
        sae.check_features([3, 8])
    with pytest.raises(SaeError, match="unique"):
        sae.check_features([3, 3])


def test_constructor_reports_expected_vs_found_shapes() -> None:
    cfg = SaeConfig(architecture="standard", d_in=4, d_sae=8)
    good = {"W_enc": torch.zeros(4, 8), "W_dec": torch.zeros(8, 4), "b_enc": torch.zeros(8), "b_dec": torch.zeros(4)}
    build_sae(cfg, good)
    with pytest.raises(SaeMismatch, match=r"W_dec: expected shape \[8, 4\].*found \[4, 8\]"):
        build_sae(cfg, {**good, "W_dec": torch.zeros(4, 8)})
    with pytest.raises(SaeError, match="threshold"):
        build_sae(SaeConfig(architecture="jumprelu", d_in=4, d_sae=8), good)
    with pytest.raises(SaeError, match="unsupported SAE architecture"):
        build_sae(SaeConfig(architecture="mystery", d_in=4, d_sae=8), good)
    with pytest.raises(SaeError, match="normalize_activations"):
        SaeConfig(architecture="standard", d_in=4, d_sae=8, normalize_activations="whiten")
