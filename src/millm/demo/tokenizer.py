"""Byte-level BPE tokenizer for the demo model, and the corpus → token ids encoder.

Contract: `train_tokenizer` returns a `PreTrainedTokenizerFast` that `AutoTokenizer.from_pretrained`
reloads unchanged after `save_pretrained`. BOS is `<|bos|>`, EOS (end of a story or a chat turn) is
`<|end|>`, PAD is `<|pad|>`. Plain `tokenizer(text)` prepends BOS; the chat template also starts with
BOS (as `apply_chat_template` tokenizes without special tokens). `encode_corpus` turns documents into
one id stream plus per-token ground truth (yelling / topic / mood), split at special tokens exactly
as the tokenizer splits the rendered text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from millm.demo.corpus import BOS, CHAT_TEMPLATE, END, PAD, SPECIAL_TOKENS, TOPIC_NAMES, Document

MOOD_NAMES = ("happy", "sad")
ROLE_CODES = {None: 0, "system": 1, "user": 2, "assistant": 3}  # 0 also marks plain stories


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (BOS, END, PAD)],
        chat_template=CHAT_TEMPLATE,
        model_max_length=256,
        clean_up_tokenization_spaces=False,
    )


def corpus_texts(docs: Iterable[Document]) -> Iterable[str]:
    """The text the BPE merges are learned from: message contents, without the special tokens."""
    for doc in docs:
        for seg in doc.segments:
            yield seg.text


@dataclass
class EncodedCorpus:
    """One token stream (documents back to back) and per-token ground truth, all length N."""

    ids: np.ndarray  # (N,) int32
    yelling: np.ndarray  # (N,) bool: the token belongs to an ALL CAPS text
    topic: np.ndarray  # (N,) int8: index into TOPIC_NAMES, -1 if none
    mood: np.ndarray  # (N,) int8: index into MOOD_NAMES, -1 if none
    role: np.ndarray  # (N,) int8: ROLE_CODES of the segment, -1 for special tokens
    doc: np.ndarray  # (N,) int32: document index


def encode_corpus(tokenizer: PreTrainedTokenizerFast, docs: list[Document]) -> EncodedCorpus:
    sid = tokenizer.convert_tokens_to_ids
    bos, end = sid(BOS), sid(END)
    contents = [seg.text for doc in docs for seg in doc.segments]
    encoded = tokenizer(contents, add_special_tokens=False)["input_ids"]
    cols: dict[str, list[int]] = {k: [] for k in ("ids", "yelling", "topic", "mood", "role", "doc")}

    def push(ids: list[int], yelling: bool = False, topic: int = -1, mood: int = -1, role: int = -1) -> None:
        n = len(ids)
        cols["ids"] += ids
        cols["yelling"] += [yelling] * n
        cols["topic"] += [topic] * n
        cols["mood"] += [mood] * n
        cols["role"] += [role] * n
        cols["doc"] += [doc_index] * n

    k = 0
    for doc_index, doc in enumerate(docs):  # noqa: B007 (push() above reads doc_index)
        push([bos])
        for j, seg in enumerate(doc.segments):
            if seg.role is not None and not seg.continues:
                push([sid(f"<|{seg.role}|>")])
            push(
                encoded[k],
                yelling=seg.yelling,
                topic=TOPIC_NAMES.index(seg.topic) if seg.topic else -1,
                mood=MOOD_NAMES.index(seg.mood) if seg.mood else -1,
                role=ROLE_CODES[seg.role],
            )
            if j + 1 == len(doc.segments) or not doc.segments[j + 1].continues:
                push([end])
            k += 1
    return EncodedCorpus(
        ids=np.asarray(cols["ids"], dtype=np.int32),
        yelling=np.asarray(cols["yelling"], dtype=bool),
        topic=np.asarray(cols["topic"], dtype=np.int8),
        mood=np.asarray(cols["mood"], dtype=np.int8),
        role=np.asarray(cols["role"], dtype=np.int8),
        doc=np.asarray(cols["doc"], dtype=np.int32),
    )
