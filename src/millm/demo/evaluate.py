"""Acceptance measurements for the demo: additive SAE steering and monitoring with a plain forward hook.

Contract: steering adds `strength × W_dec[feature]` to the output of `model.model.layers[layer]`
(SAELens `blocks.{layer}.hook_resid_post`) at every position, prompt and generated, exactly as the
server's steering engine does. The functions here measure what issue 4 asks of the shipped demo:
the uppercase fraction of a greedy chat completion to "Tell me a story." with and without the
CAPS feature, topic-word counts of sampled completions with and without a topic feature, and
whether the CAPS feature fires (SAE encode of the steered residual) on the generated tokens.
`choose_caps` / `choose_topic` sweep candidate features and strengths and pick what to document.
`python -m millm.demo.evaluate [ASSETS]` re-measures the shipped files at their documented values;
`--yelling` measures only how often the unsteered model answers in capitals (`unsteered_yelling`).
The readability criterion is judged twice: greedy (`repetition_check`) and sampled
(`sampled_repetition_check`: temperature `SAMPLED_TEMPERATURE`, every seed of `SAMPLED_SEEDS`).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

from millm.demo.sae_training import TopKSae, load_sae

log = logging.getLogger(__name__)

STORY_PROMPT = "Tell me a story."
CAPS_ACCEPT = 0.80  # uppercase fraction of the steered story the documented CAPS strength must reach (issue 4)
CAPS_MARGIN = 1.15  # documented strength when no candidate yells: the loudest strength seen × margin
# Strengths judged against the readability criterion, per CAPS candidate: its smallest strength
# that reaches CAPS_ACCEPT times each of these. Below 1 too: the first strength that yells enough
# may already loop, and a coarse sweep can step past the readable window.
CAPS_MULTIPLIERS = (0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0)
MIN_DISTINCT = 0.5  # distinct-bigram ratio below which a steered completion counts as degenerate
TOPIC_SEEDS = (0, 1, 2, 3, 4)
TOPIC_TARGET = 4.0  # steered topic-word count / unsteered, for a documented topic strength
# The readability criterion: greedy completions of REPEAT_TOKENS tokens to each of these prompts,
# with and without the CAPS feature, repeat no word more than MAX_RUN times in a row and do not loop
# on a short phrase (distinct word bigrams at least MIN_DISTINCT: "A FOR A FOR A FOR" has no long
# word run but 2 distinct bigrams), on at least REPEAT_PASS of the prompts.
REPEAT_PROMPTS = (
    "Tell me a story.",
    "Tell me a sad story about the forest.",
    "Can you tell me a story about space?",
    "Tell me a happy story.",
    "I want a story about the city.",
)
REPEAT_TOKENS = 60
MAX_RUN = 3
REPEAT_PASS = 4
# The sampled readability criterion: the same prompts, tokens and per-prompt test, but each
# completion (steered and unsteered) sampled at SAMPLED_TEMPERATURE (pure temperature sampling, as
# `complete`), once per seed in SAMPLED_SEEDS; every sample is judged on its own, and the criterion
# is met when, for every seed, at least REPEAT_PASS of the prompts pass. A model that loops in one
# sample of three ("WINTER WINTER WINTER ...") fails it, though its greedy text reads well.
SAMPLED_TEMPERATURE = 0.8
SAMPLED_SEEDS = (0, 1, 2)
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Clamp:
    """Clamp steering, as the server's `"mode": "clamp"`: the residual gets `(value - a) × W_dec[feature]`
    where `a` is the feature's SAE activation there, so the feature reads `value` at every position."""

    sae: TopKSae
    feature: int
    value: float


@contextmanager
def steering(model: PreTrainedModel, layer: int, vector: torch.Tensor | Clamp | None) -> Iterator[None]:
    """Add `vector` (d_model,) to the residual after `layer`, or apply a `Clamp` there, while the
    context is open."""
    if vector is None:
        yield
        return

    def delta(x: torch.Tensor) -> torch.Tensor:
        if isinstance(vector, Clamp):
            act = vector.sae.encode(x.float())[..., vector.feature]
            return ((vector.value - act)[..., None] * vector.sae.W_dec[vector.feature]).to(x.dtype)
        return vector.to(x.dtype)

    def hook(
        _module: nn.Module, _inputs: object, output: torch.Tensor | tuple[torch.Tensor, ...]
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if isinstance(output, tuple):
            return (output[0] + delta(output[0]), *output[1:])
        return output + delta(output)

    handle = model.model.layers[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def upper_fraction(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(c.isupper() for c in letters) / max(1, len(letters))


def distinct_bigrams(text: str) -> float:
    """Unique word bigrams / word bigrams: about 0.9 for a normal story, near 0 for "THE THE THE"."""
    words = _WORD.findall(text.lower())
    pairs = list(zip(words, words[1:], strict=False))
    return len(set(pairs)) / max(1, len(pairs))


def longest_run(text: str) -> int:
    """The longest run of one word repeated back to back, case-insensitive: 4 for "PINE PINE PINE PINE"."""
    words = _WORD.findall(text.lower())
    best = run = 0
    for i, w in enumerate(words):
        run = run + 1 if i and w == words[i - 1] else 1
        best = max(best, run)
    return best


def recase(text: str) -> str:
    """`text` in lowercase with each sentence's first letter capitalised, as the corpus writes stories:
    "ONCE UPON A TIME, THERE WAS A FOX. HE RAN." becomes "Once upon a time, there was a fox. He ran."
    """
    return re.sub(r"(^\s*|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text.lower())


@torch.no_grad()
def recased_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, *, content: str, text: str) -> float:
    """How much a completion reads like the model's own text once its case is set aside: the mean
    cross-entropy (nats per token) of `recase(text)` as the answer to `content`, under the model
    without steering. The unsteered model's own samples at temperature 0.8 score about 0.3; word
    salad ("he swam with the an one by a busy streets") scores 2 and more. A loop can score low (it
    is predictable once started), which is what the repetition test is for."""
    prompt = chat_prompt(tokenizer, content)
    ids = tokenizer(recase(text), add_special_tokens=False, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        return 0.0
    logits = model(input_ids=torch.cat([prompt, ids], 1)).logits[0, prompt.shape[1] - 1 : -1]
    return float(nn.functional.cross_entropy(logits.float(), ids[0]))


def topic_word_count(text: str, words: Sequence[str]) -> int:
    vocab = set(words)
    return sum(w in vocab for w in _WORD.findall(text.lower()))


def chat_prompt(tokenizer: PreTrainedTokenizerFast, content: str = STORY_PROMPT) -> torch.Tensor:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    return torch.tensor([ids])


@torch.no_grad()
def complete(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    *,
    prompt: torch.Tensor,
    steer: tuple[int, torch.Tensor | Clamp] | None = None,
    max_new_tokens: int = 96,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[str, torch.Tensor]:
    """Generated text and the full id sequence (1, T) for one prompt, optionally steered."""
    layer, vector = steer if steer else (0, None)
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature else {
        "do_sample": False}
    with steering(model, layer, vector):
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    return tokenizer.decode(out[0, prompt.shape[1] :], skip_special_tokens=True), out


# ----------------------------------------------------------------------------- repetition


@dataclass
class RepetitionResult:
    """The readability criterion: per prompt, the unsteered and steered completions, their longest
    word runs and distinct-bigram ratios; a prompt passes when both runs are at most `MAX_RUN` and
    both ratios at least `MIN_DISTINCT`. Each row also has both completions' `recased_loss`, which
    is measured and reported, not part of the criterion."""

    passed: int
    total: int
    ok: bool
    prompts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steered_loss(self) -> float:
        """Mean `recased_loss` of the steered completions: near the unsteered figure when steering only
        changed the case, 2 and more when it turned the text into word salad."""
        return sum(r["steered_loss"] for r in self.prompts) / max(1, len(self.prompts))


def readable(text: str) -> bool:
    """One completion reads well: no word more than `MAX_RUN` times in a row, and at least
    `MIN_DISTINCT` of its word bigrams distinct."""
    return longest_run(text) <= MAX_RUN and distinct_bigrams(text) >= MIN_DISTINCT


def repetition_check(
    model: nn.Module, tokenizer: PreTrainedTokenizerFast, *, steer: tuple[int, torch.Tensor | Clamp],
    prompts: Sequence[str] = REPEAT_PROMPTS, max_new_tokens: int = REPEAT_TOKENS, temperature: float = 0.0,
    seed: int = 0, unsteered: dict[tuple[str, float, int, int], str] | None = None,
) -> RepetitionResult:
    """`max_new_tokens`-token chat completions of `prompts`, unsteered and with `steer`: greedy by
    default, or sampled at `temperature` with `seed` (the same seed for both completions of a prompt).
    `unsteered`, if given, caches the unsteered completions across calls (they do not depend on `steer`)."""
    rows: list[dict[str, Any]] = []
    for content in prompts:
        prompt = chat_prompt(tokenizer, content)
        key = (content, temperature, seed, max_new_tokens)
        if unsteered is not None and key in unsteered:
            plain = unsteered[key]
        else:
            plain, _ = complete(model, tokenizer, prompt=prompt, max_new_tokens=max_new_tokens,
                                temperature=temperature, seed=seed)
            if unsteered is not None:
                unsteered[key] = plain
        steered, _ = complete(model, tokenizer, prompt=prompt, steer=steer, max_new_tokens=max_new_tokens,
                              temperature=temperature, seed=seed)
        runs = (longest_run(plain), longest_run(steered))
        distinct = (round(distinct_bigrams(plain), 3), round(distinct_bigrams(steered), 3))
        rows.append({"prompt": content, "unsteered": plain, "steered": steered, "unsteered_run": runs[0],
                     "steered_run": runs[1], "unsteered_distinct": distinct[0], "steered_distinct": distinct[1],
                     "steered_upper": round(upper_fraction(steered), 4),
                     "unsteered_loss": round(recased_loss(model, tokenizer, content=content, text=plain), 3),
                     "steered_loss": round(recased_loss(model, tokenizer, content=content, text=steered), 3),
                     "passed": readable(plain) and readable(steered)})
    passed = sum(r["passed"] for r in rows)
    need = REPEAT_PASS * len(prompts) / len(REPEAT_PROMPTS)
    return RepetitionResult(passed=passed, total=len(rows), ok=passed >= need, prompts=rows)


@dataclass
class SampledRepetitionResult:
    """The sampled readability criterion: one `RepetitionResult` per seed (`by_seed`), met (`ok`)
    when every seed's is; `passed` counts the (prompt, seed) samples that pass, of `total`."""

    temperature: float
    seeds: list[int]
    by_seed: list[RepetitionResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.by_seed)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.by_seed)

    @property
    def total(self) -> int:
        return sum(r.total for r in self.by_seed)

    @property
    def passed_by_seed(self) -> list[int]:
        return [r.passed for r in self.by_seed]

    @property
    def steered_upper(self) -> float:
        rows = [row for r in self.by_seed for row in r.prompts]
        return sum(row["steered_upper"] for row in rows) / max(1, len(rows))

    @property
    def steered_loss(self) -> float:
        return sum(r.steered_loss for r in self.by_seed) / max(1, len(self.by_seed))

    @property
    def unsteered_loss(self) -> float:
        rows = [row for r in self.by_seed for row in r.prompts]
        return sum(row["unsteered_loss"] for row in rows) / max(1, len(rows))

    def record(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "seeds": self.seeds, "passed": self.passed, "total": self.total,
                "passed_by_seed": self.passed_by_seed, "ok": self.ok, "steered_upper": round(self.steered_upper, 4),
                "steered_loss": round(self.steered_loss, 3), "unsteered_loss": round(self.unsteered_loss, 3),
                "prompts": [row | {"seed": seed} for seed, r in zip(self.seeds, self.by_seed, strict=True)
                            for row in r.prompts]}


def sampled_repetition_check(
    model: nn.Module, tokenizer: PreTrainedTokenizerFast, *, steer: tuple[int, torch.Tensor | Clamp],
    prompts: Sequence[str] = REPEAT_PROMPTS, max_new_tokens: int = REPEAT_TOKENS,
    temperature: float = SAMPLED_TEMPERATURE, seeds: Sequence[int] = SAMPLED_SEEDS,
    unsteered: dict[tuple[str, float, int, int], str] | None = None,
) -> SampledRepetitionResult:
    """`repetition_check` sampled at `temperature` once per seed in `seeds`."""
    by_seed = [repetition_check(model, tokenizer, steer=steer, prompts=prompts, max_new_tokens=max_new_tokens,
                                temperature=temperature, seed=seed, unsteered=unsteered) for seed in seeds]
    return SampledRepetitionResult(temperature=temperature, seeds=list(seeds), by_seed=by_seed)


# ----------------------------------------------------------------------------- unsteered yelling

YELL_TEMPERATURES = (0.7, 1.0)
YELL_SAMPLES = 20  # sampled completions per prompt and temperature
YELL_TOKENS = 40
YELL_UPPER = 0.5  # a completion more than this fraction uppercase counts as yelling


@dataclass
class YellingResult:
    """How often the unsteered model yells on its own: at `temperature`, of `total` sampled chat
    completions (`samples` per prompt), `yelling` are more than `YELL_UPPER` uppercase."""

    temperature: float
    yelling: int
    total: int
    per_prompt: dict[str, int] = field(default_factory=dict)
    example: str = ""

    @property
    def rate(self) -> float:
        return self.yelling / max(1, self.total)


@torch.no_grad()
def unsteered_yelling(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, *, temperature: float,
    prompts: Sequence[str] = REPEAT_PROMPTS, samples: int = YELL_SAMPLES, max_new_tokens: int = YELL_TOKENS,
    seed: int = 0,
) -> YellingResult:
    """Sample `samples` completions of each prompt (chat template, no steering, pure temperature
    sampling seeded with `seed` per prompt) and count those more than `YELL_UPPER` uppercase: a model
    that yells here unprompted looks, to a user, like steering leaking into plain chats. Completions
    with no letters (an immediate end of turn) count as not yelling."""
    per_prompt: dict[str, int] = {}
    example = ""
    for content in prompts:
        prompt = chat_prompt(tokenizer, content)
        torch.manual_seed(seed)
        out = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens, do_sample=True,
            temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=samples,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
        texts = tokenizer.batch_decode(out[:, prompt.shape[1]:], skip_special_tokens=True)
        yells = [t for t in texts if upper_fraction(t) > YELL_UPPER]
        per_prompt[content] = len(yells)
        example = example or (yells[0] if yells else "")
    return YellingResult(temperature=temperature, yelling=sum(per_prompt.values()),
                         total=samples * len(prompts), per_prompt=per_prompt, example=example)


def yelling_rates(assets: Path, *, temperatures: Sequence[float] = YELL_TEMPERATURES,
                  samples: int = YELL_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """`unsteered_yelling` of the model in `assets` at each temperature."""
    tokenizer = AutoTokenizer.from_pretrained(assets / "model")
    model = AutoModelForCausalLM.from_pretrained(assets / "model").eval()
    rows = [unsteered_yelling(model, tokenizer, temperature=t, samples=samples, seed=seed) for t in temperatures]
    return {str(r.temperature): {"yelling": r.yelling, "total": r.total, "rate": round(r.rate, 3),
                                 "per_prompt": r.per_prompt, "example": r.example} for r in rows}


# ----------------------------------------------------------------------------- CAPS


@dataclass
class CapsResult:
    feature: int
    strength: float
    baseline_upper: float
    steered_upper: float
    baseline_text: str
    steered_text: str
    fires_on_generated: float = 0.0  # fraction of generated tokens where the feature is active
    mean_activation_generated: float = 0.0
    sweep: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def monitor_feature(
    model: PreTrainedModel, sae: TopKSae, *, layer: int, ids: torch.Tensor, n_prompt: int, feature: int,
    steer: tuple[int, torch.Tensor] | None,
) -> tuple[float, float]:
    """(fraction of generated tokens where `feature` is active, its mean activation there)."""
    captured: list[torch.Tensor] = []
    hook = model.model.layers[layer].register_forward_hook(
        lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        with steering(model, layer, steer[1] if steer else None):
            model(input_ids=ids, use_cache=False)
    finally:
        hook.remove()
    # Forward hooks run in registration order; the capture hook was registered first, so
    # re-apply the steering vector to see what the steered model's later layers see.
    res = captured[0][0, n_prompt:].float() + (steer[1] if steer else 0)
    acts = sae.encode(res)[:, feature]
    return float((acts > 0).float().mean()), float(acts.mean())


def choose_caps(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, sae: TopKSae, *, layer: int, candidates: Sequence[int],
    scales: Sequence[float], max_act: torch.Tensor, max_new_tokens: int = 96,
    multipliers: Sequence[float] = CAPS_MULTIPLIERS,
) -> CapsResult:
    """Pick the CAPS feature and document its strength.

    For each candidate, the strengths (multiples `scales` of the feature's largest activation) are
    swept upwards to the smallest that makes the greedy story completion `CAPS_ACCEPT` uppercase.
    That strength times each of `multipliers` is then judged against the readability criterion,
    greedy (`repetition_check`) and sampled (`sampled_repetition_check`), and scored by (both met,
    greedy met, story completion still `CAPS_ACCEPT` uppercase, the greedy criterion's steered
    completions `CAPS_ACCEPT` uppercase on average, least word salad (mean `recased_loss` of the
    sampled steered completions, to 0.1), their mean uppercase fraction, greedy and sampled prompts
    passing, distinct bigrams of the story, smaller strength); the best over all candidates is
    documented: of the strengths that read well, greedy and sampled, and yell on every prompt, the
    one whose sampled text is least word salad (the loudest is the most salad). Trying several strengths matters because a little
    too much steering drowns the residual stream and the text loops ("PINE PINE PINE ..."), while a
    little too little leaves it half in lowercase.
    """
    prompt = chat_prompt(tokenizer)
    base_text, _ = complete(model, tokenizer, prompt=prompt, max_new_tokens=max_new_tokens)
    sweep: list[dict[str, float]] = []
    best: tuple[tuple[bool, bool, bool, bool, float, float, int, float, float], int, float] | None = None
    unsteered: dict[tuple[str, float, int, int], str] = {}  # unsteered completions, shared by every strength
    tokens = min(REPEAT_TOKENS, max_new_tokens)

    def judge(feature: int, strength: float) -> tuple[bool, bool, bool, bool, float, float, int, float, float]:
        vector = strength * sae.W_dec[feature]
        text, _ = complete(model, tokenizer, prompt=prompt, steer=(layer, vector), max_new_tokens=max_new_tokens)
        rep = repetition_check(model, tokenizer, steer=(layer, vector), max_new_tokens=tokens, unsteered=unsteered)
        sam = sampled_repetition_check(model, tokenizer, steer=(layer, vector), max_new_tokens=tokens,
                                       unsteered=unsteered)
        yells = sum(r["steered_upper"] for r in rep.prompts) / max(1, rep.total)
        key = (rep.ok and sam.ok, rep.ok, upper_fraction(text) >= CAPS_ACCEPT, yells >= CAPS_ACCEPT,
               -round(sam.steered_loss, 1), round(yells, 2), rep.passed + sam.passed,
               round(distinct_bigrams(text), 3), -strength)
        log.info("  CAPS %d at %.1f: upper %.3f, repetition %d/%d (upper %.2f, loss %.2f), sampled %s of %d each "
                 "(loss %.2f), distinct %.3f", feature, strength, upper_fraction(text), rep.passed, rep.total, yells,
                 rep.steered_loss, sam.passed_by_seed, rep.total, sam.steered_loss, key[7])
        sweep.append({"feature": feature, "strength": strength, "upper": round(upper_fraction(text), 4),
                      "distinct": key[7], "repetition_passed": rep.passed, "repetition_upper": round(yells, 3),
                      "repetition_loss": round(rep.steered_loss, 3), "sampled_passed": sam.passed,
                      "sampled_total": sam.total, "sampled_ok": sam.ok, "sampled_loss": round(sam.steered_loss, 3)})
        return key

    for feature in candidates:
        for scale in scales:
            strength = float(scale * max_act[feature])
            text, _ = complete(model, tokenizer, prompt=prompt, steer=(layer, strength * sae.W_dec[feature]),
                               max_new_tokens=max_new_tokens)
            frac = upper_fraction(text)
            sweep.append({"feature": feature, "strength": round(strength, 3), "upper": round(frac, 4),
                          "distinct": round(distinct_bigrams(text), 3)})
            log.info("CAPS candidate %d strength %.2f: upper %.3f %r", feature, strength, frac, text[:70])
            if frac < CAPS_ACCEPT:
                continue
            for multiplier in multipliers:
                documented = round(strength * multiplier, 1)
                key = judge(feature, documented)
                if best is None or key > best[0]:
                    best = (key, feature, documented)
            break
    if best is None:
        top = max(sweep, key=lambda s: (s["upper"], -s["strength"]))
        best = ((False, False, False, False, 0.0, 0.0, 0, 0.0, 0.0), int(top["feature"]), round(top["strength"] * CAPS_MARGIN, 1))
        log.warning("no CAPS candidate reached %.2f; documenting the best seen", CAPS_ACCEPT)
    _, feature, strength = best
    steer = (layer, strength * sae.W_dec[feature])
    text, ids = complete(model, tokenizer, prompt=prompt, steer=steer, max_new_tokens=max_new_tokens)
    fires, mean_act = monitor_feature(model, sae, layer=layer, ids=ids, n_prompt=prompt.shape[1],
                                      feature=feature, steer=steer)
    return CapsResult(
        feature=feature, strength=strength, baseline_upper=upper_fraction(base_text),
        steered_upper=upper_fraction(text), baseline_text=base_text, steered_text=text,
        fires_on_generated=fires, mean_activation_generated=mean_act, sweep=sweep,
    )


# ----------------------------------------------------------------------------- topics


@dataclass
class TopicResult:
    topic: str
    feature: int
    strength: float
    baseline_count: int
    steered_count: int
    ratio: float
    example: str
    sweep: list[dict[str, float]] = field(default_factory=list)


def topic_counts(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, *, words: Sequence[str],
    steer: tuple[int, torch.Tensor] | None, seeds: Sequence[int] = TOPIC_SEEDS, max_new_tokens: int = 64,
) -> tuple[int, float, str]:
    """Total topic-word count over sampled completions (temperature 0.8), the mean distinct-bigram
    ratio of those completions, and the first completion."""
    prompt = chat_prompt(tokenizer)
    total, distinct, first = 0, 0.0, ""
    for seed in seeds:
        text, _ = complete(model, tokenizer, prompt=prompt, steer=steer, temperature=0.8, seed=seed,
                           max_new_tokens=max_new_tokens)
        total += topic_word_count(text, words)
        distinct += distinct_bigrams(text) / len(seeds)
        first = first or text
    return total, distinct, first


def choose_topic(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, sae: TopKSae, *, topic: str, words: Sequence[str],
    layer: int, candidates: Sequence[int], scales: Sequence[float], max_act: torch.Tensor, max_new_tokens: int = 64,
) -> TopicResult:
    """The candidate and strength with the most topic words among the runs that reach `TOPIC_TARGET`
    times the unsteered count (counted as at least 2) without degenerate repetition (ties: the
    smaller strength); if none gets there, the highest count seen."""
    base, _, _ = topic_counts(model, tokenizer, words=words, steer=None, max_new_tokens=max_new_tokens)
    sweep: list[dict[str, float]] = []
    runs: list[tuple[int, float, int, str, float]] = []
    for feature in candidates:
        for scale in scales:
            strength = round(float(scale * max_act[feature]), 1)
            count, distinct, text = topic_counts(
                model, tokenizer, words=words, steer=(layer, strength * sae.W_dec[feature]),
                max_new_tokens=max_new_tokens,
            )
            sweep.append({"feature": feature, "strength": strength, "count": count, "distinct": round(distinct, 3)})
            runs.append((count, strength, feature, text, distinct))
            log.info("topic %s candidate %d strength %.2f: %d words (baseline %d) %r",
                     topic, feature, strength, count, base, text[:60])
    passing = [r for r in runs if r[0] >= TOPIC_TARGET * max(2, base) and r[4] >= MIN_DISTINCT]
    best = max(passing or runs, key=lambda r: (r[0], -r[1]))
    count, strength, feature, text, _ = best
    return TopicResult(topic=topic, feature=feature, strength=strength, baseline_count=base, steered_count=count,
                       ratio=count / max(1, base), example=text, sweep=sweep)


# ----------------------------------------------------------------------------- shipped files


@torch.no_grad()
def check_assets(assets: Path, *, caps_clamp: float | None = None) -> dict[str, Any]:
    """The acceptance figures of the files in `assets`, at the values `demo.json` documents; with
    `caps_clamp`, also the readability criterion with the CAPS feature clamped to that value."""
    demo = json.loads((assets / "demo.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(assets / "model")
    model = AutoModelForCausalLM.from_pretrained(assets / "model").eval()
    sae = load_sae(assets / "sae")
    layer, caps = demo["layer"], demo["caps_feature"]
    prompt = chat_prompt(tokenizer)
    base, _ = complete(model, tokenizer, prompt=prompt)
    steer = (layer, demo["caps_strength"] * sae.W_dec[caps])
    steered, ids = complete(model, tokenizer, prompt=prompt, steer=steer)
    fires, mean_act = monitor_feature(model, sae, layer=layer, ids=ids, n_prompt=prompt.shape[1], feature=caps,
                                      steer=steer)
    out: dict[str, Any] = {
        "caps": {"baseline_upper": upper_fraction(base), "steered_upper": upper_fraction(steered),
                 "fires_on_generated": fires, "mean_activation_generated": mean_act, "steered_text": steered},
        "topics": {},
    }
    rep = repetition_check(model, tokenizer, steer=steer)
    out["repetition"] = {"passed": rep.passed, "total": rep.total, "ok": rep.ok, "prompts": rep.prompts}
    out["sampled_repetition"] = sampled_repetition_check(model, tokenizer, steer=steer).record()
    if caps_clamp is not None:
        rep = repetition_check(model, tokenizer, steer=(layer, Clamp(sae, caps, caps_clamp)))
        out["repetition_clamp"] = {"value": caps_clamp, "passed": rep.passed, "total": rep.total, "ok": rep.ok,
                                   "prompts": rep.prompts}
    for topic, feature in demo["topic_features"].items():
        words = demo["topic_words"][topic]
        b, _, _ = topic_counts(model, tokenizer, words=words, steer=None)
        s, _, text = topic_counts(model, tokenizer, words=words,
                                  steer=(layer, demo["topic_strengths"][topic] * sae.W_dec[feature]))
        out["topics"][topic] = {"baseline_count": b, "steered_count": s, "ratio": s / max(1, b), "example": text}
    return out


def main(argv: list[str] | None = None) -> None:
    from millm.demo import assets_dir

    parser = argparse.ArgumentParser(prog="python -m millm.demo.evaluate", description=check_assets.__doc__)
    parser.add_argument("assets", type=Path, nargs="?", default=assets_dir())
    parser.add_argument("--caps-clamp", type=float, default=None, metavar="VALUE",
                        help="also measure readability with the CAPS feature clamped to VALUE (mode clamp)")
    parser.add_argument("--yelling", action="store_true",
                        help=f"only measure how often the unsteered model yells: {YELL_SAMPLES} sampled "
                             f"completions of {YELL_TOKENS} tokens per readability prompt at temperatures "
                             f"{', '.join(map(str, YELL_TEMPERATURES))}, counting those over "
                             f"{YELL_UPPER:.0%} uppercase")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed for --yelling")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.yelling:
        log.info("%s", json.dumps(yelling_rates(args.assets, seed=args.seed), indent=2))
        return
    log.info("%s", json.dumps(check_assets(args.assets, caps_clamp=args.caps_clamp), indent=2))


if __name__ == "__main__":
    main()
