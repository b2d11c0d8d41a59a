"""Rendering then tokenising a chat never doubles the BOS: the template writes its own (or none), and the text is
tokenised without adding special tokens. Checked for each template family in the fixtures."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from millm.protocol.openai import ChatMessage
from millm.services.prompts import render_chat
from tests.fixtures.tiny_model import build_tokenizer
from tests.fixtures.tool_templates import FAMILIES, build_family_model

CONV = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hello world")]


@pytest.fixture(scope="module", params=sorted(FAMILIES) + ["tiny"])
def tokenizer(request, tmp_path_factory):
    if request.param == "tiny":
        return request.param, build_tokenizer()
    d = build_family_model(tmp_path_factory.mktemp(request.param) / "m", request.param)
    return request.param, AutoTokenizer.from_pretrained(d)


def test_one_bos_at_most_and_only_where_the_template_writes_it(tokenizer):
    family, tok = tokenizer
    ids = render_chat(tok, CONV)
    text = tok.apply_chat_template([m.model_dump(include={"role", "content"}) for m in CONV], tokenize=False,
                                   add_generation_prompt=True)
    written = text.count(tok.bos_token)
    assert ids.count(tok.bos_token_id) == written <= 1
    if written:
        assert ids[0] == tok.bos_token_id
    # the tokenizer would add one more if asked: the renderer must not
    assert tok(text).input_ids.count(tok.bos_token_id) in (written, written + 1)
    assert family != "qwen" or written == 0
