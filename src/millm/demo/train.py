"""Retrain the whole demo from scratch: `python -m millm.demo.train [--mini] [--out DIR] [--seed N]`.

Contract: one seeded run generates the corpus, trains the tokenizer, the model and the SAE,
labels every feature, measures the acceptance figures (`millm.demo.evaluate`) to pick and
document the CAPS and topic strengths, and writes into `--out` (default: the package assets):
`model/`, `sae/`, `labels.json`, `profiles.json`, `demo.json`; plus the training report
(`demo-training.md`, `demo-loss.png`) into `--report-dir` (default: the repository's `docs/` when
writing the package assets, else `<out>/report`). `--mini` runs the same code on a toy
configuration in seconds (CI uses it so the pipeline cannot rot). `--sae-only` keeps an already
trained model (`--model-dir`, default: the model in `--out`) and redoes everything from the SAE on,
with the same seed and corpus, so it writes the same outputs except the model.

With `PipelineConfig.pin_caps` (on in the full configuration), the SAE's CAPS feature is a pinned
(supervised) latent: its decoder row is fixed during SAE training to the mean difference between
the residuals of yelling and normal assistant tokens (`yelling_direction`), and only its encoder
learns. Steering it adds that direction, which carries "yelling" without being tied to any word.
With `PipelineConfig.pin_topics`, one more latent per topic is pinned the same way, to the mean
difference between the residuals of that topic's tokens and the other topics' (`topic_direction`),
and each topic's steering feature is chosen among its learned candidates and that pinned latent.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from millm.demo import DEMO_MODEL_ID, DEMO_SAE_ID, assets_dir
from millm.demo.corpus import TOPIC_NAMES, CorpusConfig, generate_corpus
from millm.demo.corpus_words import TOPICS
from millm.demo.evaluate import (
    REPEAT_TOKENS,
    TOPIC_TARGET,
    YELL_TEMPERATURES,
    CapsResult,
    TopicResult,
    choose_caps,
    choose_topic,
    repetition_check,
    sampled_repetition_check,
    unsteered_yelling,
)
from millm.demo.labels import FeatureStatistics, attribute_masks, build_labels, feature_statistics, ranked_features
from millm.demo.model_training import ModelConfig, save_model, train_model
from millm.demo.profiles import build_profiles
from millm.demo.report import write_report
from millm.demo.sae_training import (
    SaeConfig,
    SaeTrainingResult,
    TopKSae,
    collect_activations,
    reconstruction_quality,
    save_sae,
    train_sae,
)
from millm.demo.tokenizer import ROLE_CODES, EncodedCorpus, corpus_texts, encode_corpus, train_tokenizer

log = logging.getLogger(__name__)

DEFAULT_THREADS = 2
# Where the chosen features are put in the shipped SAE. The UI journey, the docs, the profiles and
# the tests name these indices, so a retrain keeps them: the pipeline permutes the SAE's latents
# (columns of W_enc and entries of b_enc together with rows of W_dec, and the labels), which leaves
# the SAE's function unchanged, so that the CAPS feature is 16 and each topic's feature sits here.
FIXED_INDICES = {"caps": 16, "ocean": 102, "space": 40, "forest": 702, "food": 159, "city": 186, "winter": 81}


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    n_docs: int
    n_eval_docs: int
    vocab_size: int
    model: ModelConfig
    sae: SaeConfig
    layer: int
    sae_train_tokens: int
    sae_eval_tokens: int
    caps_candidates: int = 4
    caps_scales: tuple[float, ...] = (1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0, 6.0)
    topic_candidates: int = 2
    topic_scales: tuple[float, ...] = (2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0)
    topics: tuple[str, ...] = TOPIC_NAMES
    eval_tokens: dict[str, int] = field(default_factory=lambda: {"caps": 96, "topic": 64})
    fixed_indices: dict[str, int] = field(default_factory=lambda: dict(FIXED_INDICES))
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    # Pin one SAE latent's decoder row to the yelling direction and document it as the CAPS feature
    # (see the module docstring); False: the CAPS feature is chosen among the learned latents.
    pin_caps: bool = False
    # The latent pinned during training; None: the last, outside every Matryoshka prefix, so the
    # learned features form much as without it (pinned at 0, inside every prefix, it displaced the
    # strongest ocean feature: ocean steering fell from 0 -> 52 topic words to 0 -> 10).
    pin_index: int | None = None
    # Also pin one latent per topic to its mean direction and offer it as that topic's candidate. At layer 0 the
    # learned topic features steered weakly (the 1,200-step model, seed 0: space 13 -> 41, forest 12 -> 44, food
    # 13 -> 25 and city 12 -> 12 topic words, among eight candidates each), where the mean directions, added by
    # hand, gave space 13 -> 63, forest 12 -> 88, food 13 -> 52 and city 12 -> 55.
    pin_topics: bool = False


FULL = PipelineConfig(
    name="full", n_docs=24_000, n_eval_docs=1_500, vocab_size=4096, model=ModelConfig(), sae=SaeConfig(),
    layer=0, sae_train_tokens=250_000, sae_eval_tokens=100_000, pin_caps=True, pin_topics=True,
)
MINI = PipelineConfig(
    name="mini", n_docs=300, n_eval_docs=40, vocab_size=600,
    model=ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, context=64, batch_size=4, steps=6, warmup=2,
                      eval_every=3),
    sae=SaeConfig(d_sae=64, k=4, batch_size=256, epochs=2, dead_after_tokens=512),
    layer=1, sae_train_tokens=3_000, sae_eval_tokens=1_000,
    caps_candidates=1, caps_scales=(1.0,), topic_candidates=1, topic_scales=(1.0,), topics=("ocean",),
    eval_tokens={"caps": 8, "topic": 8, "repeat": 8}, fixed_indices={"caps": 16, "ocean": 40}, pin_caps=True,
    pin_topics=True,
)


@dataclass
class SaeStage:
    result: SaeTrainingResult
    quality: dict[str, float]
    stats: FeatureStatistics
    labels: dict[str, dict[str, Any]]
    n_train_tokens: int
    n_eval_tokens: int
    pinned_caps: int | None = None  # the latent pinned to the yelling direction, if any
    pinned_topics: dict[str, int] = field(default_factory=dict)  # topic -> the latent pinned to its direction


def _doc_starts(enc: EncodedCorpus) -> np.ndarray:
    return np.flatnonzero(np.r_[True, enc.doc[1:] != enc.doc[:-1]])


def run(
    cfg: PipelineConfig, *, out: Path, report_dir: Path, seed: int, threads: int = DEFAULT_THREADS,
    model_dir: Path | None = None,
) -> dict[str, Any]:
    """The whole pipeline; with `model_dir`, the model and tokenizer saved there are reused
    (copied to `out/model`) instead of trained, and everything from the SAE on is redone."""
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    docs = generate_corpus(cfg.n_docs, seed, cfg.corpus)
    eval_docs = generate_corpus(cfg.n_eval_docs, seed + 1000, cfg.corpus)
    if model_dir is None:
        tokenizer = train_tokenizer(corpus_texts(docs), cfg.vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    enc, ev = encode_corpus(tokenizer, docs), encode_corpus(tokenizer, eval_docs)
    log.info("corpus: %d docs, %d tokens, vocabulary %d", len(docs), len(enc.ids), len(tokenizer))

    if model_dir is None:
        mres = train_model(ids=enc.ids, doc_starts=_doc_starts(enc), eval_ids=ev.ids, eval_starts=_doc_starts(ev),
                           tokenizer=tokenizer, cfg=cfg.model, seed=seed)
        model = mres.model
        save_model(model, tokenizer, out / "model")
        model_record = {"final_loss": float(np.mean(mres.losses[-20:])), "held_out_loss": mres.eval_losses[-1][1],
                        "model_seconds": mres.seconds, "losses": [round(x, 5) for x in mres.losses],
                        "eval_losses": [[s, round(v, 5)] for s, v in mres.eval_losses]}
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        if (out / "model").resolve() != model_dir.resolve():
            shutil.copytree(model_dir, out / "model", dirs_exist_ok=True)
        model_record = reused_model_record(model_dir)
    ctx = cfg.model.context
    stage = sae_stage(cfg, model=model, tokenizer=tokenizer, enc=enc, ev=ev, seed=seed)
    caps, topics = measure_stage(cfg, model=model, tokenizer=tokenizer, sae=stage.result.sae, stats=stage.stats,
                                 labels=stage.labels, caps_candidates=None if stage.pinned_caps is None else [stage.pinned_caps],
                                 pinned_topics=stage.pinned_topics)
    topics_pinned = [n for n, t in topics.items() if stage.pinned_topics.get(n) == t.feature]
    perm = placement({"caps": caps.feature} | {n: t.feature for n, t in topics.items()}, cfg.fixed_indices,
                     d_sae=cfg.sae.d_sae)
    sae = permute_sae(stage.result.sae, perm)
    labels, caps, topics = permute_results(perm, stage.labels, caps, topics)
    sae_cfg = save_sae(sae, out / "sae", model_name=DEMO_MODEL_ID, layer=cfg.layer, context=ctx)
    caps_steer = (cfg.layer, caps.strength * sae.W_dec[caps.feature])
    repeat_tokens = cfg.eval_tokens.get("repeat", REPEAT_TOKENS)
    repetition = repetition_check(model, tokenizer, steer=caps_steer, max_new_tokens=repeat_tokens)
    sampled = sampled_repetition_check(model, tokenizer, steer=caps_steer, max_new_tokens=repeat_tokens)
    log.info("repetition: %d of %d prompts pass greedy, %s sampled (seeds %s)", repetition.passed, repetition.total,
             sampled.passed_by_seed, sampled.seeds)
    yelling = {str(t): unsteered_yelling(model, tokenizer, temperature=t) for t in YELL_TEMPERATURES}
    log.info("unsteered yelling: %s", {t: f"{y.yelling}/{y.total}" for t, y in yelling.items()})
    quality = stage.quality
    words = {t.name: list(t.words) for t in TOPICS}

    summary: dict[str, Any] = {
        "training": {
            "seed": seed, "config": cfg.name, "threads": threads, "n_docs": cfg.n_docs, "n_eval_docs": cfg.n_eval_docs,
            "n_tokens": int(len(enc.ids)), "vocab_size": len(tokenizer),
            "n_params": sum(p.numel() for p in model.parameters()),
            "model_shape": f"d_model {cfg.model.d_model}, {cfg.model.n_layers} layers, {cfg.model.n_heads} heads, "
                           f"d_ff {cfg.model.d_ff}, context {ctx}",
            "steps": cfg.model.steps, "tokens_per_step": cfg.model.batch_size * ctx, **model_record,
            "model_config": asdict(cfg.model), "sae_config": asdict(cfg.sae),
        },
        "sae": {
            "architecture": sae_cfg["architecture"], "k": cfg.sae.k, "d_in": sae_cfg["d_in"],
            "d_sae": sae_cfg["d_sae"], "hook_name": sae_cfg["metadata"]["hook_name"],
            "n_train_tokens": stage.n_train_tokens, "n_eval_tokens": stage.n_eval_tokens,
            "seconds": stage.result.seconds, "caps_pinned": stage.pinned_caps is not None,
            "topics_pinned": topics_pinned, **quality,
        },
        "caps": asdict(caps),
        "topics": {name: asdict(t) for name, t in topics.items()},
        "repetition": asdict(repetition),
        "sampled_repetition": sampled.record(),
        "yelling": {t: asdict(y) for t, y in yelling.items()},
    }
    summary["training"]["total_seconds"] = time.perf_counter() - t0
    demo = demo_manifest(summary, layer=cfg.layer, words=words)
    summary["documented_topics"] = list(demo["topic_features"])
    (out / "labels.json").write_text(json.dumps(labels, indent=1, ensure_ascii=False) + "\n")
    (out / "profiles.json").write_text(json.dumps(build_profiles(demo, labels), indent=2) + "\n")
    (out / "demo.json").write_text(json.dumps(demo, indent=2) + "\n")
    write_report(summary, labels, report_dir)
    log.info("done in %.0f s; assets in %s, report in %s", summary["training"]["total_seconds"], out, report_dir)
    return demo


def sae_stage(
    cfg: PipelineConfig, *, model: torch.nn.Module, tokenizer: Any, enc: EncodedCorpus, ev: EncodedCorpus, seed: int,
) -> SaeStage:
    """Collect residuals, train the SAE, measure it on held-out text and label its features."""
    ctx, bos = cfg.model.context, tokenizer.bos_token_id
    train_acts, train_index = collect_activations(model, ids=enc.ids, doc_starts=_doc_starts(enc), layer=cfg.layer,
                                                  context=ctx, max_tokens=cfg.sae_train_tokens, bos_id=bos)
    eval_acts, eval_index = collect_activations(model, ids=ev.ids, doc_starts=_doc_starts(ev), layer=cfg.layer,
                                                context=ctx, max_tokens=cfg.sae_eval_tokens, bos_id=bos)
    names = [f"topic:{n}" for n in cfg.topics] if cfg.pin_topics else []
    dirs = [topic_direction(train_acts, enc, train_index, TOPIC_NAMES.index(n)) for n in cfg.topics] if names else []
    if cfg.pin_caps:  # last, so that without topics the CAPS latent is the last latent as before
        names.append("caps")
        dirs.append(yelling_direction(train_acts, enc, train_index))
    pinned = torch.stack(dirs) if dirs else None
    pin_at = cfg.sae.d_sae - len(dirs) if cfg.pin_index is None else cfg.pin_index
    for i, (name, d) in enumerate(zip(names, dirs, strict=True)):
        log.info("SAE latent %d pinned to the %s direction (norm %.3f)", pin_at + i, name, float(d.norm()))
    sres = train_sae(train_acts, cfg.sae, seed, pinned=pinned, pinned_at=pin_at)
    quality = reconstruction_quality(sres.sae, eval_acts)
    log.info("SAE: FVE %.4f, L0 %.2f, dead %.3f", quality["fve"], quality["l0"], quality["dead_fraction"])
    stats = feature_statistics(sres.sae, eval_acts, attribute_masks(ev, eval_index))
    labels = build_labels(stats, tokenizer=tokenizer, enc=ev, index=eval_index)
    return SaeStage(result=sres, quality=quality, stats=stats, labels=labels,
                    n_train_tokens=len(train_acts), n_eval_tokens=len(eval_acts),
                    pinned_caps=pin_at + len(dirs) - 1 if cfg.pin_caps else None,
                    pinned_topics={n: pin_at + i for i, n in enumerate(cfg.topics)} if cfg.pin_topics else {})


def yelling_direction(acts: torch.Tensor, enc: EncodedCorpus, index: np.ndarray) -> torch.Tensor:
    """Mean residual of yelling assistant tokens minus that of normal assistant tokens (d_in,): the
    direction the model itself uses for "this answer is in capitals", averaged over every word, so
    it is tied to none. Over all tokens when the sample has no yelling assistant token."""
    yell = torch.from_numpy(enc.yelling[index])
    asst = torch.from_numpy(enc.role[index] == ROLE_CODES["assistant"])
    if not (yell & asst).any() or not (~yell & asst).any():
        asst = torch.ones_like(asst)
    return acts[yell & asst].mean(0) - acts[~yell & asst].mean(0)


def topic_direction(acts: torch.Tensor, enc: EncodedCorpus, index: np.ndarray, topic: int) -> torch.Tensor:
    """Mean residual of the tokens of topic `topic` (an index into TOPIC_NAMES) minus that of the other topics'
    tokens (d_in,); tokens without a topic are left out of both."""
    t = torch.from_numpy(enc.topic[index]).long()
    if not (t == topic).any() or not ((t != topic) & (t >= 0)).any():
        raise ValueError(f"no tokens of topic {TOPIC_NAMES[topic]!r}, or of no other topic, to pin its direction")
    return acts[t == topic].mean(0) - acts[(t != topic) & (t >= 0)].mean(0)


def reused_model_record(model_dir: Path) -> dict[str, Any]:
    """The training figures of a model `--sae-only` reuses, from the `demo.json` beside it."""
    manifest = model_dir.parent / "demo.json"
    measured = json.loads(manifest.read_text()).get("measured", {}) if manifest.is_file() else {}
    return {"final_loss": float(measured.get("final_loss", float("nan"))),
            "held_out_loss": float(measured.get("held_out_loss", float("nan"))),
            "model_seconds": 0.0, "losses": [], "eval_losses": [], "model_reused": str(model_dir)}


def topic_candidates(
    stats: FeatureStatistics, labels: dict[str, dict[str, Any]], attribute: str, n: int, *, exclude: set[int],
) -> list[int]:
    """The `n` latents most correlated with `attribute`, those labelled with it first (a topic
    profile should show its topic's label), never one in `exclude` (the CAPS feature, pinned latents)."""
    ranked = [f for f in ranked_features(stats, attribute, 4 * n + len(exclude)) if f not in exclude]
    labelled = [f for f in ranked if labels[str(f)].get("attribute") == attribute]
    return (labelled + [f for f in ranked if f not in labelled])[:n]


def measure_stage(
    cfg: PipelineConfig, *, model: torch.nn.Module, tokenizer: Any, sae: TopKSae, stats: FeatureStatistics,
    labels: dict[str, dict[str, Any]], caps_candidates: list[int] | None = None,
    pinned_topics: dict[str, int] | None = None,
) -> tuple[CapsResult, dict[str, TopicResult]]:
    """Pick and document the CAPS feature (among `caps_candidates`, default: the latents most
    correlated with ALL CAPS) and one other feature per topic by steering the model (among its learned
    candidates, plus its pinned latent in `pinned_topics` if any)."""
    pinned_topics = pinned_topics or {}
    caps = choose_caps(model, tokenizer, sae, layer=cfg.layer,
                       candidates=caps_candidates or ranked_features(stats, "caps", cfg.caps_candidates),
                       scales=cfg.caps_scales, max_act=stats.max_act, max_new_tokens=cfg.eval_tokens["caps"])
    log.info("CAPS feature %d strength %.1f: upper %.3f -> %.3f", caps.feature, caps.strength,
             caps.baseline_upper, caps.steered_upper)
    words = {t.name: list(t.words) for t in TOPICS}
    topics = {}
    for name in cfg.topics:
        topics[name] = choose_topic(model, tokenizer, sae, topic=name, words=words[name], layer=cfg.layer,
                                    candidates=topic_candidates(
                                        stats, labels, f"topic:{name}", cfg.topic_candidates,
                                        exclude={caps.feature, *pinned_topics.values()},
                                    ) + ([pinned_topics[name]] if name in pinned_topics else []),
                                    scales=cfg.topic_scales, max_act=stats.max_act,
                                    max_new_tokens=cfg.eval_tokens["topic"])
        log.info("topic %s: feature %d strength %.1f, words %d -> %d", name, topics[name].feature,
                 topics[name].strength, topics[name].baseline_count, topics[name].steered_count)
    return caps, topics


def placement(chosen: dict[str, int], fixed: dict[str, int], *, d_sae: int) -> list[int]:
    """A permutation of the latents (new index -> old index) that puts each chosen feature at its
    fixed index. The feature that sat there takes the chosen feature's old place. A feature chosen
    twice (two topics sharing one) stays where the first placed it."""
    perm = list(range(d_sae))
    placed: set[int] = set()
    for name, old in chosen.items():
        target = fixed.get(name)
        if target is None or old in placed or not 0 <= target < d_sae:
            continue
        here = perm.index(old)
        perm[here], perm[target] = perm[target], perm[here]
        placed.add(old)
    return perm


@torch.no_grad()
def permute_sae(sae: TopKSae, perm: list[int]) -> TopKSae:
    """The same SAE with latent `i` taken from latent `perm[i]`: encode/decode are unchanged up to
    the order of the features."""
    out = TopKSae(sae.W_enc.shape[0], sae.W_enc.shape[1], sae.k)
    idx = torch.tensor(perm)
    out.W_enc.data = sae.W_enc.data[:, idx].clone()
    out.b_enc.data = sae.b_enc.data[idx].clone()
    out.W_dec.data = sae.W_dec.data[idx].clone()
    out.b_dec.data = sae.b_dec.data.clone()
    return out.eval()


def permute_results(
    perm: list[int], labels: dict[str, dict[str, Any]], caps: CapsResult, topics: dict[str, TopicResult]
) -> tuple[dict[str, dict[str, Any]], CapsResult, dict[str, TopicResult]]:
    """Labels and measured results renumbered for the permuted SAE (`permute_sae` with `perm`)."""
    new_of = {old: new for new, old in enumerate(perm)}

    def renumber(sweep: list[dict[str, float]]) -> list[dict[str, float]]:
        return [s | {"feature": new_of[int(s["feature"])]} for s in sweep]

    labels = {str(new): labels[str(old)] for new, old in enumerate(perm)}
    caps = replace(caps, feature=new_of[caps.feature], sweep=renumber(caps.sweep))
    topics = {n: replace(t, feature=new_of[t.feature], sweep=renumber(t.sweep)) for n, t in topics.items()}
    return labels, caps, topics


def demo_manifest(summary: dict[str, Any], *, layer: int, words: dict[str, list[str]]) -> dict[str, Any]:
    """`demo.json`: the documented features, strengths and the figures they were chosen with."""
    caps, tr, sae = summary["caps"], summary["training"], summary["sae"]
    # Only topics whose steering was verified (TOPIC_TARGET × the unsteered count) are documented;
    # ocean, the topic profile, always is, and its figures say whether it passed.
    topics = {
        name: t for name, t in summary["topics"].items()
        if name == "ocean" or t["steered_count"] >= TOPIC_TARGET * max(2, t["baseline_count"])
    }
    return {
        "model_id": DEMO_MODEL_ID,
        "sae_id": DEMO_SAE_ID,
        "hook_name": f"blocks.{layer}.hook_resid_post",
        "layer": layer,
        "d_sae": sae["d_sae"],
        "caps_feature": caps["feature"],
        "caps_strength": caps["strength"],
        "topic_features": {name: t["feature"] for name, t in topics.items()},
        "topic_strengths": {name: t["strength"] for name, t in topics.items()},
        "topic_words": {name: words[name] for name in topics},
        "measured": {
            "caps_baseline_upper": round(caps["baseline_upper"], 4),
            "caps_steered_upper": round(caps["steered_upper"], 4),
            "caps_fires_on_generated": round(caps["fires_on_generated"], 4),
            "repetition_passed": [summary["repetition"]["passed"], summary["repetition"]["total"]],
            # per seed: prompts of the sampled criterion (temperature 0.8) passing, of 5
            "sampled_repetition_passed": summary["sampled_repetition"]["passed_by_seed"],
            # answers over half uppercase without steering, of those sampled, per temperature
            "unsteered_yelling": {t: [y["yelling"], y["total"]] for t, y in summary["yelling"].items()},
            "topic_word_counts": {n: [t["baseline_count"], t["steered_count"]] for n, t in topics.items()},
            "sae_fve": round(sae["fve"], 4),
            "sae_l0": round(sae["l0"], 2),
            "final_loss": round(tr["final_loss"], 4),
            "held_out_loss": round(tr["held_out_loss"], 4),
            "caps_pinned": sae.get("caps_pinned", False),
            "topics_pinned": sae.get("topics_pinned", []),  # topics whose chosen feature is a pinned latent
            "n_params": tr["n_params"],
            "train_seconds": round(tr["total_seconds"]),
            "seed": tr["seed"],
            "config": tr["config"],
        },
    }


def _default_report_dir(out: Path) -> Path:
    docs = Path(__file__).resolve().parents[3] / "docs"
    if out.resolve() == assets_dir().resolve() and docs.is_dir():
        return docs
    return out / "report"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m millm.demo.train", description=__doc__.splitlines()[0])
    parser.add_argument("--mini", action="store_true", help="toy configuration that runs in seconds")
    parser.add_argument("--out", type=Path, default=assets_dir(), help="where to write the assets")
    parser.add_argument("--report-dir", type=Path, default=None, help="where to write the training report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="torch CPU threads (1 is faster when other jobs share the cores)")
    parser.add_argument("--sae-only", action="store_true",
                        help="keep the trained model in --model-dir and redo the SAE, labels, strengths and report")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="with --sae-only: the model to keep (default: OUT/model)")
    args = parser.parse_args(argv)
    if args.model_dir is not None and not args.sae_only:
        parser.error("--model-dir needs --sae-only")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    model_dir = (args.model_dir or args.out / "model") if args.sae_only else None
    run(MINI if args.mini else FULL, out=args.out, report_dir=args.report_dir or _default_report_dir(args.out),
        seed=args.seed, threads=args.threads, model_dir=model_dir)


if __name__ == "__main__":
    main()
