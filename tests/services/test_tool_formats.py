"""Tool-call formats: each family's parser reads single and parallel calls and leaves plain text alone; the
table picks the family from the chat template; the stream splitter streams content and holds back calls."""

from __future__ import annotations

import pytest

from millm.services.tools import FORMATS, ParsedCall, StreamSplitter, format_for
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
