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
    Clamp,
    distinct_bigrams,
    longest_run,
    repetition_check,
    steering,
)
from millm.demo.sae_training import TopKSae, load_sae
from millm.demo.train import FIXED_INDICES, permute_sae, placement

ASSETS = assets_dir()


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
