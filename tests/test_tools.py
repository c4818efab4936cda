"""Tool calls (issue 22): the forms small models write, schema checks, the lazy call grammar."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm4all import answer
from llm4all.chat.template import Message
from llm4all.chat.tools import (
    _free_text_rules,
    call_grammar,
    parse,
    schemas_of,
    valid_arguments,
)
from llm4all.params import GenerationParams
from llm4all.server.tool_stream import CallStreamer, ContentSplitter


def _tool(name: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    params = {"type": "object", "properties": props, "required": required}
    return {"type": "function", "function": {"name": name, "parameters": params}}


WEATHER = _tool("get_weather", {"city": {"type": "string"}}, ["city"])
NOW = _tool("now", {}, [])
TIMER = _tool("set_timer", {"minutes": {"type": "integer"}}, ["minutes"])
SCHEMAS = schemas_of([WEATHER, NOW, TIMER])


def _one(text: str) -> tuple[str | None, list[tuple[str, Any]]]:
    parsed = parse(text, forced=False, known=SCHEMAS)
    return parsed.content, [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed.calls
    ]


def test_a_fenced_call_after_text_is_a_call_and_the_text_stays_content() -> None:
    # Qwen2.5-Coder-1.5B's form (issue 22: 0 of 12 were calls before).
    text = 'I will check.\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
    assert _one(text) == ("I will check.", [("get_weather", {"city": "Paris"})])
    pretty = '```json\n{\n  "name": "set_timer",\n  "parameters": {"minutes": 5}\n}\n```\nDone.'
    assert _one(pretty) == ("Done.", [("set_timer", {"minutes": 5})])
    hermes = 'Sure.\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    assert _one(hermes) == ("Sure.", [("now", {})])
    wrapped = '{"function": {"name": "now", "arguments": {}}}'
    assert _one(wrapped) == (None, [("now", {})])


def test_no_false_calls_and_no_schema_invalid_arguments() -> None:
    for text in [
        '{"name": "Alice", "age": 3}',  # JSON naming no declared tool
        '```json\n{"name": "rm_rf", "arguments": {}}\n```',
        # the parameter schema echoed back (Qwen2.5-0.5B's calls of a tool without parameters)
        '{"name": "now", "arguments": {"type": "object", "properties": {}}}',
        '{"name": "set_timer", "arguments": {"minutes": "ten"}}',  # wrong type
        '{"name": "get_weather", "arguments": {}}',  # a required field missing
        '{"name": "set_timer", "arguments": {"minutes": true}}',  # JSON's true is no integer
    ]:
        assert _one(text) == (text, []), text
    assert valid_arguments('{"minutes": 3}', SCHEMAS["set_timer"])
    assert not valid_arguments("[1]", SCHEMAS["set_timer"])


def test_streaming_holds_a_fenced_call_back_and_lets_code_through() -> None:
    text = 'Here:\n```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```'
    for step in (1, 4, 9):
        splitter, calls = ContentSplitter(False), CallStreamer(frozenset(SCHEMAS), True)
        content, entries = [], []
        for i in range(0, len(text), step):
            content.append(splitter.feed(text[i : i + step]))
            entries += calls.update(splitter.held)
        content.append(splitter.flush())
        assert "".join(content) == "Here:\n"
        assert entries[0]["function"] == {"name": "get_weather", "arguments": ""}
        args = "".join(e["function"]["arguments"] for e in entries[1:])
        assert json.loads(args) == {"city": "Oslo"}
    code = 'Use this:\n```python\nprint({"a": 1})\n```\nand {braces}.'
    splitter = ContentSplitter(False)
    out = "".join(splitter.feed(code[i : i + 3]) for i in range(0, len(code), 3))
    assert out + splitter.flush() == code and splitter.held == ""
    # What only looks like a call is held to the end, then sent as content: nothing is lost.
    looks = 'A dict: {"name": "Bob"} and more.'
    splitter = ContentSplitter(False)
    out = "".join(splitter.feed(looks[i : i + 3]) for i in range(0, len(looks), 3))
    assert out == "A dict: " and parse(splitter.held, forced=False, known=SCHEMAS).calls == []
    assert out + splitter.flush() + splitter.held == looks


def test_the_call_grammar_is_lazy_and_names_only_declared_tools() -> None:
    grammar = call_grammar([WEATHER, NOW])
    header, _, body = grammar.partition("\n")
    assert "get_weather|now" in header and "root ::= call more" in body
    assert '"\\"now\\"" space ( ","' in body  # a tool without required fields: arguments optional


def _ask(model: Any, question: str, tools: list[dict[str, Any]], grammar: bool = True) -> Any:
    params = GenerationParams(temperature=0, max_tokens=60)
    prepared = answer.prepare(model, [Message("user", question)], params=params, tools=tools)
    assert prepared.params.grammar is not None  # the pipeline adds it for every front end
    if not grammar:
        prepared = answer.Prepared(
            prepared.prompt, prepared.params.replace(grammar=None), tools=prepared.tools
        )
    return answer.stream(model, prepared)


def test_once_a_call_begins_its_arguments_follow_the_schema(default_model: Any) -> None:
    # Asked to copy a call with a string where the schema wants an integer: unconstrained,
    # the model copies it (and the parser keeps it out of tool_calls); constrained, the
    # arguments are an integer.
    question = (
        'Reply with exactly this text and nothing else: {"name": "set_timer", "arguments": '
        '{"minutes": "ten"}}'
    )
    free = _ask(default_model, question, [TIMER], grammar=False)
    assert '"ten"' in free.text() and free.tool_calls == []
    constrained = _ask(default_model, question, [TIMER])
    (call,) = constrained.tool_calls
    assert isinstance(json.loads(call["function"]["arguments"])["minutes"], int)


def test_a_tool_without_parameters_gets_empty_arguments(default_model: Any) -> None:
    response = _ask(default_model, "What time is it?", [NOW])
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in response.tool_calls] == [
        ("now", "{}")
    ]


@pytest.mark.parametrize("question", ["Who wrote Hamlet?"])
def test_an_irrelevant_question_gets_an_answer(default_model: Any, question: str) -> None:
    response = _ask(default_model, question, [TIMER])
    assert response.tool_calls == [] and "Shakespeare" in response.text()


def test_a_tool_definition_written_back_is_no_call() -> None:
    # Qwen2.5-Coder-0.5B asked for a haiku with a weather tool offered wrote the tool list back.
    echo = (
        '{"type": "function", "function": {"name": "get_weather", "parameters": {"city": "sea"}}}'
    )
    assert _one(echo) == (echo, [])
    header = call_grammar([WEATHER]).partition("\n")[0]
    assert header.count(r'[^"\s]\s*:') == 1  # the trigger skips a key's value too


def _free_text_accepts(rules: dict[str, str], text: str) -> bool:
    """Walk ``free0``… (each ``| [class] freeN | …``) over ``text``, as llama.cpp would."""
    state = "free0"
    for ch in text:
        for alternative in rules[state].split(" | ")[1:]:
            cls, goes = alternative.rsplit(" ", 1)
            negated = cls.startswith("[^")
            chars = cls[2 if negated else 1 : -1].encode().decode("unicode_escape")
            if (ch in chars) != negated:
                state = goes
                break
        else:
            return False
    return True


def test_the_text_between_calls_is_free_except_where_a_call_begins() -> None:
    rules = _free_text_rules(["now", "get_weather", "no"])
    for free in ['Done. {"a": 1}', '{"name": "Bob"}', '{"name": "nowhere"}', "ok\n```", ""]:
        assert _free_text_accepts(rules, free), free
    for head in ['{"name": "now"', 'x {\n  "name" :"get_weather"', '{{"name":"no"']:
        assert not _free_text_accepts(rules, head), head
    grammar = call_grammar([WEATHER, NOW]).partition("\n")[2]
    assert "root ::= call more" in grammar and "more ::= free0 ( call more )?" in grammar
    assert "root ::= call rest" in call_grammar([WEATHER], parallel=False)


def test_every_call_in_an_answer_follows_the_schema(default_model: Any) -> None:
    # Two calls to copy, the second with a string where the schema wants an integer: the
    # grammar constrains the second call too (before, only the first one was).
    question = (
        'Reply with exactly this text: {"name": "set_timer", "arguments": {"minutes": 5}} '
        '{"name": "set_timer", "arguments": {"minutes": "ten"}}'
    )
    calls = _ask(default_model, question, [TIMER]).tool_calls
    assert [json.loads(c["function"]["arguments"])["minutes"] for c in calls] == [5, 10]


def test_given_the_result_the_model_answers_from_it(default_model: Any) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
    }
    result = json.dumps({"city": "Oslo", "temperature_c": 12, "sky": "rain"})
    messages = [
        Message("user", "What's the weather in Oslo?"),
        Message("assistant", "", (call,)),
        Message("tool", result, (), "call_1"),
    ]
    params = GenerationParams(temperature=0, max_tokens=40)
    response = answer.stream(
        default_model, answer.prepare(default_model, messages, params=params, tools=[WEATHER])
    )
    assert response.tool_calls == [] and "12" in response.text()
