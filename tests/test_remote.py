"""The remote backend against a server on 127.0.0.1 that misbehaves on purpose.

Each failure mode of an OpenAI-compatible endpoint (connection refused, a
stall, 401, 404, 429, a malformed stream) must be one :class:`RemoteError`
line that names the endpoint, raised in bounded time; the registry and
``llm4all models add-remote`` must never write the API key anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm4all.engine.base import ChatInput, collect
from llm4all.engine.remote import backend, ref_of
from llm4all.engine.remote.client import (
    Endpoint,
    RemoteAuthError,
    RemoteClient,
    RemoteError,
    RemoteModelNotFound,
    RemoteProtocolError,
    RemoteRateLimited,
    RemoteUnavailable,
    _sse_data,
)
from llm4all.engine.remote.engine import RemoteEngine, request_params, response_format
from llm4all.errors import Unsupported
from llm4all.models import remotes
from llm4all.models.remotes import Remote
from llm4all.params import GenerationParams
from misbehaving_server import Running, misbehaving, refused_url

KEY = "sk-test-0123456789abcdef"
HI = ChatInput(({"role": "user", "content": "Hi"},))
GREEDY = GenerationParams(temperature=0, max_tokens=8)


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with misbehaving(key=KEY, stall_s=20) as running:
        yield running


@pytest.fixture(autouse=True)
def key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REMOTE_KEY", KEY)


def engine(server: Running, model: str, **endpoint: object) -> RemoteEngine:
    options: dict[str, object] = {"api_key_env": "TEST_REMOTE_KEY", "timeout": 2.0} | endpoint
    ep = Endpoint(server.base_url, model, **options)  # type: ignore[arg-type]
    return RemoteEngine(model, ep, client=RemoteClient(ep, sleep=lambda s: None), check=False)


def answer(server: Running, model: str, **endpoint: object) -> str:
    with engine(server, model, **endpoint) as e:
        return collect(e.generate(HI, GREEDY)).text


# -- a well-behaved stream ----------------------------------------------------------------
def test_stream_request_and_answer(server: Running) -> None:
    with engine(server, "ok") as e:
        pieces = list(e.generate(HI, GenerationParams(temperature=0, max_tokens=8, stop=["x"])))
    assert "".join(p.text for p in pieces) == "hello world"
    final = pieces[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens == 2
    sent = server.app.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["json"]["stream"] is True and sent["json"]["max_tokens"] == 8
    assert sent["json"]["stop"] == ["x"] and sent["json"]["messages"] == list(HI.messages)


def test_tools_and_schema_pass_through(server: Running) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    schema = '{"type": "object", "properties": {"a": {"type": "integer"}}}'
    with engine(server, "ok") as e:
        collect(e.generate(ChatInput(HI.messages, (tool,)), GREEDY.replace(json_schema=schema)))
    sent = server.app.requests[-1]["json"]
    assert sent["tools"] == [tool]
    assert sent["response_format"]["json_schema"]["schema"] == json.loads(schema)
    assert response_format("{}") == {"type": "json_object"}


def test_capabilities_are_honest(server: Running) -> None:
    with engine(server, "ok") as e:
        caps = e.capabilities
        assert caps.chat and caps.json_schema and caps.tools and caps.batching
        assert not (caps.tokens or caps.grammar or caps.prefix_cache or caps.logprobs)
        with pytest.raises(Unsupported, match="GBNF"):
            e.generate(HI, GREEDY.replace(grammar='root ::= "a"'))
        with pytest.raises(Unsupported):
            e.generate([1, 2, 3], GREEDY)
        assert e.runner().n_slots > 1  # pass-through: the remote batches


def test_text_completion_uses_completions(server: Running) -> None:
    with engine(server, "ok") as e:
        collect(e.generate("Once upon", GREEDY))
    assert server.app.requests[-1]["path"] == "/v1/completions"
    assert server.app.requests[-1]["json"]["prompt"] == "Once upon"


def test_embeddings(server: Running) -> None:
    ep = Endpoint(server.base_url, "ok", "TEST_REMOTE_KEY")
    with RemoteEngine("emb", ep, embedding=True, check=False) as e:
        vectors = e.embed(["abc", "de"])
    assert server.app.requests[-1]["path"] == "/v1/embeddings"
    assert len(vectors) == 2
    assert all(abs(sum(x * x for x in v) - 1) < 1e-9 for v in vectors)


def test_cancel_stops_the_stream(server: Running) -> None:
    with engine(server, "ok") as e:
        stream = e.generate(HI, GREEDY, should_continue=lambda: False)
        pieces = list(stream)
    assert pieces[-1].finish_reason == "cancelled"


@pytest.mark.parametrize(
    ("said", "forced"), [("", False), ("", True), ("Let me look that up.", False)]
)
def test_tool_call_deltas_parse_as_calls(said: str, forced: bool) -> None:
    """Structured tool-call deltas become text that chat/tools.parse reads back as the calls."""
    from llm4all.chat.tools import parse
    from llm4all.engine.remote.engine import _StreamState

    state = _StreamState(start=0.0)
    call = {"index": 0, "id": "c1", "function": {"name": "get_weather", "arguments": '{"ci'}}
    more = {"index": 0, "function": {"arguments": 'ty": "Paris"}'}}
    text = state.take({"choices": [{"index": 0, "delta": {"content": said}}]}, "here")
    for delta in ({"tool_calls": [call]}, {"tool_calls": [more]}):
        text += state.take({"choices": [{"index": 0, "delta": delta}]}, "here")
    parsed = parse(text + state.calls_text(), forced=forced, known={"get_weather"})
    assert [c["function"]["name"] for c in parsed.calls] == ["get_weather"]
    assert json.loads(parsed.calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert (parsed.content or "") == said


def test_parallel_tool_calls_parse_as_calls() -> None:
    from llm4all.chat.tools import parse
    from llm4all.engine.remote.engine import _StreamState

    state = _StreamState(start=0.0)
    calls = [
        {"index": i, "function": {"name": "f", "arguments": json.dumps({"n": i})}} for i in (0, 1)
    ]
    state.take({"choices": [{"index": 0, "delta": {"tool_calls": calls}}]}, "here")
    parsed = parse(state.calls_text(), forced=False, known={"f"})
    assert [json.loads(c["function"]["arguments"]) for c in parsed.calls] == [{"n": 0}, {"n": 1}]


# -- every failure mode: one line naming the endpoint ----------------------------------------
@pytest.mark.parametrize(
    ("model", "error", "words"),
    [
        ("missing", RemoteModelNotFound, "no model 'missing'"),
        ("busy", RemoteRateLimited, "still busy after 3 tries"),
        ("garbage", RemoteProtocolError, "not JSON"),
        ("truncated", RemoteProtocolError, "without data: [DONE]"),
        ("not-sse", RemoteProtocolError, "asked for a stream"),
        ("error-event", RemoteError, "the GPU fell over"),
        ("stall", RemoteUnavailable, "no answer for 1 s"),
        ("mute", RemoteUnavailable, "no answer within 1 s"),
    ],
)
def test_failure_modes(server: Running, model: str, error: type, words: str) -> None:
    with pytest.raises(error) as caught:
        answer(server, model, retries=2, timeout=1.0)
    message = str(caught.value)
    assert "\n" not in message and server.base_url in message and words in message
    assert KEY not in message


def test_429_is_retried_then_answered(server: Running) -> None:
    before = server.app.seen.get("busy-once", 0)
    assert answer(server, "busy-once") == "hello world"
    assert server.app.seen["busy-once"] == before + 2


def test_wrong_key_is_401(server: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REMOTE_KEY", "sk-wrong")
    with pytest.raises(RemoteAuthError, match=r"API key was refused \(401.*TEST_REMOTE_KEY"):
        answer(server, "ok")


def test_connection_refused() -> None:
    url = refused_url()
    ep = Endpoint(url, "ok")
    with pytest.raises(RemoteUnavailable, match="cannot connect") as caught:
        RemoteEngine("x", ep)
    assert url in str(caught.value)


def test_load_checks_the_model_list(server: Running) -> None:
    ref = ref_of(Remote("far", server.base_url, "nope", "TEST_REMOTE_KEY"))
    assert backend.claims(ref)
    with pytest.raises(RemoteModelNotFound, match="it serves ok"):
        backend.load(ref, None)


def test_sse_parsing() -> None:
    lines = [": ping", "data: {}", "", "event: x", "data: a", "data: b", "", "data: [DONE]"]
    assert list(_sse_data(iter(lines))) == ["{}", "a\nb", "[DONE]"]


def test_request_params_are_standard_fields() -> None:
    sent = request_params(GenerationParams(temperature=0.2, seed=3, top_k=5))
    assert sent == {"temperature": 0.2, "top_p": 0.95, "seed": 3}


# -- the registry and the CLI -----------------------------------------------------------------
def test_registry_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "remotes.json"
    remote = Remote("big", "http://gpu:8000/v1", "Qwen/Qwen2.5-72B", "VLLM_KEY", 30.0)
    remotes.add(remote, path=path)
    assert remotes.load(path) == {"big": remote}
    with pytest.raises(ValueError, match="registered already"):
        remotes.add(remote, path=path)
    assert remotes.remove("big", path=path) == remote
    assert remotes.load(path) == {}
    for bad in (
        Remote("x", "ftp://gpu", "m"),
        Remote("x", "http://u:p@gpu/v1", "m"),
        Remote("x", "http://gpu/v1", "m", api_key_env="sk-1234"),
        Remote("-x", "http://gpu/v1", "m"),
    ):
        with pytest.raises(ValueError):
            remotes.validate(bad)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm4all", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
    )


def test_add_remote_cli_never_writes_the_key(server: Running, isolated_home: Path) -> None:
    from click.testing import CliRunner

    from llm4all.cli.models import models_group

    add = ["add-remote", "far", "--base-url", server.base_url, "--model", "ok"]
    refused = _cli("models", *add)  # no key: the endpoint's 401, as one line from the real CLI
    assert refused.returncode == 1 and "401" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    runner = CliRunner()
    done = runner.invoke(models_group, [*add, "--api-key-env", "TEST_REMOTE_KEY"])
    assert done.exit_code == 0, done.output
    listed = json.loads(runner.invoke(models_group, ["list", "--json"]).stdout)
    row = next(r for r in listed if r["name"] == "far")
    assert row["source"] == "remote" and row["model"] == "ok"
    info = runner.invoke(models_group, ["info", "far"])
    assert "TEST_REMOTE_KEY (set)" in info.output
    everything = b"".join(p.read_bytes() for p in isolated_home.rglob("*") if p.is_file())
    assert b"TEST_REMOTE_KEY" in everything and KEY.encode() not in everything
    assert KEY not in done.output + info.output
    assert runner.invoke(models_group, ["rm", "far"]).exit_code == 0
    assert remotes.load() == {}


# -- what leaves the machine ----------------------------------------------------------------
def test_localdocs_stay_local_only_excerpts_go_out(
    server: Running, tmp_path: Path, notes: Path, embedder: object
) -> None:
    """A chat on a remote with a LocalDocs collection: searched here, excerpts sent there."""
    import llm4all
    from conftest import FACT
    from llm4all.localdocs import LocalDocs
    from llm4all.store import ChatStore

    remotes.add(Remote("far", server.base_url, "ok", "TEST_REMOTE_KEY"))
    with (
        LocalDocs(tmp_path / "ld.db", embedder_factory=lambda _: embedder) as docs,
        llm4all.Model("far") as model,
        ChatStore() as store,
    ):
        docs.add("notes", [notes])
        docs.index("notes")
        chat = model.chat(collections=["notes"], temperature=0)
        chat.localdocs, chat.store = docs, store
        answer = chat.send("Where is the Zorblax conference?")
        assert answer.text() == "hello world" and answer.sources
        sent = server.app.requests[-1]["json"]["messages"]
        stored = [m.content for m in store.messages(chat.chat_id or "")]
    assert FACT in sent[-1]["content"]  # the excerpt went out, inside the question
    assert str(notes) not in json.dumps(sent)  # file names only, not where they are
    assert stored[0] == "Where is the Zorblax conference?"  # the store keeps the plain question


def test_a_long_chat_is_fitted_to_the_reported_window(server: Running) -> None:
    """The endpoint lists max_model_len 64: the oldest turns are dropped, the system prompt stays."""
    import llm4all

    remotes.add(Remote("small", server.base_url, "small", "TEST_REMOTE_KEY"))
    with llm4all.Model("small") as model:
        assert model.info.n_ctx == 64
        chat = model.chat(system_prompt="Be brief.", temperature=0, max_tokens=8)
        for turn in range(4):
            chat.send(f"Tell me about the number {turn} in some detail, please.").text()
    sent = server.app.requests[-1]["json"]["messages"]
    assert chat.dropped > 0 and len(sent) < 1 + 2 * 4 - 1
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[-1]["content"].endswith("number 3 in some detail, please.")
