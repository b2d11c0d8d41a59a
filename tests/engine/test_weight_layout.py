"""The CPU decode kernel choice: the fastest candidate wins only by a clear margin; input-major weights keep
shapes and values, tied weights are left alone, and outputs are unchanged."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from millm.engine import weight_layout


def _name(w, fn) -> str:
    im = not w.is_contiguous()
    if fn is weight_layout._onednn_linear:
        return weight_layout._ONEDNN_IM if im else "onednn"
    return "input-major" if im else "stored"


def force_choice(monkeypatch, winner: str, *, gain: float = 0.5) -> None:
    """Make each timed product of `winner` take (1 - gain) of the others' time."""

    def fake_seconds(w, x, fn):
        return 1.0 - gain if _name(w, fn) == winner else 1.0

    monkeypatch.setattr(weight_layout, "_product_seconds", fake_seconds)


def _model(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("tied", [True, False])
def test_input_major_keeps_values_and_leaves_tied_weights(monkeypatch, tied):
    force_choice(monkeypatch, "input-major")
    model = _model(tied)
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        want = model(input_ids=ids).logits
    assert weight_layout.choose_layout(model) == "input-major"
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    q = model.model.layers[0].self_attn.q_proj.weight
    assert q.shape == before["model.layers.0.self_attn.q_proj.weight"].shape and not q.is_contiguous()
    assert q.t().is_contiguous()
    assert model.lm_head.weight.is_contiguous() == tied
    if tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)
    assert weight_layout.choose_layout(model) == "stored"  # nothing left to switch


@pytest.mark.skipif(not weight_layout.onednn_available(), reason="torch built without oneDNN")
def test_onednn_leaves_the_weights_and_matches_f_linear(monkeypatch):
    force_choice(monkeypatch, "onednn")
    model = _model(False)
    ptrs = {n: p.data_ptr() for n, p in model.named_parameters()}
    assert weight_layout.choose_layout(model) == "onednn"
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == ptrs
    fn = weight_layout.linear_fn("onednn")
    w, b = torch.randn(48, 32), torch.randn(48)
    for rows in (1, 3, 8):
        x = torch.randn(rows, 1, 32)
        torch.testing.assert_close(fn(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-5, rtol=1e-5)
    x = torch.randn(2, 1, 32)
    torch.testing.assert_close(fn(x, w.t().contiguous().t(), None), x @ w.t(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("winner", ["input-major", "onednn"])
def test_no_switch_without_a_clear_gain(monkeypatch, winner):
    force_choice(monkeypatch, winner, gain=weight_layout.MIN_GAIN / 2)
    model = _model(False)
    assert weight_layout.choose_layout(model) == "stored"
    assert all(m.weight.is_contiguous() for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_real_timing_picks_a_candidate():
    # Unforced: whatever this machine's timings say, the choice is one of the candidates and the model still
    # computes the same logits.
    model = _model(False)
    ids = torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
    assert weight_layout.choose_layout(model, rounds=1) in ("stored", "input-major", "onednn")
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not weight_layout.onednn_available(), reason="torch built without oneDNN")
def test_each_batch_regime_gets_its_own_kernel(monkeypatch):
    # oneDNN clearly faster for 8 rows only: one-row steps keep MKL on the stored weights, batched steps use oneDNN
    def fake_seconds(w, x, fn):  # (by the weight's size: a prefill's fused products stand for the unfused ones)
        if fn is weight_layout._onednn_linear:
            return w.numel() * (0.5 if x.shape[0] > 1 else 1.0)
        return w.numel() * (1.0 if w.is_contiguous() else 0.97)

    monkeypatch.setattr(weight_layout, "_product_seconds", fake_seconds)
    model = _model(False)
    kernels = weight_layout.choose_kernels(model)
    assert kernels == weight_layout.Kernels(one="stored", batched="onednn", onednn=True,
                                            packed=weight_layout.packing_fits(model))
    assert model.model.layers[0].self_attn.q_proj.weight.is_contiguous()  # the layout stays as stored


# Median step estimates (ms) as the 350M model timed them on one thread of the 2-core machine (issue #18): input-major
# was clearly fastest for one row, oneDNN for eight on either layout.
TIMED_350M = {"stored": {1: 8.34, 8: 30.0}, "input-major": {1: 7.33, 8: 30.0}, "onednn": {1: 8.10, 8: 15.0},
              weight_layout._ONEDNN_IM: {8: 16.0}}


def test_the_one_row_regime_is_judged_on_its_own_times():
    # summed seconds (7.33 + 30 against 8.34 + 15) put one-row steps on the stored layout, 14% slower than
    # input-major; judged alone, one row takes input-major and eight rows oneDNN on that layout
    kernels = weight_layout._plan(TIMED_350M)
    assert kernels == weight_layout.Kernels("input-major", "onednn") and kernels.layout == "input-major"
    # without oneDNN on that layout, input-major would cost eight rows 2x (MKL) for a 14% one-row gain: stored stays
    assert weight_layout._plan({c: t for c, t in TIMED_350M.items() if c != weight_layout._ONEDNN_IM}) == \
        weight_layout.Kernels("stored", "onednn")


def test_the_batch_regime_is_judged_on_its_own_times():
    ms = {c: dict(t) for c, t in TIMED_350M.items()}
    ms[weight_layout._ONEDNN_IM] = {8: 30.0}  # oneDNN twice as slow on input-major weights: the batch regime
    assert weight_layout._plan(ms) == weight_layout.Kernels("stored", "onednn")  # would lose more than one row gains
    ms["onednn"] = {1: 7.0, 8: 15.0}  # oneDNN clearly fastest for one row too: one layout, oneDNN for both
    assert weight_layout._plan(ms) == weight_layout.Kernels("onednn", "onednn")
    ms["input-major"] = {1: 6.9, 8: 30.0}  # input-major only 1% faster than that: no clear win, no new layout
    assert weight_layout._plan(ms) == weight_layout.Kernels("onednn", "onednn")


def _deep_model(*, tied: bool, layers: int = 6, vocab: int = 200) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=160, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("tied", [False, True])
def test_the_sample_is_one_decode_step_of_products_scaled_to_the_model(monkeypatch, tied):
    # the first layers stand for all, the first rows of the head for the whole head: scaled, the sample holds
    # exactly the weights one decode step streams, in the lean decoder's fused shapes
    model = _deep_model(tied=tied)
    layer_bytes = sum(p.numel() * 4 for n, p in model.model.layers[0].named_parameters() if "proj" in n)
    monkeypatch.setattr(weight_layout, "LAYER_SAMPLE_BYTES", 2 * layer_bytes)  # two layers of six
    monkeypatch.setattr(weight_layout, "HEAD_SAMPLE_BYTES", 50 * 64 * 4)  # 50 of the head's 200 rows
    movable = {m.weight.data_ptr() for m in weight_layout._candidates(model)}
    sample = weight_layout._decode_sample(model, movable, fused=True)
    step = sum(m.weight.numel() for m in model.modules() if type(m) is torch.nn.Linear)
    assert sum(p.scale * p.weight.numel() for p in sample) == pytest.approx(step)
    d, kv, ff = 64, 2 * 16, 160
    assert [tuple(p.weight.shape) for p in sample] == [(d + 2 * kv, d), (d, d), (2 * ff, d), (d, ff)] * 2 + [(50, d)]
    assert [p.scale for p in sample] == [3.0] * 8 + [4.0]
    assert [p.movable for p in sample] == [True] * 8 + [not tied]  # a tied head keeps its layout
    unfused = weight_layout._decode_sample(model, movable, fused=False)
    assert len(unfused) == 7 * 2 + 1 and sum(p.scale * p.weight.numel() for p in unfused) == pytest.approx(step)
    # a layer larger than the sample: the first rows of each of its weights, scaled up, still one step
    monkeypatch.setattr(weight_layout, "LAYER_SAMPLE_BYTES", layer_bytes // 4)
    cut = weight_layout._decode_sample(model, movable, fused=True)
    assert [p.weight.shape[1] for p in cut] == [d, d, d, ff, d]
    assert [p.weight.shape[0] for p in cut[:4]] == [16 + 8 + 8, 16, 40 + 40, 16]  # a quarter of each weight's rows
    assert sum(p.weight.numel() * 4 for p in cut[:4]) <= layer_bytes // 4 + 7 * ff * 4
    assert sum(p.scale * p.weight.numel() for p in cut) == pytest.approx(step)


def test_the_choice_weighs_every_shape_of_the_step_not_the_lm_head_alone(monkeypatch):
    # a fake machine where input-major streams the layers' shapes 30% faster and the head's shape 10% slower; the
    # head (4000 x 64) holds about half the step's weight: timed alone it says stored, the whole step input-major
    def fake_seconds(w, x, fn):
        name = _name(w, fn)
        head = w.shape == (1000, 64)  # the head's first 1000 rows, standing for its 4000
        factor = 1.0 if name == "stored" else (1.1 if head else 0.7) if name == "input-major" else 2.0
        return w.numel() * factor

    monkeypatch.setattr(weight_layout, "_product_seconds", fake_seconds)
    monkeypatch.setattr(weight_layout, "HEAD_SAMPLE_BYTES", 1000 * 64 * 4)
    model = _deep_model(tied=False, vocab=4000)
    med = weight_layout.time_candidates(model, rounds=1)
    head = 4000 * 64
    assert med["stored"][1] == pytest.approx(sum(m.weight.numel() for m in model.modules()
                                                 if type(m) is torch.nn.Linear))
    assert med["input-major"][1] == pytest.approx(0.7 * (med["stored"][1] - head) + 1.1 * head)
    assert weight_layout.choose_kernels(model) == weight_layout.Kernels(
        "input-major", "input-major", onednn=weight_layout.onednn_available(), packed=weight_layout.packing_fits(model))


def test_timing_a_350m_sized_step_stays_short():
    # start-up cost: the sample is bounded (a few layers and part of the head), not the whole model
    cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=24,
                      num_attention_heads=16, max_position_embeddings=32)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    sample = weight_layout._decode_sample(model, set(), fused=True)
    sampled = sum(p.weight.numel() * 4 for p in sample)
    assert sampled <= weight_layout.LAYER_SAMPLE_BYTES + 60 * 2**20 + weight_layout.HEAD_SAMPLE_BYTES
    assert sampled < 0.2 * sum(p.numel() * 4 for p in model.parameters())


def test_the_options_timed_on_real_steps_share_the_layout():
    # the worker's thread policy times real decode steps with each option (engine/threads.py): the product timing's
    # pick first, then the other kernel on the same weights; never oneDNN for one row on input-major weights
    assert weight_layout.Kernels("onednn", "onednn", onednn=True).options(False) == ("onednn", "stored")
    assert weight_layout.Kernels("stored", "onednn", onednn=True).options(False) == ("stored", "onednn")
    assert weight_layout.Kernels("stored", "onednn", onednn=True).options(True) == ("onednn", "stored")
    im = weight_layout.Kernels("input-major", "onednn", onednn=True)
    assert im.options(False) == ("input-major",) and im.options(True) == ("onednn", "input-major")
    assert weight_layout.Kernels("stored", "stored").options(True) == ("stored",)  # oneDNN was not a candidate


@pytest.mark.skipif(not weight_layout.onednn_available(), reason="torch built without oneDNN")
def test_choose_kernels_says_whether_onednn_was_timed():
    model = _model(False)
    kernels = weight_layout.choose_kernels(model, rounds=1)
    assert kernels.onednn and kernels.packed == weight_layout.packing_fits(model)
    assert not weight_layout.choose_kernels(_model(False), rounds=1, fused=False).onednn
    assert not weight_layout.choose_kernels(_model(False), rounds=1, fused=False).packed


# ---------------------------------------------------------------------- packed oneDNN weights for batched steps

needs_packing = pytest.mark.skipif(not weight_layout.onednn_available()
                                   or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"),
                                   reason="torch built without oneDNN weight packing")


def test_packed_weights_win_the_batch_regime_only_by_a_clear_margin():
    # eight rows on packed weights clearly faster than the best plain kernel: the batch regime takes them, on the
    # layout the one-row regime chose (packing reorders either layout)
    ms = {c: dict(t) for c, t in TIMED_350M.items()}
    ms[weight_layout.PACKED] = {8: 9.0}
    assert weight_layout._plan(ms) == weight_layout.Kernels("input-major", weight_layout.PACKED)
    del ms["input-major"]
    assert weight_layout._plan(ms) == weight_layout.Kernels("stored", weight_layout.PACKED)
    ms[weight_layout.PACKED] = {8: 15.0 * (1 - weight_layout.MIN_GAIN / 2)}  # within the margin: plain oneDNN stays
    assert weight_layout._plan(ms) == weight_layout.Kernels("stored", "onednn")
    # real steps time the packed kernel against MKL on the same layout (engine/threads.py)
    assert weight_layout.Kernels("stored", weight_layout.PACKED, onednn=True).options(True) == (
        weight_layout.PACKED, "stored")
    assert weight_layout.Kernels("input-major", weight_layout.PACKED, onednn=True).options(True) == (
        weight_layout.PACKED, "input-major")



def test_real_batched_steps_try_packed_weights_whatever_the_products_picked():
    # a product timing disturbed by load can pick plain oneDNN or MKL where packed weights make the faster step (the
    # demo's 8-row step: packed 0.82x MKL's, plain oneDNN 1.02-1.08x); the kernels the real steps time are fixed for
    # the model's life, so packed weights are among them whenever they were a candidate (one-row steps never use them)
    packed = weight_layout.PACKED
    assert weight_layout.Kernels("stored", "onednn", onednn=True, packed=True).options(True) == (
        "onednn", "stored", packed)
    assert weight_layout.Kernels("stored", "stored", onednn=True, packed=True).options(True) == (
        "stored", "onednn", packed)
    im = weight_layout.Kernels("input-major", "onednn", onednn=True, packed=True)
    assert im.options(True) == ("onednn", "input-major", packed) and im.options(False) == ("input-major",)
    assert weight_layout.Kernels("stored", packed, onednn=True, packed=True).options(True) == (packed, "stored")
    assert weight_layout.Kernels("onednn", "onednn", onednn=True, packed=True).options(False) == ("onednn", "stored")
    # not a candidate (no room for the copy, or no oneDNN packing): as before
    assert weight_layout.Kernels("stored", "onednn", onednn=True).options(True) == ("onednn", "stored")


@needs_packing
def test_packed_linear_gives_onednns_bits_for_batches_and_leaves_other_weights_to_it():
    torch.manual_seed(0)
    w, b = torch.randn(48, 32), torch.randn(48)
    w_im = torch.randn(40, 32).t().contiguous().t()  # input-major
    other = torch.randn(24, 32)
    fn = weight_layout.PackedLinear([w, w_im])
    assert fn.nbytes == (48 + 40) * 32 * 4
    for rows in (2, 3, 8, 16):
        x = torch.randn(rows, 1, 32)
        assert torch.equal(fn(x, w, b), weight_layout._onednn_linear(x, w, b))
        assert torch.equal(fn(x, w_im, None), weight_layout._onednn_linear(x, w_im, None))
        assert torch.equal(fn(x, other, None), weight_layout._onednn_linear(x, other, None))  # not packed
        torch.testing.assert_close(fn(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-5, rtol=1e-5)
    x = torch.randn(1, 1, 32)  # one row: other bits than plain oneDNN, the same values
    torch.testing.assert_close(fn(x, w, b), torch.nn.functional.linear(x, w, b), atol=1e-5, rtol=1e-5)


@needs_packing
def test_packing_is_timed_only_when_its_copy_fits_in_memory(monkeypatch):
    model = _model(False)
    weights = sum(m.weight.numel() * 4 for m in model.modules() if type(m) is torch.nn.Linear)
    monkeypatch.setattr(weight_layout, "available_memory", lambda: int(weights / weight_layout.PACKED_MEMORY_SHARE))
    assert weight_layout.packing_fits(model)
    assert weight_layout.PACKED in weight_layout.time_candidates(model, rounds=1, packed=True)
    assert weight_layout.PACKED not in weight_layout.time_candidates(model, rounds=1)
    monkeypatch.setattr(weight_layout, "available_memory", lambda: int(weights / weight_layout.PACKED_MEMORY_SHARE) - 1)
    assert not weight_layout.packing_fits(model)
    monkeypatch.setattr(weight_layout, "available_memory", lambda: None)  # unknown: no second copy
    assert not weight_layout.packing_fits(model)


# ---------------------------------------------------------------------- the prefill kernel


def test_the_prefill_kernel_is_onednn_on_a_clear_win_at_long_prompts_without_a_loss_at_short_ones():
    small, large = min(weight_layout.PREFILL_ROWS), max(weight_layout.PREFILL_ROWS)

    def med(dnn_small: float, dnn_large: float) -> dict[str, dict[int, float]]:
        return {"stored": {small: 1.0, large: 10.0}, "onednn": {small: dnn_small, large: dnn_large}}

    assert weight_layout._prefill_plan(med(0.9, 5.0)) == "onednn"
    assert weight_layout._prefill_plan(med(1.04, 5.0)) == "onednn"  # a tie on short prompts
    assert weight_layout._prefill_plan(med(1.2, 5.0)) == "stored"  # clearly slower on short prompts (the demo's)
    assert weight_layout._prefill_plan(med(0.5, 9.7)) == "stored"  # no clear win on long ones
    assert weight_layout._prefill_plan({}) == "stored"


@pytest.mark.skipif(not weight_layout.onednn_available(), reason="torch built without oneDNN")
def test_the_prefill_is_timed_on_the_layers_products_at_prompt_sizes(monkeypatch):
    seen: list[tuple[tuple[int, ...], tuple[int, ...], bool]] = []

    def fake_seconds(w, x, fn):
        seen.append((tuple(w.shape), tuple(x.shape), fn is weight_layout._onednn_linear))
        return 0.5 if fn is weight_layout._onednn_linear and x.shape[1] > 1 else 1.0

    monkeypatch.setattr(weight_layout, "_product_seconds", fake_seconds)
    model = _model(False)
    kernels = weight_layout.choose_kernels(model, rounds=1)
    assert kernels.prefill == "onednn" and (kernels.one, kernels.batched) == ("stored", "stored")
    prefill = [(w, x, dnn) for w, x, dnn in seen if x[1] > 1]
    assert {x[1] for _, x, _ in prefill} == set(weight_layout.PREFILL_ROWS)
    # MKL on the modules' own products (q, k/v, o, gate/up, down), oneDNN on the fused q/k/v and gate/up (o, down), as
    # the lean step's prefill runs each (LlamaDecoder.fused_prefill)
    assert {w for w, _, dnn in prefill if not dnn} == {(32, 32), (16, 32), (48, 32), (32, 48)}
    assert {w for w, _, dnn in prefill if dnn} == {(64, 32), (32, 32), (96, 32), (32, 48)}
    seen.clear()
    assert weight_layout.choose_kernels(_model(False), rounds=1, fused=False).prefill == "stored"  # HF modules
    assert all(x[1] == 1 for _, x, _ in seen)
    assert weight_layout.time_prefill(_model(False).to(torch.bfloat16)) == {}


@pytest.mark.skipif(not weight_layout.onednn_available(), reason="torch built without oneDNN")
@pytest.mark.parametrize("shape", [(48, 32), (4096, 1024), (1024, 4096)])
def test_the_onednn_prefill_gives_a_row_the_same_bits_alone_and_with_others(shape):
    # so that a prompt prefilled alone and padded with others gets the same products (oneDNN's one-row path gives
    # other bits: a lone row runs as two)
    fn = weight_layout.prefill_fn("onednn")
    torch.manual_seed(0)
    w, b = torch.randn(*shape), torch.randn(shape[0])
    x = torch.randn(1, 70, shape[1])
    ref = fn(x, w, b)
    torch.testing.assert_close(ref, torch.nn.functional.linear(x, w, b), atol=1e-3, rtol=1e-4)
    for rows, at in ((1, 0), (1, 9), (2, 3), (7, 1), (64, 6)):
        assert torch.equal(fn(x[:, at:at + rows].contiguous(), w, b), ref[:, at:at + rows])
    assert weight_layout.prefill_fn("stored") is torch.nn.functional.linear


@pytest.mark.skipif(not weight_layout.onednn_available(), reason="torch built without oneDNN")
def test_the_prefill_is_timed_in_the_layout_the_decode_plan_chose(monkeypatch):
    layouts: set[tuple[bool, bool]] = set()  # (input-major, prefill-sized)

    def fake_seconds(w, x, fn):
        layouts.add((not w.is_contiguous(), x.shape[1] > 1))
        return 0.5 if not w.is_contiguous() and fn is torch.nn.functional.linear and x.shape[1] == 1 else 1.0

    monkeypatch.setattr(weight_layout, "_product_seconds", fake_seconds)
    kernels = weight_layout.choose_kernels(_model(False), rounds=1)
    assert kernels.layout == "input-major" and (True, True) in layouts and (False, True) not in layouts


def test_a_prefill_timing_that_fails_leaves_the_decode_choice_and_the_stored_prefill(monkeypatch, caplog):
    # time_prefill runs on the first request's prefill (Worker._lean_decoder): an exception there (oneDNN refusing a
    # shape, memory for the 512-row sample) failed that request, and the worker, which had already noted the model
    # as set up, then served it on the transformers forward with no kernel choice at all
    force_choice(monkeypatch, "input-major")

    def fail(*a, **kw):
        raise RuntimeError("oneDNN refused")

    monkeypatch.setattr(weight_layout, "time_prefill", fail)
    model = _model(False)
    kernels = weight_layout.choose_kernels(model, rounds=1)
    assert kernels.prefill == "stored" and kernels.one == "input-major"
    assert not model.model.layers[0].mlp.down_proj.weight.is_contiguous()  # the decode plan's layout was applied
    assert "prefill kernel timing failed" in caplog.text
