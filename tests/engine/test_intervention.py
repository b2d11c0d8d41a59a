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


def _hook_of(sae, lm):
    """An intervention whose hook is called directly (not attached), and its hook function."""
    hp = hookpoints.resolve_hookpoint(lm.model, sae.cfg.hook_name)
    seen = {}
    iv = SaeIntervention(sae=sae, hookpoint=hp, device=lm.device, dtype=lm.dtype,
                         attach_fn=lambda point, fn: seen.setdefault("fn", fn) and None)
    return iv, seen["fn"]


@pytest.mark.parametrize("arch", ["topk", "standard"])
@pytest.mark.parametrize("masked", [False, True])
def test_batched_clamps_equal_each_rows_own_clamp(lm, arch, masked):
    from tests.sae.builders import make_sae

    sae = make_sae(arch, d_in=64, d_sae=256, k=16, apply_b_dec_to_input=True, hook_name="blocks.1.hook_resid_post")
    iv, hook = _hook_of(sae, lm)
    a = iv.compile(SteeringSpec((FeatureStrength(3, 4.0), FeatureStrength(90, 0.0)), mode="clamp"))
    b = iv.compile(SteeringSpec((FeatureStrength(17, 2.0),), mode="clamp"))
    add = iv.compile(SteeringSpec((FeatureStrength(5, 1.5),)))
    h = torch.randn(5, 3, 64, generator=torch.Generator().manual_seed(2))
    mask = torch.rand(5, 3, generator=torch.Generator().manual_seed(3)) > 0.4 if masked else None
    with torch.inference_mode():
        for rows in ([a, b, None, a, add], [a, a, a, a, a], [b]):
            hh = h[: len(rows)]
            m = mask[: len(rows)] if mask is not None else None
            iv.set_plan(iv.prepare(BatchPlan(steering=rows, steer_mask=m)))
            out = hook(hh)
            for r, c in enumerate(rows):
                keep = m[r, :, None] if m is not None else torch.ones(3, 1, dtype=torch.bool)
                if c is None:
                    want = hh[r]
                elif c.mode == "add":
                    want = hh[r] + keep * c.vector
                else:
                    want = torch.where(keep, sae.clamp_full(hh[r], c.idx, c.values), hh[r])
                torch.testing.assert_close(out[r], want, atol=1e-5, rtol=0)
    assert iv.prepare(BatchPlan(steering=[a, a])).clamp_groups[0][0] is None  # whole batch: no gather


@pytest.mark.parametrize("top_k", [4, 16, 40])
def test_monitoring_a_topk_sae_equals_direct_encode(lm, top_k):
    from tests.sae.builders import make_sae

    sae = make_sae("topk", d_in=64, d_sae=256, k=16, apply_b_dec_to_input=True, hook_name="blocks.1.hook_resid_post")
    iv, hook = _hook_of(sae, lm)
    h = torch.randn(4, 2, 64, generator=torch.Generator().manual_seed(4))
    plan = iv.prepare(BatchPlan(steering=[None] * 4, monitor=True))
    with torch.inference_mode():
        f = sae.encode(h)
        iv.set_monitor(MonitorConfig(enabled=True, top_k=top_k))
        iv.set_plan(plan)
        assert hook(h) is h
        cap = iv.captures[-1]
        ref = torch.topk(f, top_k, dim=-1)
        torch.testing.assert_close(cap.values, ref.values, atol=1e-5, rtol=0)
        active = ref.values > 0
        assert torch.equal(cap.indices[active], ref.indices[active])
        iv.set_monitor(MonitorConfig(enabled=True, features=(3, 9, 200, 255)))
        iv.set_plan(plan)
        hook(h)
        cap = iv.captures[-1]
        torch.testing.assert_close(cap.values, f[..., [3, 9, 200, 255]], atol=1e-5, rtol=0)
        assert cap.indices.shape == (4, 2, 4) and cap.indices[3, 1].tolist() == [3, 9, 200, 255]


def test_scale_half_moves_the_residual_by_exactly_half(lm, setup):
    # The dial multiplies strengths in the steering service; the added vector is then exactly half (a power of two
    # scales a float32 sum exactly), and the residual moves by half within one rounding of the add.
    from millm.protocol.openai import SteeringIn
    from millm.services.steering import SaeInfo, SteeringService

    iv, sae, hp = setup
    svc = SteeringService(sae_info=lambda: SaeInfo("sae", 256, hp.spec.tl_name, "m", 1))
    feats = [{"index": 7, "strength": 4.0}, {"index": 30, "strength": -2.5}]
    full, _ = svc.resolve(SteeringIn.model_validate({"features": feats}))
    half, receipt = svc.resolve(SteeringIn.model_validate({"features": feats, "scale": 0.5}))
    assert [f.strength for f in half.features] == [2.0, -1.25]
    assert [(f.strength, f.raw_strength) for f in receipt.features] == [(2.0, 4.0), (-1.25, -2.5)]
    iv.set_plan(None)
    base = _residual(lm, hp, lambda: None)
    plan_full = iv.prepare(BatchPlan(steering=[iv.compile(full)]))
    plan_half = iv.prepare(BatchPlan(steering=[iv.compile(half)]))
    assert torch.equal(plan_half.add_matrix, 0.5 * plan_full.add_matrix)
    moved_full = _residual(lm, hp, lambda: iv.set_plan(plan_full)) - base
    moved_half = _residual(lm, hp, lambda: iv.set_plan(plan_half)) - base
    assert torch.allclose(moved_half, 0.5 * moved_full, rtol=0, atol=1e-6)
    off, receipt0 = svc.resolve(SteeringIn.model_validate({"features": feats, "scale": 0}))
    assert off is None and receipt0.scale == 0 and receipt0.hash is None and receipt0.source == "request"
