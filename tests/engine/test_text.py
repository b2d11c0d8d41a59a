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


def _python_pieces(tok, ids, skip):
    """The pieces the two-decode window gives (the path a tokenizer without a Rust backend takes)."""
    d = IncrementalDetokenizer(tok, skip_special_tokens=skip)
    d._stream = None
    return [d.push(i) for i in ids] + [d.flush()]


@pytest.mark.parametrize("skip", [True, False])
def test_decode_stream_gives_the_same_pieces_as_the_two_decode_window(tok, skip):
    import random

    rng = random.Random(0)
    cases = [tok(t, add_special_tokens=False).input_ids for t in ("café 日本語 🙂🐉 done", "  a  b\tc\n")]
    cases.append([tok.bos_token_id, *cases[0][:5], tok.eos_token_id, *cases[0][5:]])
    cases += [[rng.randrange(len(tok)) for _ in range(rng.randrange(1, 30))] for _ in range(100)]
    for ids in cases:
        d = IncrementalDetokenizer(tok, skip_special_tokens=skip)
        assert d._stream is not None  # the Rust DecodeStream path is the one under test
        assert [d.push(i) for i in ids] + [d.flush()] == _python_pieces(tok, ids, skip)


def test_a_refused_decode_stream_window_falls_back_mid_sequence(tok):
    """DecodeStream raises when a window's text stops starting with the previous piece; from that token on the
    sequence decodes the Python way, with the same offsets, so nothing is lost or repeated."""
    ids = tok("café naïve 🙂 end", add_special_tokens=False).input_ids

    class Refusing:
        def __init__(self, inner, after):
            self.inner, self.after, self.n = inner, after, 0

        def step(self, backend, token_id):
            self.n += 1
            if self.n > self.after:
                raise Exception("InvalidPrefix")
            return self.inner.step(backend, token_id)

    for after in range(len(ids)):
        d = IncrementalDetokenizer(tok)
        d._stream = Refusing(d._stream, after)
        pieces = [d.push(i) for i in ids] + [d.flush()]
        assert pieces == _python_pieces(tok, ids, True)


def test_a_stop_string_over_several_tokens_and_a_split_character_is_cut_exactly(tok):
    """The worker's path: each token's released text (DecodeStream) through the StopMatcher."""
    text = "naïve café 🙂 END of it"
    ids = tok(text, add_special_tokens=False).input_ids
    stop = "🙂 EN"  # an emoji split over byte tokens, then the start of a word
    assert len(tok(stop, add_special_tokens=False).input_ids) > 2
    d, m = IncrementalDetokenizer(tok), StopMatcher((stop,))
    out = ""
    for i in ids:
        released, hit = m.feed(d.push(i))
        out += released
        if hit:
            break
    assert hit and out == text[: text.index(stop)]
