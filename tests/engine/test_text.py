"""Incremental detokenisation (no broken UTF-8, no lost spaces) and stop strings."""

from __future__ import annotations

import pytest

from millm.engine.text import IncrementalDetokenizer, StopMatcher
from tests.fixtures.tiny_model import build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.mark.parametrize("text", ["Hello world, the stars shine.", "café naïve 日本語 🙂 done", "  spaced   out  ",
                                  "Ünïcödé\nnew line\ttab"])
def test_streamed_pieces_concatenate_to_the_full_decode(tok, text):
    ids = tok(text, add_special_tokens=False).input_ids
    d = IncrementalDetokenizer(tok)
    pieces = [d.push(i) for i in ids] + [d.flush()]
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in p for p in pieces)


def test_multibyte_character_is_held_until_complete(tok):
    ids = tok("🙂", add_special_tokens=False).input_ids
    assert len(ids) > 1  # byte-level BPE splits the emoji over several tokens
    d = IncrementalDetokenizer(tok)
    assert [d.push(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert d.push(ids[-1]) == "🙂"


def test_special_tokens_are_skipped(tok):
    d = IncrementalDetokenizer(tok)
    assert d.push(tok.eos_token_id) == ""


def test_stop_matcher_excludes_stop_and_holds_partial_prefixes():
    m = StopMatcher(("END", "stop here"))
    assert m.feed("abc E") == ("abc ", False)
    assert m.feed("N") == ("", False)
    assert m.feed("D more") == ("", True)
    m = StopMatcher(("END",))
    assert m.feed("xE") == ("x", False)
    assert m.feed("y") == ("Ey", False)
    assert m.flush() == ""
    m = StopMatcher(("END",))
    assert m.feed("ab") == ("ab", False)
    assert m.feed("E") == ("", False)
    assert m.flush() == "E"


def test_earliest_stop_wins():
    m = StopMatcher(("cd", "b"))
    assert m.feed("abcd") == ("a", True)


def test_backend_decode_matches_the_tokenizers_decode(tok):
    from millm.engine.text import _decoder

    assert type(tok).__name__ == "TokenizersBackend"  # the fast path below is the one in use
    ids = tok("café naïve 日本語 🙂  spaced\ttab", add_special_tokens=False).input_ids
    cases = [ids, ids[:3], [tok.bos_token_id, *ids, tok.eos_token_id], [], list(range(0, len(tok), 7))]
    for skip in (True, False):
        fast = _decoder(tok, skip)
        for case in cases:
            assert fast(case) == tok.decode(case, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
