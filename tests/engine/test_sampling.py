"""Per-row logits processing and sampling."""

from __future__ import annotations

import torch

from millm.engine.sampling import RowSampler, greedy_cpu, process_logits, sample, token_logprobs
from millm.engine.types import GenerationEvent, SamplingParams

V = 10


def row(**kw) -> RowSampler:
    kw.setdefault("max_tokens", 4)
    return RowSampler(SamplingParams(**kw), vocab_size=V, device=torch.device("cpu"), seed=kw.get("seed") or 0)


def test_greedy_and_logit_bias():
    logits = torch.arange(V, dtype=torch.float32)[None, :]
    assert sample(logits, [row(temperature=0.0)]) == [9]
    r = row(temperature=0.0, logit_bias=((2, 100.0),))
    assert sample(process_logits(logits, [r]), [r]) == [2]


def test_presence_and_frequency_penalties_use_generated_counts():
    r = row(temperature=0.0, frequency_penalty=2.0, presence_penalty=0.5)
    logits = torch.zeros(1, V)
    logits[0, 3] = 3.0
    logits[0, 4] = 1.0
    assert sample(process_logits(logits, [r]), [r]) == [3]
    r.observe(3)  # 3.0 - 2.0 - 0.5 = 0.5 < 1.0
    assert sample(process_logits(logits, [r]), [r]) == [4]


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[5.0, 4.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    r = row(temperature=1.0, top_k=2, seed=1)
    assert {sample(logits, [r])[0] for _ in range(200)} <= {0, 1}
    r = row(temperature=1.0, top_p=0.5, seed=1)  # p(0) ≈ 0.66 > 0.5: only token 0
    assert {sample(logits, [r])[0] for _ in range(100)} == {0}


def test_seeded_rows_are_reproducible_and_independent():
    logits = torch.zeros(2, V)
    a = [row(temperature=1.0, seed=7), row(temperature=1.0, seed=8)]
    b = [row(temperature=1.0, seed=7), row(temperature=1.0, seed=8)]
    seq_a = [sample(logits, a) for _ in range(20)]
    seq_b = [sample(logits, b) for _ in range(20)]
    assert seq_a == seq_b
    assert [s[0] for s in seq_a] != [s[1] for s in seq_a]


def test_logprobs_of_chosen_and_top():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25] + [1e-9] * (V - 3)]))
    r = row(temperature=0.0, logprobs=2)
    lp = token_logprobs(logits, [0], [r])[0]
    assert abs(lp.logprob - torch.log(torch.tensor(0.5)).item()) < 1e-4
    assert [t.token_id for t in lp.top][0] == 0 and len(lp.top) == 2
    assert token_logprobs(logits, [0], [row(temperature=0.0)]) == [None]


def test_rows_with_nan_or_infinite_logits_draw_nothing_and_the_others_still_draw():
    inf, nan = float("inf"), float("nan")
    logits = torch.tensor([[0.0, 2.0, 1.0], [0.0, nan, 1.0], [0.0, inf, 1.0], [-inf, -inf, -inf], [0.0, 1.0, -inf]])
    for temperature in (0.0, 1.0):
        rows = [RowSampler(SamplingParams(max_tokens=1, temperature=temperature, top_p=0.9), vocab_size=3,
                           device=torch.device("cpu"), seed=i) for i in range(5)]
        out = sample(process_logits(logits, rows), rows)
        assert out[1:4] == [None, None, None]
        assert out[0] in (1, 2) and out[4] in (0, 1)
        if temperature == 0.0:
            assert (out[0], out[4]) == (1, 1)


def test_a_temperature_too_small_for_float32_is_greedy():
    logits = torch.tensor([[0.0, 2.0, 1.0, 1.9]])
    for t in (1e-300, 1e-30, 9e-6):
        rows = [RowSampler(SamplingParams(max_tokens=1, temperature=t, top_p=0.5), vocab_size=4,
                           device=torch.device("cpu"), seed=0)]
        assert rows[0].params.greedy and sample(logits, rows) == [1]
    assert not SamplingParams(max_tokens=1, temperature=1e-5).greedy


def test_greedy_takes_the_first_of_tied_maxima_as_torch_argmax_does():
    logits = torch.tensor([[1.0, 3.0, 0.0, 3.0, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    rows = [RowSampler(SamplingParams(max_tokens=1, temperature=0.0), vocab_size=5, device=torch.device("cpu"),
                       seed=0) for _ in range(2)]
    assert sample(logits, rows) == [1, 0]
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(3, 32000, generator=g).round(decimals=1)  # many ties at the max
    rows3 = rows + rows[:1]
    assert sample(wide, rows3) == wide.argmax(dim=-1).tolist()
    # a row repeated for n choices (a stride-0 view, as the prefill passes it)
    assert sample(wide[1:2].expand(3, -1), rows3) == [int(wide[1].argmax())] * 3


def test_greedy_cpu_draws_what_sample_draws_for_greedy_rows():
    inf, nan = float("inf"), float("nan")
    odd = torch.tensor([[0.0, 2.0, 1.0], [0.0, nan, 1.0], [0.0, inf, 1.0], [-inf, -inf, -inf], [0.0, 1.0, -inf]])
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(3, 32000, generator=g).round(decimals=1)  # ties at the max
    for logits in (odd, wide, wide[1:2].expand(3, -1)):
        rows = [RowSampler(SamplingParams(max_tokens=1, temperature=0.0), vocab_size=logits.shape[1],
                           device=torch.device("cpu"), seed=0) for _ in range(logits.shape[0])]
        assert greedy_cpu(logits) == sample(logits, rows)
    assert greedy_cpu(odd) == [1, None, None, None, 1]


def test_a_row_is_plain_only_without_processing_logprobs_or_grammar_state():
    assert row(temperature=0.0).plain and row(temperature=0.7, top_p=0.9, seed=3).plain
    assert row(temperature=0.0).greedy and not row(temperature=0.7).greedy
    for kw in ({"logprobs": 0}, {"logit_bias": ((1, 2.0),)}, {"presence_penalty": 0.5}, {"frequency_penalty": 0.1},
               {"allowed_token_ids": (1, 2)}):
        assert not row(temperature=0.0, **kw).plain, kw


def test_a_token_event_equals_the_constructors():
    ev = GenerationEvent.token(2, "ab", 7)
    full = GenerationEvent(choice=2, text="ab", token_ids=(7,))
    assert ev == full and repr(ev) == repr(full) and hash(ev) == hash(full)
    assert (ev.logprobs, ev.finish_reason, ev.error, ev.failure, ev.evidence, ev.activations) == ((), None, None,
                                                                                                   None, None, None)
