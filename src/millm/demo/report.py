"""The demo training report: a loss-curve PNG and a Markdown page with the measured figures.

Contract: `write_report(summary, labels, report_dir)` writes `demo-training.md` and `demo-loss.png`
into `report_dir`. `summary` is the dict `millm.demo.train` also stores in `demo.json` (keys
"training", "sae", "caps", "topics"); nothing here trains or measures anything. matplotlib is a
dev dependency, imported only here; without it the PNG is skipped with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOSS_PNG = "demo-loss.png"
REPORT_MD = "demo-training.md"


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def write_loss_plot(losses: list[float], eval_losses: list[list[float]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed; skipping %s", path)
        return False
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = range(1, len(losses) + 1)
    ax.plot(steps, losses, color="#bbbbbb", linewidth=0.8, label="train (per step)")
    ax.plot(steps, _smooth(losses, 20), color="#1f77b4", linewidth=1.5, label="train (20-step mean)")
    if eval_losses:
        ax.plot([s for s, _ in eval_losses], [v for _, v in eval_losses], "o-", color="#d62728", label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_yscale("log")
    ax.set_title("miLLM demo model: training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _top_features(labels: dict[str, dict[str, Any]], n_per_attribute: int = 3) -> list[tuple[str, dict[str, Any]]]:
    """The few features most correlated with each labelled attribute."""
    by_attr: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for idx, lab in labels.items():
        if lab.get("attribute"):
            by_attr.setdefault(lab["attribute"], []).append((idx, lab))
    rows: list[tuple[str, dict[str, Any]]] = []
    for attr in sorted(by_attr):
        rows += sorted(by_attr[attr], key=lambda r: -r[1].get("correlation", 0))[:n_per_attribute]
    return rows


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _mean(rep: dict[str, Any], key: str) -> float:
    return sum(r[key] for r in rep["prompts"]) / max(1, len(rep["prompts"]))


def _repetition_lines(rep: dict[str, Any] | None) -> list[str]:
    if not rep:
        return []
    from millm.demo.evaluate import MAX_RUN, MIN_DISTINCT, REPEAT_PASS, REPEAT_PROMPTS, REPEAT_TOKENS

    verdict = "met" if rep["ok"] else "**not met**"
    lines = [
        "## Readability",
        "",
        f"Greedy chat completions of {REPEAT_TOKENS} tokens, without steering and with the CAPS feature at its "
        f"documented strength. A prompt passes when neither completion repeats a word more than {MAX_RUN} times "
        f"in a row nor loops on a short phrase (distinct word bigrams at least {MIN_DISTINCT}); the criterion is "
        f"at least {REPEAT_PASS} of {len(REPEAT_PROMPTS)} prompts. "
        f"Passed on **{rep['passed']} of {rep['total']}** prompts: {verdict}."
        + (f" Mean recased loss (word salad, nats per token): unsteered {_mean(rep, 'unsteered_loss'):.2f}, "
           f"steered {_mean(rep, 'steered_loss'):.2f}." if rep["prompts"] and "steered_loss" in rep["prompts"][0]
           else ""),
        "",
        "| prompt | longest run, unsteered | steered | distinct bigrams, unsteered | steered | pass | unsteered "
        "| steered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rep["prompts"]:
        lines.append(
            f"| {_md_escape(row['prompt'])} | {row['unsteered_run']} | {row['steered_run']} "
            f"| {row.get('unsteered_distinct', '')} | {row.get('steered_distinct', '')} "
            f"| {'yes' if row['passed'] else 'no'} | {_md_escape(row['unsteered'])} | {_md_escape(row['steered'])} |"
        )
    return [*lines, ""]


def _sampled_lines(sam: dict[str, Any] | None, yelling: dict[str, Any] | None) -> list[str]:
    if not sam:
        return []
    from millm.demo.evaluate import REPEAT_PASS, REPEAT_PROMPTS, YELL_TOKENS, YELL_UPPER

    verdict = "met" if sam["ok"] else "**not met**"
    per_seed = ", ".join(f"seed {s}: {p}" for s, p in zip(sam["seeds"], sam["passed_by_seed"], strict=True))
    lines = [
        "### Sampled",
        "",
        f"The same prompts and test, each completion sampled at temperature {sam['temperature']} once per seed "
        f"({', '.join(map(str, sam['seeds']))}); met when at least {REPEAT_PASS} of {len(REPEAT_PROMPTS)} prompts "
        f"pass for every seed. Prompts passing: {per_seed} ({sam['passed']} of {sam['total']} samples): {verdict}. "
        f"The steered samples are {sam['steered_upper']:.0%} uppercase on average. Word salad, as the mean "
        f"recased loss (nats per token under the unsteered model, see demo.md): unsteered samples "
        f"{sam.get('unsteered_loss', float('nan')):.2f}, steered {sam.get('steered_loss', float('nan')):.2f}.",
        "",
    ]
    failing = [r for r in sam["prompts"] if not r["passed"]]
    if failing:
        lines += ["| seed | prompt | longest run, unsteered | steered | distinct, unsteered | steered | steered text |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['seed']} | {_md_escape(r['prompt'])} | {r['unsteered_run']} | {r['steered_run']} "
                  f"| {r['unsteered_distinct']} | {r['steered_distinct']} | {_md_escape(r['steered'])} |"
                  for r in failing]
        lines.append("")
    if yelling:
        rates = "; ".join(f"{y['yelling']} of {y['total']} at temperature {t}" for t, y in yelling.items())
        lines += [
            "## Unsteered yelling",
            "",
            f"Sampled {YELL_TOKENS}-token answers to the readability prompts without steering that are more than "
            f"{YELL_UPPER:.0%} uppercase (`python -m millm.demo.evaluate --yelling`): {rates}.",
            "",
        ]
    return lines


def render_markdown(summary: dict[str, Any], labels: dict[str, dict[str, Any]], plot: bool) -> str:
    tr, sae, caps = summary["training"], summary["sae"], summary["caps"]
    lines = [
        "# Demo training report",
        "",
        "Written by `python -m millm.demo.train` (`make demo-train`); do not edit by hand. "
        "See [demo.md](demo.md) for what the demo is.",
        "",
        "## Run",
        "",
        f"- seed {tr['seed']}, configuration `{tr['config']}`, {tr['threads']} CPU threads",
        f"- corpus: {tr['n_docs']} training documents ({tr['n_tokens']} tokens), "
        f"{tr['n_eval_docs']} held-out documents; vocabulary {tr['vocab_size']}",
        f"- model: Llama, {tr['n_params']:,} parameters ({tr['model_shape']}), {tr['steps']} steps "
        f"of {tr['tokens_per_step']} tokens",
        f"- final training loss {tr['final_loss']:.4f} (mean of the last 20 steps), "
        f"held-out loss {tr['held_out_loss']:.4f}",
    ]
    if tr.get("model_reused"):
        lines += [
            "- this run kept the already trained model (`--sae-only`) and redid the SAE, the labels, the "
            "strengths and this report; the model's figures and loss curve are those of the run that trained it",
            f"- wall time: SAE {sae['seconds']:.0f} s, whole run {tr['total_seconds']:.0f} s",
        ]
    else:
        lines.append(f"- wall time: model {tr['model_seconds']:.0f} s, SAE {sae['seconds']:.0f} s, "
                     f"whole pipeline {tr['total_seconds']:.0f} s")
    lines.append("")
    if plot:
        lines += [f"![training loss]({LOSS_PNG})", ""]
    lines += [
        "## SAE",
        "",
        f"- {sae['architecture']} (k = {sae['k']}), d_in {sae['d_in']}, d_sae {sae['d_sae']}, "
        f"hook `{sae['hook_name']}`, trained on {sae['n_train_tokens']} tokens (BOS excluded)",
        f"- held-out ({sae['n_eval_tokens']} tokens): fraction of variance explained "
        f"**{sae['fve']:.4f}**, L0 **{sae['l0']:.2f}**, dead features {sae['dead_fraction']:.2%}",
        *([f"- the CAPS feature ({caps['feature']}) is a pinned latent: during training its decoder row was fixed "
           "to the mean residual of yelling assistant tokens minus that of normal ones (unit norm), and only its "
           "encoder learned; see [demo.md](demo.md#sae-sae_trainingpy)"] if sae.get("caps_pinned") else []),
        *([f"- the topic features of {', '.join(sae['topics_pinned'])} are pinned latents too: their decoder rows were "
           "fixed to the mean residual of the topic's tokens minus that of the other topics' tokens, and steering "
           "them brought more topic words than the learned candidates"] if sae.get("topics_pinned") else []),
        "",
        "## Acceptance figures",
        "",
        "Measured with `millm.demo.evaluate` (additive steering: residual += strength × W_dec[i] at the "
        "hook, every position), prompt \"Tell me a story.\" with the chat template.",
        "",
        f"- CAPS feature **{caps['feature']}** at strength **{caps['strength']}**: greedy uppercase fraction "
        f"{caps['baseline_upper']:.3f} without steering, **{caps['steered_upper']:.3f}** with it",
        f"- monitoring the steered completion: the feature is active on {caps['fires_on_generated']:.0%} "
        f"of generated tokens (mean activation {caps['mean_activation_generated']:.2f})",
        f"- unsteered: \"{_md_escape(caps['baseline_text'][:200])}\"",
        f"- steered: \"{_md_escape(caps['steered_text'][:200])}\"",
        "",
        f"Topics listed in `demo.json`: {', '.join(summary['documented_topics'])}.",
        "",
        "| topic | feature | strength | topic words, no steering | steered | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in summary["topics"].items():
        lines.append(
            f"| {name} | {t['feature']} | {t['strength']} | {t['baseline_count']} | {t['steered_count']} "
            f"| {t['ratio']:.1f} |"
        )
    lines += [
        "",
        "Topic words are counted over sampled completions (temperature 0.8, seeds 0-4, 64 new tokens).",
        "",
    ]
    lines += _repetition_lines(summary.get("repetition"))
    lines += _sampled_lines(summary.get("sampled_repetition"), summary.get("yelling"))
    lines += [
        "## Top labelled features",
        "",
        "`score` is the share of the feature's activation on tokens with the attribute; see "
        "[demo.md](demo.md#labels-labelspy).",
        "",
        "| feature | label | score | correlation | density | top example |",
        "|---|---|---|---|---|---|",
    ]
    for idx, lab in _top_features(labels):
        example = lab["top_examples"][0]["text"] if lab["top_examples"] else ""
        lines.append(
            f"| {idx} | {lab['label']} | {lab['score']:.3f} | {lab.get('correlation', 0):.3f} "
            f"| {lab.get('density', 0):.4f} | {_md_escape(example)} |"
        )
    return "\n".join(lines) + "\n"


def write_report(summary: dict[str, Any], labels: dict[str, dict[str, Any]], report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    tr = summary["training"]
    if tr["losses"]:
        plot = write_loss_plot(tr["losses"], tr["eval_losses"], report_dir / LOSS_PNG)
    else:  # the model was reused: keep the plot of the run that trained it, if there is one
        plot = (report_dir / LOSS_PNG).is_file()
    path = report_dir / REPORT_MD
    path.write_text(render_markdown(summary, labels, plot))
    return path
