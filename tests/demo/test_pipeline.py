"""The demo training pipeline, end to end in its miniature configuration (seconds, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from millm.demo.corpus import TOPIC_NAMES, CorpusConfig, generate_corpus, render_chat
from millm.demo.evaluate import SAMPLED_SEEDS, YELL_SAMPLES, YELL_TEMPERATURES
from millm.demo.sae_training import SaeConfig, collect_activations, load_sae, train_sae
from millm.demo.tokenizer import corpus_texts, encode_corpus, train_tokenizer
from millm.demo.train import MINI, _doc_starts, run, topic_direction, yelling_direction


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo-mini")
    demo = run(MINI, out=out, report_dir=out / "report", seed=0)
    return out, demo


def test_corpus_is_deterministic_and_labelled() -> None:
    a, b = generate_corpus(200, seed=3), generate_corpus(200, seed=3)
    assert [d.render() for d in a] == [d.render() for d in b]
    assert [d.render() for d in a] != [d.render() for d in generate_corpus(200, seed=4)]
    segs = [s for d in a for s in d.segments]
    assert {s.topic for s in segs if s.topic} == set(TOPIC_NAMES)
    assert {s.mood for s in segs if s.mood} == {"happy", "sad"}
    yelling = [s for s in segs if s.yelling]
    assert 0.05 < len(yelling) / len(segs) < 0.4
    assert all(s.text == s.text.upper() for s in yelling)
    assert any(d.is_chat for d in a) and any(not d.is_chat for d in a)


def test_tokenizer_matches_chat_template_and_corpus_encoding() -> None:
    docs = generate_corpus(150, seed=0)
    tok = train_tokenizer(corpus_texts(docs), 500)
    messages = [{"role": "system", "content": "Hi."}, {"role": "user", "content": "Tell me a story."},
                {"role": "user", "content": "Again."}]  # non-alternating roles must not raise
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == render_chat(messages, add_generation_prompt=True)
    assert rendered.startswith(tok.bos_token)
    assert tok("a story")["input_ids"][0] == tok.bos_token_id
    enc = encode_corpus(tok, docs[:20])
    expected = [i for d in docs[:20] for i in tok(d.render(), add_special_tokens=False)["input_ids"]]
    assert enc.ids.tolist() == expected
    assert len(enc.ids) == len(enc.yelling) == len(enc.topic) == len(enc.doc)


def test_switching_stories_turn_caps_at_a_sentence_and_encode_like_their_rendering() -> None:
    # 0 (the default) draws nothing extra, so the corpus is the one the shipped demo was trained on
    assert [d.render() for d in generate_corpus(80, seed=5)] == [
        d.render() for d in generate_corpus(80, seed=5, cfg=CorpusConfig(switch_fraction=0.0))]
    docs = generate_corpus(300, seed=5, cfg=CorpusConfig(switch_fraction=0.5))
    switched = [d for d in docs if any(s.continues for s in d.segments)]
    assert any(d.is_chat for d in switched) and any(not d.is_chat for d in switched)
    for d in switched:
        i = next(j for j, s in enumerate(d.segments) if s.continues)
        head, tail = d.segments[i - 1], d.segments[i]
        assert not head.yelling and head.text.endswith(".") and head.text != head.text.upper()
        assert tail.yelling and tail.text.startswith(" ") and tail.text == tail.text.upper()
        assert (head.role, head.topic, head.mood) == (tail.role, tail.topic, tail.mood)
        # one message: no END or role marker between the two halves
        assert head.text + tail.text in d.render()
    tok = train_tokenizer(corpus_texts(docs), 500)
    enc = encode_corpus(tok, switched[:20])
    expected = [i for d in switched[:20] for i in tok(d.render(), add_special_tokens=False)["input_ids"]]
    assert enc.ids.tolist() == expected
    pieces = tok.convert_ids_to_tokens(enc.ids.tolist())
    letters = [p for p, y in zip(pieces, enc.yelling, strict=True) if y and any(c.isalpha() for c in p)]
    assert letters and all(p == p.upper() for p in letters)


def test_model_saves_and_loads_with_auto_classes(mini_run: tuple[Path, dict]) -> None:
    out, _ = mini_run
    tok = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.bos_token and tok.eos_token and tok.pad_token and tok.chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "Tell me a story."}], add_generation_prompt=True,
                                  return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert (out / "model" / "generation_config.json").exists()


def test_sae_files_are_saelens_v6(mini_run: tuple[Path, dict]) -> None:
    out, demo = mini_run
    cfg = json.loads((out / "sae" / "cfg.json").read_text())
    for key in ("architecture", "d_in", "d_sae", "dtype", "apply_b_dec_to_input", "normalize_activations"):
        assert key in cfg
    meta = cfg["metadata"]
    assert meta["hook_name"] == demo["hook_name"] == f"blocks.{demo['layer']}.hook_resid_post"
    assert meta["model_name"] == "millm-demo" and meta["sae_lens_version"] >= "6.0.0"
    assert {"prepend_bos", "context_size"} <= set(meta)
    w = load_file(str(out / "sae" / "sae_weights.safetensors"))
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    assert w["W_enc"].shape == (d_in, d_sae) and w["W_dec"].shape == (d_sae, d_in)
    assert w["b_enc"].shape == (d_sae,) and w["b_dec"].shape == (d_in,)
    assert torch.allclose(w["W_dec"].norm(dim=1), torch.ones(d_sae), atol=1e-4)


def test_labels_profiles_manifest_and_report(mini_run: tuple[Path, dict]) -> None:
    out, demo = mini_run
    labels = json.loads((out / "labels.json").read_text())
    assert set(labels) == {str(i) for i in range(demo["d_sae"])}
    for entry in labels.values():
        assert isinstance(entry["label"], str) and isinstance(entry["score"], float)
        assert isinstance(entry["top_examples"], list)
    bundle = json.loads((out / "profiles.json").read_text())
    assert bundle["format"] == "millm.profiles" and bundle["format_version"] == 1
    names = [p["name"] for p in bundle["profiles"]]
    assert names[0] == "yelling-demo" and "ocean" in names
    assert bundle["profiles"][0]["features"][0]["index"] == demo["caps_feature"]
    assert 0 <= demo["caps_feature"] < demo["d_sae"]
    assert (out / "report" / "demo-training.md").read_text().startswith("# Demo training report")


def test_chosen_features_are_placed_and_readability_reported(mini_run: tuple[Path, dict]) -> None:
    out, demo = mini_run
    assert demo["caps_feature"] == MINI.fixed_indices["caps"]
    assert demo["topic_features"]["ocean"] == MINI.fixed_indices["ocean"]
    passed, total = demo["measured"]["repetition_passed"]
    assert total == 5 and 0 <= passed <= total
    report = (out / "report" / "demo-training.md").read_text()
    assert "## Readability" in report and f"Passed on **{passed} of {total}** prompts" in report
    sampled = demo["measured"]["sampled_repetition_passed"]
    assert len(sampled) == len(SAMPLED_SEEDS) and all(0 <= p <= total for p in sampled)
    assert "### Sampled" in report and f"({sum(sampled)} of {total * len(SAMPLED_SEEDS)} samples)" in report
    yelling = demo["measured"]["unsteered_yelling"]
    assert set(yelling) == {str(t) for t in YELL_TEMPERATURES}
    assert all(0 <= y <= n == 5 * YELL_SAMPLES for y, n in yelling.values())
    assert "## Unsteered yelling" in report


def test_a_pinned_latent_keeps_its_decoder_row_and_learns_to_encode_it() -> None:
    gen = torch.Generator().manual_seed(0)
    d_in, n = 16, 6000
    direction = torch.randn(d_in, generator=gen)
    on = torch.rand(n, generator=gen) < 0.3  # 30 % of the inputs carry the direction, with some strength
    x = torch.randn(n, d_in, generator=gen) + on[:, None] * (3 + torch.rand(n, 1, generator=gen)) * direction
    cfg = SaeConfig(d_sae=32, k=4, batch_size=256, epochs=6, dead_after_tokens=2000, prefixes=(8,))
    sae = train_sae(x, cfg, seed=0, pinned=2 * direction[None]).sae
    unit = direction / direction.norm()
    assert torch.allclose(sae.W_dec[0].detach(), unit, atol=1e-6)  # fixed, at unit norm
    assert torch.allclose(sae.W_dec.detach().norm(dim=1), torch.ones(32), atol=1e-4)
    free = train_sae(x, cfg, seed=0).sae
    assert not torch.allclose(free.W_dec[0].detach(), unit, atol=1e-2)  # without pinning row 0 is learned
    with torch.no_grad():
        acts = sae.encode(x)[:, 0]
    assert acts[on].mean() > 5 * acts[~on].mean().clamp(min=1e-3)  # it fires where its direction is
    assert (acts[on] > 0).float().mean() > 0.9


def _training_residuals(out: Path) -> tuple[torch.Tensor, object, object]:
    """The residuals the mini run's SAE was trained on, with the encoded corpus and their token indices."""
    tok = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    enc = encode_corpus(tok, generate_corpus(MINI.n_docs, 0, MINI.corpus))
    acts, index = collect_activations(model, ids=enc.ids, doc_starts=_doc_starts(enc), layer=MINI.layer,
                                      context=MINI.model.context, max_tokens=MINI.sae_train_tokens,
                                      bos_id=tok.bos_token_id)
    return acts, enc, index


def test_the_caps_feature_is_pinned_to_the_yelling_direction(mini_run: tuple[Path, dict]) -> None:
    out, demo = mini_run
    assert demo["measured"]["caps_pinned"] is True
    acts, enc, index = _training_residuals(out)
    direction = yelling_direction(acts, enc, index)
    w_dec = load_sae(out / "sae").W_dec.detach()
    cos = torch.nn.functional.cosine_similarity(w_dec[demo["caps_feature"]], direction, dim=0)
    assert cos > 0.999
    yell = torch.from_numpy(enc.yelling[index])
    assert float((acts[yell].mean(0) - acts[~yell].mean(0)) @ direction) > 0


def test_each_topic_has_a_latent_pinned_to_its_direction(mini_run: tuple[Path, dict]) -> None:
    out, _ = mini_run
    acts, enc, index = _training_residuals(out)
    w_dec = load_sae(out / "sae").W_dec.detach()
    for name in MINI.topics:
        direction = topic_direction(acts, enc, index, TOPIC_NAMES.index(name))
        cos = torch.nn.functional.cosine_similarity(w_dec, direction[None], dim=1)
        assert cos.max() > 0.999, name  # some latent (wherever the placement moved it) decodes to it
        topic = torch.from_numpy(enc.topic[index]).long()
        on = topic == TOPIC_NAMES.index(name)
        assert float((acts[on].mean(0) - acts[~on & (topic >= 0)].mean(0)) @ direction) > 0
    untopical = index[enc.topic[index] < 0]
    with pytest.raises(ValueError, match="no tokens of topic 'ocean'"):
        topic_direction(acts[: len(untopical)], enc, untopical, TOPIC_NAMES.index("ocean"))


def test_sae_only_keeps_the_model_and_redoes_the_same_sae(
    mini_run: tuple[Path, dict], tmp_path: Path
) -> None:
    out, demo = mini_run
    again = run(MINI, out=tmp_path, report_dir=tmp_path / "report", seed=0, model_dir=out / "model")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / "model" / name).read_bytes() == (out / "model" / name).read_bytes()
    a, b = load_file(str(out / "sae" / "sae_weights.safetensors")), load_file(str(tmp_path / "sae" /
                                                                                   "sae_weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again["caps_feature"] == demo["caps_feature"] and again["caps_strength"] == demo["caps_strength"]
    report = (tmp_path / "report" / "demo-training.md").read_text()
    assert "kept the already trained model (`--sae-only`)" in report


def test_evaluate_cli_measures_unsteered_yelling(mini_run: tuple[Path, dict], caplog: pytest.LogCaptureFixture) -> None:
    from millm.demo.evaluate import YELL_SAMPLES, YELL_TEMPERATURES, main

    out, _ = mini_run
    threads = torch.get_num_threads()
    with caplog.at_level("INFO", logger="millm.demo.evaluate"):
        main([str(out), "--yelling", "--seed", "1"])
    torch.set_num_threads(threads)
    rates = json.loads(caplog.records[-1].getMessage())
    assert set(rates) == {str(t) for t in YELL_TEMPERATURES}
    for row in rates.values():
        assert row["total"] == 5 * YELL_SAMPLES and 0 <= row["yelling"] == sum(row["per_prompt"].values())
        assert row["rate"] == round(row["yelling"] / row["total"], 3)
