"""The SAE intervention on a real (tiny) model: exact additive steering, clamping, monitoring, detach."""

from __future__ import annotations

import pytest
import torch

from millm.engine import hookpoints
from millm.engine.intervention import BatchPlan, MonitorConfig, SaeIntervention
from millm.engine.model_loading import load_model
from millm.engine.types import FeatureStrength, SteeringSpec
from millm.sae.loading import load_sae


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture()
def setup(lm, tiny_sae_dir):
    sae = load_sae(tiny_sae_dir)
    hp = hookpoints.resolve_hookpoint(lm.model, sae.cfg.hook_name)
    iv = SaeIntervention(sae=sae, hookpoint=hp, attach_fn=hookpoints.attach, device=lm.device, dtype=lm.dtype)
    yield iv, sae, hp
    iv.detach()


IDS = torch.tensor([[0, 263, 285, 85, 92, 108, 293]])


def _residual(lm, hp, plan_fn):
    seen = {}

    def spy(h):
        seen["h"] = h.detach().clone()

    # Registered after the intervention's hook, so it reads the steered residual.
    with hookpoints.attached(hp, spy):
        plan_fn()
        lm.model(input_ids=IDS)
    return seen["h"]


def test_add_changes_residual_by_exactly_strength_times_decoder_row(lm, setup):
    iv, sae, hp = setup
    iv.set_plan(None)
    base = _residual(lm, hp, lambda: None)
    spec = SteeringSpec((FeatureStrength(7, 4.0), FeatureStrength(30, -2.5)))
    plan = iv.prepare(BatchPlan(steering=[iv.compile(spec)]))
    steered = _residual(lm, hp, lambda: iv.set_plan(plan))
    expected = 4.0 * sae.W_dec[7] - 2.5 * sae.W_dec[30]
    assert torch.allclose(steered - base, expected.expand_as(base), atol=1e-5)


def test_normalized_add_uses_unit_rows(lm, setup):
    iv, sae, hp = setup
    iv.set_plan(None)
    base = _residual(lm, hp, lambda: None)
    plan = iv.prepare(BatchPlan(steering=[iv.compile(SteeringSpec((FeatureStrength(7, 3.0),), normalize=True))]))
    steered = _residual(lm, hp, lambda: iv.set_plan(plan))
    assert torch.allclose((steered - base)[0, 0].norm(), torch.tensor(3.0), atol=1e-4)


def test_special_tokens_can_be_left_unsteered(lm, setup):
    iv, sae, hp = setup
    iv.set_plan(None)
    base = _residual(lm, hp, lambda: None)
    spec = SteeringSpec((FeatureStrength(7, 4.0),), steer_special_tokens=False)
    mask = torch.tensor([[False, True, True, True, True, True, True]])  # BOS (id 0) is special
    plan = iv.prepare(BatchPlan(steering=[iv.compile(spec)], steer_mask=mask))
    steered = _residual(lm, hp, lambda: iv.set_plan(plan))
    assert torch.equal(steered[0, 0], base[0, 0])
    assert not torch.allclose(steered[0, 1], base[0, 1])


def _orthonormal_sae(d_in: int = 64, d_sae: int = 48):
    """Encoder = decoder transpose with orthonormal rows and a large bias, so every feature is active:
    the case where clamping with the error term re-encodes to exactly the clamped value."""
    from millm.sae.base import SaeConfig
    from millm.sae.registry import build_sae

    q, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=torch.Generator().manual_seed(0)))
    w_dec = q[:d_sae].contiguous()
    cfg = SaeConfig(architecture="standard", d_in=d_in, d_sae=d_sae, hook_name="blocks.1.hook_resid_post", layer=1,
                    site="resid_post")
    return build_sae(cfg, {"W_enc": w_dec.T.contiguous(), "W_dec": w_dec, "b_enc": torch.full((d_sae,), 10.0),
                           "b_dec": torch.zeros(d_in)})


def test_clamp_sets_the_feature_and_leaves_others(lm):
    sae = _orthonormal_sae()
    hp = hookpoints.resolve_hookpoint(lm.model, sae.cfg.hook_name)
    iv = SaeIntervention(sae=sae, hookpoint=hp, attach_fn=hookpoints.attach, device=lm.device, dtype=lm.dtype)
    try:
        iv.set_plan(None)
        base = _residual(lm, hp, lambda: None)
        before = sae.encode(base)
        assert (before > 0).all()
        spec = SteeringSpec((FeatureStrength(11, 5.0), FeatureStrength(20, 0.5)), mode="clamp")
        plan = iv.prepare(BatchPlan(steering=[iv.compile(spec)]))
        steered = _residual(lm, hp, lambda: iv.set_plan(plan))
        after = sae.encode(steered)
        assert torch.allclose(after[..., 11], torch.full_like(after[..., 11], 5.0), atol=1e-4)
        assert torch.allclose(after[..., 20], torch.full_like(after[..., 20], 0.5), atol=1e-4)
        others = [j for j in range(sae.cfg.d_sae) if j not in (11, 20)]
        assert torch.allclose(after[..., others], before[..., others], atol=1e-4)
        # The residual moved along the clamped features' decoder rows only.
        delta = steered - base
        expected = (5.0 - before[..., 11:12]) * sae.W_dec[11] + (0.5 - before[..., 20:21]) * sae.W_dec[20]
        assert torch.allclose(delta, expected, atol=1e-4)
    finally:
        iv.detach()


def test_monitoring_equals_direct_encode(lm, setup):
    iv, sae, hp = setup
    iv.set_monitor(MonitorConfig(enabled=True, top_k=5))
    plan = iv.prepare(BatchPlan(steering=[None], monitor=True))
    base = _residual(lm, hp, lambda: iv.set_plan(plan))
    cap = iv.captures[-1]
    vals, idx = torch.topk(sae.encode(base), 5, dim=-1)
    assert torch.allclose(cap.values, vals, atol=1e-5)
    assert torch.equal(cap.indices, idx)
    iv.set_monitor(MonitorConfig(enabled=True, features=(3, 9, 200)))
    base = _residual(lm, hp, lambda: iv.set_plan(plan))
    cap = iv.captures[-1]
    assert torch.allclose(cap.values, sae.encode(base)[..., [3, 9, 200]], atol=1e-5)
    assert cap.indices[0, 0].tolist() == [3, 9, 200]


def test_detach_restores_outputs_bit_for_bit(lm, tiny_sae_dir):
    before = lm.model(input_ids=IDS).logits.clone()
    sae = load_sae(tiny_sae_dir)
    hp = hookpoints.resolve_hookpoint(lm.model, sae.cfg.hook_name)
    iv = SaeIntervention(sae=sae, hookpoint=hp, attach_fn=hookpoints.attach, device=lm.device, dtype=lm.dtype)
    iv.set_plan(iv.prepare(BatchPlan(steering=[iv.compile(SteeringSpec((FeatureStrength(1, 9.0),)))])))
    assert not torch.equal(lm.model(input_ids=IDS).logits, before)
    iv.detach()
    assert torch.equal(lm.model(input_ids=IDS).logits, before)
