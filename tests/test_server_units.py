"""Pure parts of the server: settings, request models derived from GenerationParams, tools."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llm4all.chat.template import Message
from llm4all.chat.tools import describe_in_system
from llm4all.errors import InvalidParameter
from llm4all.params import GenerationParams
from llm4all.server.errors import translate
from llm4all.server.schemas import KNOB_NAMES, ChatCompletionRequest, Tool
from llm4all.server.security import host_allowed
from llm4all.server.settings import ServerSettings, is_loopback
from llm4all.server.tool_stream import CallStreamer, ContentSplitter
from llm4all.server.tools import forced_schema, parse
from llm4all.sqlite import storage_error

KNOWN = {"get_weather", "search"}
TOOL = Tool.model_validate(
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.2", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_binding_beyond_loopback_needs_a_key_or_insecure() -> None:
    with pytest.raises(InvalidParameter, match="api-key"):
        ServerSettings(host="0.0.0.0")
    assert ServerSettings(host="0.0.0.0", api_key="k").api_key == "k"
    assert ServerSettings(host="0.0.0.0", insecure=True).insecure


def test_settings_check_ranges_through_load_params() -> None:
    with pytest.raises(InvalidParameter) as err:
        ServerSettings(parallel=0)
    assert err.value.field == "parallel"
    load = ServerSettings(parallel=3, ctx=1000).load_params()
    assert (load.n_seq_max, load.n_ctx) == (3, 3000)


def test_every_generation_knob_is_a_request_field_with_its_range() -> None:
    fields = ChatCompletionRequest.model_fields
    for f in dataclasses.fields(GenerationParams):
        if f.name in KNOB_NAMES:
            assert f.name in fields
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({**body, "top_p": 1.5})
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({**body, "unknown_field": 1})
    request = ChatCompletionRequest.model_validate({**body, "top_k": 5, "stop": "x"})
    assert request.knobs() == {"top_k": 5, "stop": "x"}


def test_parse_tagged_bare_and_forced_calls() -> None:
    tagged = 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    parsed = parse(tagged, forced=False, known=KNOWN)
    assert parsed.content == "Let me look."
    assert json.loads(parsed.calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    two = '{"name": "search", "arguments": {"q": "a"}}\n{"name": "search", "arguments": {"q": "b"}}'
    assert len(parse(two, forced=False, known=KNOWN).calls) == 2
    assert len(parse(two, forced=False, known=KNOWN, parallel=False).calls) == 1
    forced = parse('{"name": "get_weather", "arguments": {}}', forced=True, known=KNOWN)
    assert forced.content is None and forced.calls[0]["id"].startswith("call_")


def test_text_that_only_looks_like_a_call_stays_content() -> None:
    for text in [
        '{"name": "unknown_tool", "arguments": {}}',
        "<tool_call>not json</tool_call>",
        "{}",
    ]:
        parsed = parse(text, forced=False, known=KNOWN)
        assert parsed.calls == [] and parsed.content == text


def test_content_splitter_holds_back_calls_only() -> None:
    s = ContentSplitter(forced=False)
    assert s.feed("Sure. <tool") == "Sure. "
    assert s.feed('_call>{"name": "search"') == ""
    assert s.held.startswith("<tool_call>")
    plain = ContentSplitter(forced=False)
    assert plain.feed("  ") == ""
    assert plain.feed("Hello <b>") == "  Hello <b>"
    bare = ContentSplitter(forced=False)
    assert bare.feed('{"name"') == "" and bare.held == '{"name"'


def test_forced_schema_follows_tool_choice() -> None:
    assert forced_schema([TOOL], "auto") is None
    schema = json.loads(forced_schema([TOOL], "required") or "")
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"]["properties"]["city"] == {"type": "string"}


def test_tools_described_in_the_system_turn_for_templates_without_tools() -> None:
    messages = describe_in_system([Message("user", "hi")], [TOOL.model_dump()])
    assert messages[0].role == "system" and "get_weather" in messages[0].content
    assert "<tool_call>" in messages[0].content


def _stream(
    text: str, *, forced: bool = False, parallel: bool = True, step: int = 3
) -> tuple[str, list[dict[str, object]], CallStreamer, str]:
    """``text`` fed in pieces of ``step`` characters: (content, delta entries, streamer, held)."""
    splitter = ContentSplitter(forced)
    calls = CallStreamer(frozenset(KNOWN), parallel)
    content, entries = [], []
    for i in range(0, len(text), step):
        content.append(splitter.feed(text[i : i + step]))
        entries += calls.update(splitter.held)
    content.append(splitter.flush())
    return "".join(content), entries, calls, splitter.held


def _arguments(entries: list[dict[str, object]]) -> dict[object, str]:
    joined: dict[object, str] = {}
    for e in entries:
        function = e["function"]
        assert isinstance(function, dict)
        joined[e["index"]] = joined.get(e["index"], "") + function["arguments"]
    return joined


def test_call_streamer_sends_name_once_then_arguments_in_pieces() -> None:
    text = (
        "Looking.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Oslo", "days": [1, {"d": 2}]}}\n'
        '</tool_call>\n<tool_call>\n{"name": "search", "arguments": {"q": "a \\"}]\\" b"}}\n'
        "</tool_call>"
    )
    content, entries, calls, held = _stream(text)
    assert content == "Looking.\n"
    heads = [e for e in entries if "id" in e]
    assert heads == [
        {
            "index": k,
            "id": calls.calls[k].id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        for k, name in enumerate(["get_weather", "search"])
    ]
    pieces = [e for e in entries if "id" not in e]
    assert all(set(e) == {"index", "function"} for e in pieces)  # no name or id repeated
    assert len([e for e in pieces if e["index"] == 0]) > 5
    args = _arguments(entries)
    assert json.loads(args[0]) == {"city": "Oslo", "days": [1, {"d": 2}]}
    assert json.loads(args[1]) == {"q": 'a "}]" b'}
    rest, is_calls = calls.finish(parse(held, forced=False, known=KNOWN))
    assert rest == [] and is_calls


def test_call_streamer_bare_lists_forced_and_not_parallel() -> None:
    bare = '[{"name": "search", "arguments": {"q": "x"}}, {"name": "search", "arguments": {}}]'
    _, entries, calls, _ = _stream(bare)
    assert [c.name for c in calls.calls] == ["search", "search"]
    assert _arguments(entries) == {0: '{"q": "x"}', 1: "{}"}
    _, entries, calls, held = _stream(bare, parallel=False)
    assert len(calls.calls) == 1 and _arguments(entries) == {0: '{"q": "x"}'}
    parsed = parse(held, forced=False, known=KNOWN, parallel=False)
    assert calls.finish(parsed) == ([], True)
    forced = '{ "name": "get_weather", "arguments": { "city": "Rome" } }'
    _, entries, calls, _ = _stream(forced, forced=True, step=1)
    assert _arguments(entries) == {0: '{ "city": "Rome" }'}


def test_call_streamer_leaves_what_it_does_not_recognise_to_the_final_parse() -> None:
    as_string = '<tool_call>{"name": "search", "arguments": "{\\"q\\": 1}"}</tool_call>'
    _, entries, calls, held = _stream(as_string)
    assert entries == []
    rest, is_calls = calls.finish(parse(held, forced=False, known=KNOWN))
    assert is_calls and [(e["index"], e["function"]["name"]) for e in rest] == [(0, "search")]
    unknown = '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    _, entries, calls, held = _stream(unknown)
    assert entries == [] and calls.finish(parse(held, forced=False, known=KNOWN)) == ([], False)
    cut = '<tool_call>{"name": "search", "arguments": {"q": "unfinis'
    _, entries, calls, held = _stream(cut)
    assert _arguments(entries) == {0: '{"q": "unfinis'}
    assert calls.finish(parse(held, forced=False, known=KNOWN)) == ([], False)  # sent stands


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
# What a sampled answer may look like: call-shaped JSON with any values, inside tags or not.
_answers = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda name, args, tagged: ("<tool_call>{}</tool_call>" if tagged else "{}").format(
            json.dumps({"name": name, "arguments": args})
        ),
        st.sampled_from(sorted(KNOWN)) | _json,
        _json,
        st.booleans(),
    ),
    _json.map(json.dumps),
)


@settings(max_examples=300, deadline=None)
@given(text=_answers, forced=st.booleans(), parallel=st.booleans(), step=st.integers(1, 7))
def test_no_answer_makes_the_tool_parsers_raise(
    text: str, forced: bool, parallel: bool, step: int
) -> None:
    # A sampled answer is not under the client's control: any text must parse into
    # content and calls (found: a name written as a list raised TypeError, a 500).
    parsed = parse(text, forced=forced, known=KNOWN, parallel=parallel)
    assert all(c["function"]["name"] in KNOWN for c in parsed.calls)
    _, _, calls, held = _stream(text, forced=forced, parallel=parallel, step=step)
    calls.finish(parse(held, forced=forced, known=KNOWN, parallel=parallel))


# -- the Host check and the storage statuses ----------------------------------------------------
@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("127.0.0.1:4891", True),
        ("10.1.2.3", True),  # an IP literal: a browser sends the address it connected to
        ("[::1]:4891", True),
        ("[fe80::1]", True),
        ("localhost", True),
        ("LocalHost.:4891", True),
        ("chat.localhost", True),
        ("", True),  # no header: not a browser
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("[::1", False),  # unbalanced bracket
        ("llm.lan", False),
        ("mybox", True),  # this machine's own name (given below)
        ("mybox.local", True),
    ],
)
def test_host_allowed(header: str, allowed: bool) -> None:
    assert host_allowed(header, (), own={"mybox", "mybox.local"}) is allowed


def test_allowed_hosts_exact_domain_and_any() -> None:
    assert host_allowed("llm.lan:4891", ("llm.lan",))
    assert not host_allowed("x.llm.lan", ("llm.lan",))
    assert host_allowed("x.home.arpa", (".home.arpa",)) and host_allowed(
        "home.arpa", (".home.arpa",)
    )
    assert not host_allowed("xhome.arpa", (".home.arpa",))
    assert host_allowed("evil.example", ("*",))


def test_allowed_hosts_setting_is_normalised_and_checked() -> None:
    assert ServerSettings(allowed_hosts=("LLM.Lan.", "*")).allowed_hosts == ("llm.lan", "*")
    assert ServerSettings(allowed_hosts="llm.lan").allowed_hosts == ("llm.lan",)  # type: ignore[arg-type]
    for bad in ("http://llm.lan", "llm.lan:4891", "*.lan", "", "a b"):
        with pytest.raises(InvalidParameter, match="allowed_hosts"):
            ServerSettings(allowed_hosts=(bad,))


def test_a_locked_or_full_database_is_503_with_retry_after(tmp_path: Path) -> None:
    """Real SQLite errors: another connection's write lock, and a database at its size limit."""
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as locked:
        waiter.execute("BEGIN IMMEDIATE")
    holder.execute("ROLLBACK")
    pages = waiter.execute("PRAGMA page_count").fetchone()[0]
    waiter.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError) as full:
        waiter.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    for exc, code in ((locked.value, "storage_busy"), (full.value, "storage_full")):
        for error in (storage_error(path, exc), exc):  # translated by the store, or not
            api = translate(error)
            assert (api.status, api.code, api.type) == (503, code, "server_error")
            assert int(api.headers["Retry-After"]) >= 1 and str(path) not in api.message
    other = translate(storage_error(path, sqlite3.OperationalError("no such table: t2")))
    assert other.status == 400
