"""The demo reads well: the repetition criterion of `millm.demo.evaluate`, measured on the shipped
files, and the latent permutation that keeps the documented feature indices stable across retrains."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from millm.demo import assets_dir
from millm.demo.evaluate import (
    MAX_RUN,
    MIN_DISTINCT,
    REPEAT_PASS,
    REPEAT_PROMPTS,
    REPEAT_TOKENS,
    SAMPLED_SEEDS,
    SAMPLED_TEMPERATURE,
    Clamp,
    distinct_bigrams,
    longest_run,
    readable,
    recase,
    recased_loss,
    repetition_check,
    sampled_repetition_check,
    steering,
    unsteered_yelling,
    yelling_rates,
)
from millm.demo.sae_training import TopKSae, load_sae
from millm.demo.train import FIXED_INDICES, permute_sae, placement

ASSETS = assets_dir()
YELL_MAX_RATE = 0.25  # the demo as shipped: 13 of 100 sampled answers yell at temperature 0.7


def test_longest_run_counts_back_to_back_words_case_insensitively() -> None:
    assert longest_run("") == 0
    assert longest_run("Once upon a time.") == 1
    assert longest_run("NEAR A A TALL TREE") == 2
    assert longest_run("the tall pine PINE Pine pine, and") == 4
    assert longest_run("pine tree pine tree pine") == 1


def test_phrase_loops_have_few_distinct_bigrams() -> None:
    story = "Once upon a time, there was a little fox who lived deep in the woods. Every day, she gathered acorns."
    assert distinct_bigrams(story) > 0.9
    # no word runs more than once in a row, yet it reads as a loop: the criterion rejects it
    loop = "ONCE UPON A TIME, A A HAPPY A FOR A ME A FOR A FOR A FOR A FOR A FOR A FOR A FOR A FOR A FOR"
    assert longest_run(loop) <= MAX_RUN and distinct_bigrams(loop) < MIN_DISTINCT


def test_readable_rejects_word_runs_and_phrase_loops() -> None:
    assert readable("Once upon a time, there was a little fox who lived deep in the woods.")
    assert readable("THE SNOW FELL ON THE THE THE PINE TREES.")  # three in a row is allowed
    assert not readable("THERE WAS A WINTER WINTER WINTER WINTER WINTER NIGHT.")
    assert not readable("A FOR A FOR A FOR A FOR A FOR A FOR A FOR")


@pytest.fixture(scope="module")
def shipped() -> tuple[object, object, TopKSae, dict]:
    torch.set_num_threads(1)
    demo = json.loads((ASSETS / "demo.json").read_text())
    tok = AutoTokenizer.from_pretrained(ASSETS / "model")
    model = AutoModelForCausalLM.from_pretrained(ASSETS / "model").eval()
    return model, tok, load_sae(ASSETS / "sae"), demo


def test_shipped_demo_meets_the_repetition_criterion(shipped) -> None:
    model, tok, sae, demo = shipped
    steer = (demo["layer"], demo["caps_strength"] * sae.W_dec[demo["caps_feature"]])
    result = repetition_check(model, tok, steer=steer)
    assert result.total == len(REPEAT_PROMPTS) == 5
    assert result.passed >= REPEAT_PASS and result.ok, [
        (r["prompt"], r["unsteered_run"], r["steered_run"], r["steered"]) for r in result.prompts]
    for row in result.prompts:
        assert row["passed"] == (max(row["unsteered_run"], row["steered_run"]) <= MAX_RUN
                                 and min(row["unsteered_distinct"], row["steered_distinct"]) >= MIN_DISTINCT)
        assert row["unsteered"] and row["steered"] and row["unsteered"] != row["steered"]
        gen = len(tok(row["steered"], add_special_tokens=False)["input_ids"])
        assert gen <= REPEAT_TOKENS + 2  # 60 generated tokens (re-tokenising may merge differently)
    # what the pipeline measured and recorded is what the shipped files give
    assert demo["measured"]["repetition_passed"] == [result.passed, result.total]


def test_shipped_demo_meets_the_sampled_repetition_criterion(shipped) -> None:
    """Sampled at temperature 0.8, once per seed, the CAPS-steered and unsteered completions read well
    on at least 4 of 5 prompts for every seed (issue 16 item 13: sampled steered text looped)."""
    model, tok, sae, demo = shipped
    steer = (demo["layer"], demo["caps_strength"] * sae.W_dec[demo["caps_feature"]])
    result = sampled_repetition_check(model, tok, steer=steer)
    assert result.temperature == SAMPLED_TEMPERATURE and result.seeds == list(SAMPLED_SEEDS)
    assert len(result.by_seed) == len(SAMPLED_SEEDS) and result.total == len(SAMPLED_SEEDS) * len(REPEAT_PROMPTS)
    assert result.ok, [(r["seed"], r["prompt"], r["steered"]) for r in result.record()["prompts"] if not r["passed"]]
    assert all(p >= REPEAT_PASS for p in result.passed_by_seed)
    rows = result.record()["prompts"]
    for row in rows:
        assert row["passed"] == (readable(row["unsteered"]) and readable(row["steered"]))
    # sampled, not greedy: seeds give different completions of the same prompt, and the steered ones yell
    story = [row["steered"] for row in rows if row["prompt"] == REPEAT_PROMPTS[0]]
    assert len(set(story)) == len(SAMPLED_SEEDS)
    assert result.steered_upper >= 0.8


def test_the_sampled_criterion_fails_a_demo_that_loops(shipped, monkeypatch: pytest.MonkeyPatch) -> None:
    """A demo whose steered samples loop for some seeds fails, though the other seeds read well; the
    samples are drawn per (prompt, seed) at the criterion's temperature, and the unsteered ones once."""
    from millm.demo import evaluate

    model, tok, sae, demo = shipped
    real, first = evaluate.complete, evaluate.chat_prompt(tok, REPEAT_PROMPTS[0])
    calls: list[tuple[float, int, bool]] = []

    def looping(model, tokenizer, *, prompt, steer=None, max_new_tokens=96, temperature=0.0, seed=0):
        calls.append((temperature, seed, steer is not None))
        text, ids = real(model, tokenizer, prompt=prompt, steer=steer, max_new_tokens=max_new_tokens,
                         temperature=temperature, seed=seed)
        if steer is not None and seed == 1:  # seed 1 loops on every prompt but the first
            looped = not torch.equal(prompt, first)
            return (text.split(".")[0] + ". WINTER WINTER WINTER WINTER WINTER" if looped else text), ids
        return text, ids

    monkeypatch.setattr(evaluate, "complete", looping)
    steer = (demo["layer"], demo["caps_strength"] * sae.W_dec[demo["caps_feature"]])
    cache: dict = {}
    result = sampled_repetition_check(model, tok, steer=steer, prompts=REPEAT_PROMPTS[:2], seeds=(0, 1),
                                      max_new_tokens=30, unsteered=cache)
    assert {t for t, _, _ in calls} == {SAMPLED_TEMPERATURE} and len(calls) == 8 and len(cache) == 4
    assert result.passed_by_seed[1] < result.passed_by_seed[0] and not result.by_seed[1].ok and not result.ok
    rows = result.record()["prompts"]
    assert [r["seed"] for r in rows] == [0, 0, 1, 1]
    assert rows[3]["steered_run"] == 5 and not rows[3]["passed"]
    sampled_repetition_check(model, tok, steer=steer, prompts=REPEAT_PROMPTS[:2], seeds=(0, 1), max_new_tokens=30,
                             unsteered=cache)
    assert len(calls) == 12  # the unsteered samples came from the cache


def test_recased_loss_tells_word_salad_from_yelled_text(shipped) -> None:
    """Steering far past the documented strength turns sampled text into word salad that the
    repetition test lets through; the recased loss under the unsteered model shows it."""
    model, tok, sae, demo = shipped
    assert recase("ONCE UPON A TIME, THERE WAS A FOX. HE RAN!  THEN") == "Once upon a time, there was a fox. He ran!  Then"
    plain = "Once upon a time, there was a little fish who lived in the deep blue sea."
    assert recased_loss(model, tok, content=REPEAT_PROMPTS[0], text=plain.upper()) == pytest.approx(
        recased_loss(model, tok, content=REPEAT_PROMPTS[0], text=plain))
    steer = (demo["layer"], 2 * demo["caps_strength"] * sae.W_dec[demo["caps_feature"]])
    salad = sampled_repetition_check(model, tok, steer=steer, prompts=REPEAT_PROMPTS[:2], seeds=(0,))
    assert salad.unsteered_loss < 1.0 and salad.steered_loss > salad.unsteered_loss + 3, salad.record()


def test_unsteered_yelling_counts_capital_answers(shipped) -> None:
    """The leak measurement: a sampled answer over half uppercase counts as yelling. With the CAPS
    feature added, every answer yells; without it, the count is seeded and repeatable."""
    model, tok, sae, demo = shipped
    prompts = REPEAT_PROMPTS[:2]
    plain = unsteered_yelling(model, tok, temperature=1.0, prompts=prompts, samples=6, max_new_tokens=24)
    assert plain.total == 12 and set(plain.per_prompt) == set(prompts)
    assert plain.yelling == sum(plain.per_prompt.values()) < plain.total
    again = unsteered_yelling(model, tok, temperature=1.0, prompts=prompts, samples=6, max_new_tokens=24)
    assert again.per_prompt == plain.per_prompt and again.example == plain.example
    with steering(model, demo["layer"], demo["caps_strength"] * sae.W_dec[demo["caps_feature"]]):
        loud = unsteered_yelling(model, tok, temperature=0.7, prompts=prompts, samples=6, max_new_tokens=24)
    assert loud.yelling >= 10 and loud.rate > plain.rate
    assert loud.example and sum(c.isupper() for c in loud.example) > sum(c.islower() for c in loud.example)


def test_shipped_model_seldom_yells_unprompted() -> None:
    """Unsteered chats in capitals look like steering leaking into plain chats (issue 16 item 13)."""
    rates = yelling_rates(ASSETS, temperatures=(0.7,), samples=10)
    assert rates["0.7"]["total"] == 50
    assert rates["0.7"]["rate"] < YELL_MAX_RATE, rates


def test_shipped_features_sit_at_the_fixed_indices(shipped) -> None:
    _, _, _, demo = shipped
    assert demo["caps_feature"] == FIXED_INDICES["caps"] == 16
    for topic, index in demo["topic_features"].items():
        assert index == FIXED_INDICES[topic], topic


def test_placement_puts_chosen_features_at_fixed_indices() -> None:
    perm = placement({"caps": 5, "ocean": 16, "space": 3, "food": 3}, {"caps": 16, "ocean": 2, "space": 7,
                                                                         "food": 9}, d_sae=20)
    assert sorted(perm) == list(range(20))
    assert perm[16] == 5 and perm[2] == 16 and perm[7] == 3
    assert perm[9] == 9  # a feature two topics share stays where the first put it


def test_permuted_sae_is_the_same_function_up_to_feature_order() -> None:
    gen = torch.Generator().manual_seed(0)
    sae = TopKSae(8, 24, 4)
    for p in sae.parameters():
        p.data = torch.randn(p.shape, generator=gen)
    perm = placement({"caps": 3, "ocean": 20}, {"caps": 16, "ocean": 1}, d_sae=24)
    out = permute_sae(sae, perm)
    x = torch.randn(50, 8, generator=gen)
    with torch.no_grad():
        f, g = sae.encode(x), out.encode(x)
        assert torch.allclose(g, f[:, perm])
        assert torch.allclose(out.decode(g), sae.decode(f), atol=1e-5)
        assert torch.equal(out.W_dec[16], sae.W_dec[3]) and torch.equal(out.W_dec[1], sae.W_dec[20])


def test_clamp_steering_matches_the_servers_clamp(shipped) -> None:
    """`evaluate.Clamp` measures what a request with `"mode": "clamp"` gets from the server's SAE code."""
    from types import SimpleNamespace

    from millm.sae.loading import load_sae as load_server_sae

    model, tok, sae, demo = shipped
    server_sae = load_server_sae(ASSETS / "sae", dtype=torch.float32)
    caps, value = demo["caps_feature"], 7.5
    ids = tok.apply_chat_template([{"role": "user", "content": "Tell me a story."}], add_generation_prompt=True,
                                  return_tensors="pt")["input_ids"]
    with torch.no_grad():
        clean = model(input_ids=ids, output_hidden_states=True).hidden_states[demo["layer"] + 1]
        expected = server_sae.clamped(clean, server_sae.compile_clamp(torch.tensor([caps]), value))
        layer = torch.nn.Identity()  # steering() hooks model.model.layers[i]: apply it to the residual alone
        with steering(SimpleNamespace(model=SimpleNamespace(layers=[layer])), 0, Clamp(sae, caps, value)):
            hooked = layer(clean)
    assert not torch.allclose(hooked, clean)
    assert torch.allclose(hooked, expected, atol=1e-4)
