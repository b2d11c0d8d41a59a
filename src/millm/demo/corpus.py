"""Seeded generator of the demo corpus: short stories and short chats with known attributes.

Contract: `generate_corpus(n, seed)` returns the same documents for the same arguments, on any
machine, without downloading anything. Each document is a list of `Segment`s; a segment carries
the ground truth of its text (topic, mood, and whether it is ALL CAPS "yelling"), which the SAE
labelling later projects onto tokens. `render` produces exactly the string the demo tokenizer's
chat template produces for the same messages, so training text and served prompts agree.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from millm.demo.corpus_words import (
    HAPPY_ENDINGS,
    HAPPY_FEELINGS,
    MOOD_REQUESTS,
    MOODS,
    SAD_ENDINGS,
    SAD_FEELINGS,
    SMALL_TALK,
    STORY_REQUESTS,
    SYSTEM_PROMPTS,
    TOPIC_REQUESTS,
    TOPICS,
    Topic,
)

BOS = "<|bos|>"
END = "<|end|>"
PAD = "<|pad|>"
ROLES = ("system", "user", "assistant")
SPECIAL_TOKENS = (PAD, BOS, END, "<|system|>", "<|user|>", "<|assistant|>")
TOPIC_NAMES = tuple(t.name for t in TOPICS)


@dataclass(frozen=True)
class CorpusConfig:
    story_fraction: float = 0.45  # plain stories; the rest are chats
    yell_fraction: float = 0.2  # plain stories in ALL CAPS
    # Chats where the assistant yells unprompted. 0.02 with 600 steps was tried (seed 0) and made the
    # CAPS feature need strength 18.2 and repeat words on 0 of 5 prompts, so the shipped value stays.
    # With the pinned CAPS latent (full retrain, seed 0, 300 steps), `python -m millm.demo.evaluate
    # --yelling` (answers over half uppercase, of 100 sampled at T 0.7 / 1.0) gave 13 / 19 for 0.2 (shipped),
    # 0 / 4 for 0.05 and 5 / 6 for 0.1, but neither was shipped: at 0.05 no CAPS strength yells
    # (>= 80 % of the story) and reads well (4.6: 78 %, 5 of 5; 5.7: 82 %, 0 of 5) and forest steering
    # fails (20 -> 22 words); at 0.1 CAPS passes (5.1: 100 %, 5 of 5, but every prompt gets one looping
    # story), ocean steering falls to 18 -> 38 words (shipped 0 -> 52) and food to 19 -> 51. 0.15 gave
    # 0 / 15 (not clearly lower), CAPS 5.6 at 90 % and 4 of 5, and space, food and winter under 4x.
    # 0.1 with seed 1 gave 11 / 23 (the seed matters as much as the fraction). 0.05 with
    # switch_fraction 0.1 (seed 0) gave 2 / 9 and passed CAPS (4.2: 82 %, greedy 5 of 5, sampled
    # 4, 5, 5) and five topics, but food steering failed (29 -> 31 words). 0.05 with seed 1 gave
    # 5 / 5 and passed CAPS (greedy 5 of 5, sampled 5, 5, 5), but ocean failed (10 -> 21); see docs/demo.md.
    # Shipped since the 1,200-step model with the SAE after layer 0 (pinned CAPS and topic directions): 5 / 7.
    chat_yell_fraction: float = 0.05
    user_yell_fraction: float = 0.1  # chats where the user yells (the assistant then yells back)
    system_fraction: float = 0.3
    # Topic weights when a chat request names no topic: ocean, the demo's steering topic, is rare
    # there, so steering towards it is plainly visible. Plain stories and named topics are uniform.
    unprompted_topic_weights: tuple[float, ...] = (0.04, 0.192, 0.192, 0.192, 0.192, 0.192)
    # Stories (plain, or an assistant's answer) that start normally and switch to ALL CAPS at a
    # sentence boundary, and stay there, meant to teach the model that yelling can start anywhere and
    # then continues. 0 draws nothing, so the corpus is the one the shipped demo was trained on.
    # Tried at 0.1 (seed 0, 300 and 600 steps): steering along the mean yelling direction then flips
    # the text mid-story and it stays in capitals with no loops, but the SAE's CAPS features came out
    # token-specific ("IN", "THE", "A FOR") and looped at every strength that yells; not shipped.
    switch_fraction: float = 0.0


@dataclass(frozen=True)
class Segment:
    role: str | None  # None: a plain story (no chat markup)
    text: str
    yelling: bool = False
    topic: str | None = None
    mood: str | None = None
    continues: bool = False  # the rest of the previous segment's message (no role marker, no END between)


@dataclass(frozen=True)
class Document:
    segments: tuple[Segment, ...]

    @property
    def is_chat(self) -> bool:
        return self.segments[0].role is not None

    def messages(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for s in self.segments:
            if s.continues and out:
                out[-1]["content"] += s.text
            else:
                out.append({"role": s.role or "assistant", "content": s.text})
        return out

    def render(self) -> str:
        if not self.is_chat:
            return BOS + "".join(s.text for s in self.segments) + END
        return render_chat(self.messages())


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The chat format, identical to the Jinja template shipped with the tokenizer."""
    out = BOS + "".join(f"<|{m['role']}|>{m['content']}{END}" for m in messages)
    return out + ("<|assistant|>" if add_generation_prompt else "")


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# ----------------------------------------------------------------------------- stories


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _the(phrase: str) -> str:
    return "the " + phrase.split(" ", 1)[1] if phrase.startswith(("a ", "an ")) else phrase


def make_story(rng: random.Random, topic: Topic, mood: str) -> str:
    """One short story, 7 sentences, about `topic` with a `mood` ("happy" or "sad") turn and ending."""
    char = rng.choice(topic.characters)
    pron = rng.choice(("she", "he"))
    the, a = "the " + char, _article(char)
    place = rng.choice(topic.places)
    friend = rng.choice(topic.friends)
    opening = rng.choice((
        f"once upon a time, there was {a} who lived {place}.",
        f"long ago, {a} lived {place}.",
        f"there once was {a} who lived {place}.",
        f"once upon a time, {a} lived {place}.",
    ))
    habit = rng.choice((f"every day, {pron} {rng.choice(topic.habits)}.",
                        f"{pron} often {rng.choice(topic.habits)}."))
    love = f"{pron} loved {rng.choice(topic.loves)}."
    event = f"{rng.choice(('one day', 'one morning', 'one evening'))}, {the} {rng.choice(topic.events)}."
    meet = rng.choice((f"there, {pron} met {friend}.", f"soon {pron} met {friend}."))
    if mood == "happy":
        turn = f"together, they {rng.choice(topic.good)}."
        feeling = f"{the} {rng.choice(HAPPY_FEELINGS).format(pron=pron)}."
        ending = rng.choice(HAPPY_ENDINGS)
    else:
        turn = f"but then {rng.choice(topic.bad)}."
        feeling = f"{the} {rng.choice(SAD_FEELINGS).format(pron=pron)}."
        ending = rng.choice(SAD_ENDINGS)
    ending = ending.format(the=the, The=_sentence(the), friend=_the(friend))
    parts = [opening, habit, love, event, meet, turn, feeling, ending]
    if rng.random() < 0.3:
        parts.remove(love)
    return " ".join(_sentence(p) for p in parts)


# ----------------------------------------------------------------------------- chats


def _request(rng: random.Random, topic: Topic, mood: str) -> tuple[str, str | None, str | None]:
    """A user request and what it pins down: (text, topic or None, mood or None)."""
    kind = rng.random()
    if kind < 0.3:
        return rng.choice(STORY_REQUESTS), None, None
    about = rng.choice(topic.about)
    if kind < 0.75:
        return rng.choice(TOPIC_REQUESTS).format(about=about), topic.name, None
    template = rng.choice(MOOD_REQUESTS)
    return template.format(mood=mood, about=about), (topic.name if "{about}" in template else None), mood


def _yell(seg: Segment) -> Segment:
    return Segment(seg.role, seg.text.upper(), True, seg.topic, seg.mood)


def _switch(rng: random.Random, seg: Segment) -> list[Segment]:
    """`seg` as two segments: its first sentences as they are, the rest (from a sentence boundary
    after the first sentence) in ALL CAPS, continuing the same message."""
    sentences = seg.text.split(". ")
    if len(sentences) < 3:
        return [seg]
    cut = rng.randrange(1, len(sentences) - 1)
    head = ". ".join(sentences[:cut]) + "."
    tail = " " + ". ".join(sentences[cut:]).upper()
    return [Segment(seg.role, head, False, seg.topic, seg.mood),
            Segment(seg.role, tail, True, seg.topic, seg.mood, continues=True)]


def make_chat(rng: random.Random, cfg: CorpusConfig) -> list[Segment]:
    segs: list[Segment] = []
    if rng.random() < cfg.system_fraction:
        segs.append(Segment("system", rng.choice(SYSTEM_PROMPTS)))
    user_yells = rng.random() < cfg.user_yell_fraction
    assistant_yells = user_yells or rng.random() < cfg.chat_yell_fraction
    turns = 1 + (rng.random() < 0.25)
    for turn in range(turns):
        if turn == 0 and rng.random() < 0.12 or turn > 0 and rng.random() < 0.5:
            question, answer = rng.choice(SMALL_TALK)
            user, reply = Segment("user", question), Segment("assistant", answer)
        else:
            topic, mood = rng.choice(TOPICS), rng.choice(MOODS)
            text, asked_topic, asked_mood = _request(rng, topic, mood)
            if asked_topic is None:
                topic = rng.choices(TOPICS, weights=cfg.unprompted_topic_weights)[0]
            user = Segment("user", text, topic=asked_topic, mood=asked_mood)
            reply = Segment("assistant", make_story(rng, topic, mood), topic=topic.name, mood=mood)
        segs.append(_yell(user) if user_yells else user)
        if assistant_yells:
            segs.append(_yell(reply))
        elif cfg.switch_fraction and rng.random() < cfg.switch_fraction:
            segs += _switch(rng, reply)
        else:
            segs.append(reply)
    return segs


def generate_corpus(n_docs: int, seed: int, cfg: CorpusConfig | None = None) -> list[Document]:
    """`n_docs` documents, deterministic in (`n_docs`, `seed`, `cfg`)."""
    cfg = cfg or CorpusConfig()
    rng = random.Random(seed)
    docs: list[Document] = []
    for _ in range(n_docs):
        if rng.random() < cfg.story_fraction:
            topic, mood = rng.choice(TOPICS), rng.choice(MOODS)
            seg = Segment(None, make_story(rng, topic, mood), topic=topic.name, mood=mood)
            if rng.random() < cfg.yell_fraction:
                docs.append(Document((_yell(seg),)))
            elif cfg.switch_fraction and rng.random() < cfg.switch_fraction:
                docs.append(Document(tuple(_switch(rng, seg))))
            else:
                docs.append(Document((seg,)))
        else:
            docs.append(Document(tuple(make_chat(rng, cfg))))
    return docs
