"""Prompt rendering: chat template, fallbacks for templates that reject a conversation, tokens."""

from __future__ import annotations

import pytest

from millm.errors import ContextTooLong, InvalidRequest
from millm.protocol.openai import ChatMessage
from millm.services import prompts
from tests.fixtures.tiny_model import build_tokenizer

STRICT = (
    "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def msgs(*pairs):
    return [ChatMessage(role=r, content=c) for r, c in pairs]


def test_template_is_used():
    tok = build_tokenizer()
    ids = prompts.render_chat(tok, msgs(("user", "hi")))
    assert tok.decode(ids) == "<s><|user|>hi<|end|>\n<|assistant|>"


def test_strict_template_falls_back_for_lone_system_and_non_alternating():
    tok = build_tokenizer()
    tok.chat_template = STRICT
    text = tok.decode(prompts.render_chat(tok, msgs(("system", "Make a title"))))
    assert text == "<|user|>Make a title<|end|><|assistant|>"
    text = tok.decode(prompts.render_chat(tok, msgs(("system", "S"), ("user", "a"), ("user", "b"),
                                                       ("assistant", "c"))))
    assert text.startswith("<|user|>S\n\na\n\nb<|end|><|assistant|>c")


def test_template_that_always_fails_is_400():
    tok = build_tokenizer()
    tok.chat_template = "{{ raise_exception('nope') }}"
    with pytest.raises(InvalidRequest) as e:
        prompts.render_chat(tok, msgs(("user", "x")))
    assert e.value.param == "messages"


def test_prompt_shapes_and_token_range():
    tok = build_tokenizer()
    assert len(prompts.tokenize_prompts(tok, "hi", vocab_size=len(tok), param="prompt")) == 1
    assert prompts.tokenize_prompts(tok, [1, 2], vocab_size=len(tok), param="prompt") == [[1, 2]]
    assert prompts.tokenize_prompts(tok, [[1], [2, 3]], vocab_size=len(tok), param="prompt") == [[1], [2, 3]]
    with pytest.raises(InvalidRequest) as e:
        prompts.tokenize_prompts(tok, [[1], [2, 10**6]], vocab_size=len(tok), param="prompt")
    assert e.value.param == "prompt[1]"


def test_context_checks_and_clamp():
    with pytest.raises(ContextTooLong):
        prompts.check_context(10, 10, param="prompt")
    assert prompts.clamp_max_tokens(None, 4, 10) == 6
    assert prompts.clamp_max_tokens(100, 4, 10) == 6
    assert prompts.clamp_max_tokens(3, 4, 10) == 3


def test_text_size_counts_characters_and_token_ids():
    # decides whether a prompt is tokenised off the event loop; token ids count one each
    assert prompts.text_size("héllo") == 5
    assert prompts.text_size(list(range(1000))) == 1000
    assert prompts.text_size([[1, 2], [3]]) == 3
    assert prompts.text_size(["ab", [1, 2], "c"]) == 5
    assert prompts.text_size([ChatMessage(role="user", content="abc"), ChatMessage(role="user", content=None)]) == 3
    assert prompts.text_size([]) == 0 and prompts.text_size(None) == 0
