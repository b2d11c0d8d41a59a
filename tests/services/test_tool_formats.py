"""Tool-call formats: each family's parser reads single and parallel calls and leaves plain text alone; the
table picks the family from the chat template; the stream splitter streams content and holds back calls."""

from __future__ import annotations

import json

import pytest

from millm.services.tools import FORMATS, CallStreamer, ParsedCall, StreamSplitter, format_for
from millm.services.tools.hermes import HermesFormat
from millm.services.tools.llama3 import Llama3JsonFormat
from millm.services.tools.mistral import MistralFormat
from millm.services.tools.pythonic import PythonicFormat
from tests.fixtures.tool_templates import GEMMA, LLAMA3, MISTRAL, QWEN

W = ParsedCall("get_weather", {"city": "Paris", "days": 2})
T = ParsedCall("get_time", {"zone": -3})

CASES = [
    (HermesFormat(), 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n'
                     '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"zone": -3}}\n</tool_call>',
     "Let me check.", [W, T]),
    (HermesFormat(), '<tool_call>\n{"name": "get_time", "arguments": "{\\"zone\\": -3}"}\n</tool_call>', "", [T]),
    (Llama3JsonFormat(), '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "days": 2}}', "", [W]),
    (Llama3JsonFormat(), '{"name": "get_weather", "parameters": {"city": "Paris", "days": 2}}; '
                         '{"name": "get_time", "parameters": {"zone": -3}}', "", [W, T]),
    (MistralFormat(), '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}, '
                      '{"name": "get_time", "arguments": {"zone": -3}}]', "", [W, T]),
    (MistralFormat(), '[{"name": "get_time", "arguments": {"zone": -3}}]', "", [T]),  # control token skipped
    (MistralFormat(), '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 2}[TOOL_CALLS]get_time[ARGS]{"zone": -3}',
     "", [W, T]),
    (PythonicFormat(), '[get_weather(city="Paris", days=2), get_time(zone=-3)]', "", [W, T]),
    (PythonicFormat(), '```tool_code\n[get_time(zone=-3)]\n```', "", [T]),
]


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_parse_reads_calls(fmt, text, content, calls):
    assert fmt.parse(text) == (content, calls)


@pytest.mark.parametrize("fmt", [cls() for cls in FORMATS])
@pytest.mark.parametrize("text", ["The weather is sunny.", "[1, 2, 3]", "{not json", "<tool_call>\n{broken",
                                  "[get_weather(city=undefined_name)]", ""])
def test_plain_text_or_broken_calls_stay_text(fmt, text):
    assert fmt.parse(text) == (text, [])


@pytest.mark.parametrize(("template", "name"), [(QWEN, "hermes"), (LLAMA3, "llama3_json"), (MISTRAL, "mistral"),
                                                (GEMMA, "pythonic")])
def test_the_table_picks_the_family_from_the_template(template, name):
    class Tok:
        chat_template = template

    assert format_for(Tok()).name == name


def test_no_format_for_a_template_without_tools():
    class Tok:
        chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"

    assert format_for(Tok()) is None


def _stream(fmt, pieces):
    s = StreamSplitter(fmt)
    sent = "".join(s.push(p) for p in pieces)
    rest, calls = s.finish()
    return sent, rest, calls


def test_splitter_streams_content_and_holds_back_calls():
    text = CASES[0][1]
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
    sent, rest, calls = _stream(HermesFormat(), pieces)
    assert sent == "Let me check.\n"
    assert (rest, calls) == ("", [W, T])
    # leading formats: plain text streams as soon as it cannot be a call
    sent, rest, calls = _stream(Llama3JsonFormat(), ["Sun", "ny today"])
    assert (sent, rest, calls) == ("Sunny today", "", [])
    sent, rest, calls = _stream(PythonicFormat(), ["  ", "[get_time(zone", "=-3)]"])
    assert (sent, calls) == ("", [T])
    # a call that never completes comes back as text at the end
    sent, rest, calls = _stream(HermesFormat(), ["ok <tool", "_call>{bro"])
    assert sent == "ok " and rest == "<tool_call>{bro" and calls == []


def _stream_calls(fmt, text, *, parallel=True):
    """Push `text` one character at a time; the calls as a client assembles them from the deltas, the position
    in the text at which each call's name went out, and how many pieces its arguments came in."""
    s = StreamSplitter(fmt, streamer=CallStreamer(fmt.name, parallel=parallel, call_id=fmt.call_id))
    got: dict[int, dict] = {}

    def take(deltas, at):
        for d in deltas:
            entry = got.setdefault(d.index, {"id": None, "name": None, "arguments": "", "named_at": None, "pieces": 0})
            if d.id:
                assert entry["id"] is None, "a call is announced once"
                entry.update(id=d.id, name=d.name, named_at=at)
            if d.arguments:
                entry["arguments"] += d.arguments
                entry["pieces"] += 1

    for i, ch in enumerate(text):
        s.push(ch)
        take(s.take_deltas(), i)
    rest, parsed = s.finish()
    take(s.finish_deltas(parsed if parallel else parsed[:1]), len(text))
    return parsed, [got[k] for k in sorted(got)]


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_calls_stream_while_written_and_assemble_to_the_parsed_calls(fmt, text, content, calls):
    parsed, got = _stream_calls(fmt, text)
    assert parsed == calls
    assert [(g["name"], json.loads(g["arguments"])) for g in got] == [(c.name, c.arguments) for c in calls]
    assert len({g["id"] for g in got}) == len(calls)
    # every call's name goes out before the reply ends; JSON arguments go out in pieces as they are written
    # (a string-encoded arguments value, and pythonic keyword arguments, come whole at the end)
    assert all(g["named_at"] < len(text) - 1 for g in got)
    if fmt.name != "pythonic" and '"{' not in text:
        assert all(g["pieces"] > 3 for g in got)
        last_close = max(text.rfind("}"), 0)
        assert got[0]["named_at"] < text.find("}") < last_close


def test_calls_stream_one_call_when_calls_are_not_parallel():
    fmt, text = CASES[0][0], CASES[0][1]
    parsed, got = _stream_calls(fmt, text, parallel=False)
    assert [(g["name"], json.loads(g["arguments"])) for g in got] == [(W.name, W.arguments)]


def test_a_call_cut_off_mid_arguments_stays_announced():
    _, got = _stream_calls(HermesFormat(), '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par')
    assert [(g["name"], g["arguments"]) for g in got] == [("get_weather", '{"city": "Par')]
