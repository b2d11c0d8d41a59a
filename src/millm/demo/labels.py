"""Ground-truth labels for the demo SAE's features.

Contract: every token the SAE saw carries known attributes from the corpus generator (inside an
ALL CAPS text, topic, mood, chat role). `feature_statistics` measures, per feature and attribute,
the share of the feature's total activation that falls on tokens with the attribute, the
correlation between activation and the attribute's indicator, and the top-activating tokens.
`build_labels` turns that into the shipped `labels.json`: `{"<index>": {"label", "score",
"attribute", "correlation", "density", "top_examples"}}`. The attribute is the one with the
largest activation share among those the feature prefers at least `MIN_LIFT` times over their base
rate; `score` is that share (0..1: 0.9 means 90 % of the feature's activation is on, say, ocean
tokens). Below `MIN_SCORE`, or with no such attribute, `attribute` is null and the label names the
feature's most common top tokens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from millm.demo.corpus import TOPIC_NAMES
from millm.demo.sae_training import TopKSae
from millm.demo.tokenizer import MOOD_NAMES, ROLE_CODES, EncodedCorpus

MIN_SCORE = 0.35
MIN_LIFT = 2.5
N_EXAMPLES = 5


def attribute_masks(enc: EncodedCorpus, index: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean (N,) masks, one per attribute, for the stream positions `index`."""
    masks = {"caps": enc.yelling[index]}
    masks |= {f"topic:{t}": enc.topic[index] == i for i, t in enumerate(TOPIC_NAMES)}
    masks |= {f"mood:{m}": enc.mood[index] == i for i, m in enumerate(MOOD_NAMES)}
    masks |= {f"role:{r}": enc.role[index] == ROLE_CODES[r] for r in ("system", "user", "assistant")}
    return masks


def attribute_label(attribute: str) -> str:
    kind, _, value = attribute.partition(":")
    if kind == "caps":
        return "ALL CAPS (yelling)"
    if kind == "role":
        return f"{value} message"
    return f"{kind}: {value}"


@dataclass
class FeatureStatistics:
    attributes: list[str]
    correlation: torch.Tensor  # (n_attr, d_sae)
    share: torch.Tensor  # (n_attr, d_sae): fraction of the feature's activation mass on the attribute
    base_rate: torch.Tensor  # (n_attr,): fraction of tokens with the attribute
    mean_on: torch.Tensor  # (n_attr, d_sae): mean activation on tokens with the attribute
    mean_off: torch.Tensor  # (n_attr, d_sae)
    density: torch.Tensor  # (d_sae,): fraction of tokens the feature fires on
    max_act: torch.Tensor  # (d_sae,)
    top_values: torch.Tensor  # (N_EXAMPLES, d_sae)
    top_rows: torch.Tensor  # (N_EXAMPLES, d_sae): row into the activations / index arrays


@torch.no_grad()
def feature_statistics(
    sae: TopKSae, acts: torch.Tensor, masks: dict[str, np.ndarray], *, batch_size: int = 8192
) -> FeatureStatistics:
    names = list(masks)
    m_all = torch.from_numpy(np.stack([masks[a] for a in names], axis=1)).float()  # (N, n_attr)
    d_sae = sae.W_dec.shape[0]
    s_a = torch.zeros(d_sae, dtype=torch.float64)
    s_aa = torch.zeros(d_sae, dtype=torch.float64)
    s_am = torch.zeros(len(names), d_sae, dtype=torch.float64)
    fires = torch.zeros(d_sae, dtype=torch.float64)
    top_v = torch.full((N_EXAMPLES, d_sae), -1.0)
    top_r = torch.zeros((N_EXAMPLES, d_sae), dtype=torch.long)
    for i in range(0, len(acts), batch_size):
        f = sae.encode(acts[i : i + batch_size])
        m = m_all[i : i + batch_size]
        s_a += f.sum(0).double()
        s_aa += f.pow(2).sum(0).double()
        s_am += (m.T @ f).double()
        fires += (f > 0).sum(0).double()
        k = min(N_EXAMPLES, len(f))
        v, r = f.topk(k, dim=0)
        cand_v, cand_r = torch.cat([top_v, v]), torch.cat([top_r, r + i])
        best = cand_v.topk(N_EXAMPLES, dim=0).indices
        top_v, top_r = cand_v.gather(0, best), cand_r.gather(0, best)
    n = len(acts)
    count = m_all.sum(0).double()[:, None]  # (n_attr, 1)
    mean_a = s_a / n
    std_a = (s_aa / n - mean_a.pow(2)).clamp_min(0).sqrt()
    p = count / n
    cov = s_am / n - mean_a[None] * p
    corr = cov / (std_a[None] * (p * (1 - p)).sqrt()).clamp_min(1e-12)
    return FeatureStatistics(
        attributes=names,
        correlation=corr.float(),
        share=(s_am / s_a[None].clamp_min(1e-12)).float(),
        base_rate=p[:, 0].float(),
        mean_on=(s_am / count.clamp_min(1)).float(),
        mean_off=((s_a[None] - s_am) / (n - count).clamp_min(1)).float(),
        density=(fires / n).float(),
        max_act=top_v[0].clamp_min(0),
        top_values=top_v,
        top_rows=top_r,
    )


def _example(tokenizer: PreTrainedTokenizerFast, enc: EncodedCorpus, pos: int) -> tuple[str, str]:
    """A short context around stream position `pos`, the token itself marked with «»."""
    lo = pos
    while lo > 0 and pos - lo < 12 and enc.doc[lo - 1] == enc.doc[pos]:
        lo -= 1
    hi = pos + 1
    while hi < len(enc.ids) and hi - pos <= 4 and enc.doc[hi] == enc.doc[pos]:
        hi += 1
    token = tokenizer.decode(enc.ids[pos : pos + 1])
    text = tokenizer.decode(enc.ids[lo:pos]) + "«" + token + "»" + tokenizer.decode(enc.ids[pos + 1 : hi])
    return text, token


def build_labels(
    stats: FeatureStatistics, *, tokenizer: PreTrainedTokenizerFast, enc: EncodedCorpus, index: np.ndarray
) -> dict[str, dict[str, object]]:
    labels: dict[str, dict[str, object]] = {}
    for f in range(stats.correlation.shape[1]):
        if stats.density[f] == 0:
            labels[str(f)] = {"label": "dead (never fires)", "score": 0.0, "attribute": None, "correlation": 0.0,
                              "density": 0.0, "top_examples": []}
            continue
        share = stats.share[:, f]
        eligible = share >= MIN_LIFT * stats.base_rate
        best = int(torch.where(eligible, share, torch.full_like(share, -1.0)).argmax())
        score = float(share[best]) if eligible[best] else 0.0
        examples = []
        for v, r in zip(stats.top_values[:, f].tolist(), stats.top_rows[:, f].tolist(), strict=True):
            if v <= 0:
                continue
            text, token = _example(tokenizer, enc, int(index[r]))
            examples.append({"text": text, "token": token, "activation": round(v, 3)})
        if score >= MIN_SCORE:
            attribute: str | None = stats.attributes[best]
            label = attribute_label(stats.attributes[best])
        else:
            attribute = None
            common = Counter(e["token"].strip() or repr(e["token"]) for e in examples).most_common(2)
            label = "tokens: " + ", ".join(f"'{t}'" for t, _ in common)
        labels[str(f)] = {
            "label": label,
            "score": round(score, 4),
            "attribute": attribute,
            "correlation": round(float(stats.correlation[best, f]), 4),
            "density": round(float(stats.density[f]), 5),
            "top_examples": examples,
        }
    return labels


def ranked_features(stats: FeatureStatistics, attribute: str, n: int) -> list[int]:
    """The `n` features most correlated with `attribute`, best first."""
    row = stats.correlation[stats.attributes.index(attribute)]
    return [int(i) for i in row.topk(n).indices]
