"""The Python API on a real model: Model, Response, ChatSession."""

from __future__ import annotations

from pathlib import Path

import pytest

import llm4all
from llm4all import ContextOverflow, GenerationParams, InvalidParameter, Model, ModelNotFound
from llm4all.chat.template import Message
from llm4all.store import ChatStore


def test_generate_and_stream_agree(fast_model: Model) -> None:
    text = fast_model.generate("What is 2 + 2?", max_tokens=20)
    pieces = list(fast_model.stream("What is 2 + 2?", max_tokens=20))
    assert text.strip() and "".join(pieces) == text
    assert len(pieces) > 1  # it really streamed


def test_response_carries_completion(fast_model: Model) -> None:
    response = fast_model.stream("Say hello.", max_tokens=10)
    assert response.completion is None
    text = response.text()
    done = response.completion
    assert done is not None and done.text == text
    assert done.usage.prompt_tokens > 5 and 0 < done.usage.completion_tokens <= 10
    assert done.timings.time_to_first_token > 0


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tools_are_rendered_by_the_chat_template(fast_model: Model) -> None:
    hi = [Message("user", "Weather in Oslo?")]
    template = (
        "{% for t in tools or [] %}<fn {{ t.function.name }}>{% endfor %}"
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    )
    assert fast_model.render(hi, template=template, tools=[WEATHER]) == (
        "<fn get_weather>user: Weather in Oslo?\n"
    )
    assert fast_model.render(hi, template=template) == "user: Weather in Oslo?\n"
    # SmolLM2's own template has no tools: they are described in the system turn.
    with_tools = fast_model.render(hi, tools=[WEATHER])
    assert "get_weather" in with_tools and "<tool_call>" in with_tools
    assert "get_weather" not in fast_model.render(hi)
    assert "get_weather" in fast_model.engine.detokenize(
        fast_model.chat_tokens(hi, tools=[WEATHER])
    )


def test_raw_completion_continues_text(fast_model: Model) -> None:
    out = fast_model.generate("The days of the week are Monday, Tuesday,", raw=True, max_tokens=8)
    assert "Wednesday" in out


def test_unknown_parameter_named(fast_model: Model) -> None:
    with pytest.raises(InvalidParameter, match="tempreature"):
        fast_model.generate("hi", tempreature=0.1)


def test_out_of_range_parameter_named(fast_model: Model) -> None:
    with pytest.raises(InvalidParameter) as info:
        fast_model.generate("hi", top_p=7)
    assert info.value.field == "top_p"


def test_cancel_keeps_partial_text(fast_model: Model) -> None:
    response = fast_model.stream("Write a long story about a dragon.", max_tokens=200)
    got = []
    for piece in response:
        got.append(piece)
        if len(got) == 3:
            response.cancel()
    assert response.completion is not None
    assert response.completion.finish_reason == "cancelled"
    assert response.completion.text == "".join(got)


def test_prompt_too_long_is_context_overflow(fast_model: Model) -> None:
    with pytest.raises(ContextOverflow) as info:
        fast_model.generate("word " * 3000)
    assert info.value.n_ctx == 2048 and info.value.prompt_tokens > 2048


def test_chat_session_keeps_history_and_reuses_cache(fast_model: Model) -> None:
    chat = fast_model.chat(system_prompt="You are a helpful assistant.", max_tokens=16)
    first = chat.send("Hello! Who are you?")
    first.text()
    second = chat.send("What did I just ask you?")
    second.text()
    assert [m.role for m in chat.history] == ["system", "user", "assistant", "user", "assistant"]
    assert first.completion is not None and second.completion is not None
    # Turn two evaluates only what is new: the whole first exchange comes from the cache.
    assert second.completion.usage.cached_tokens >= first.completion.usage.prompt_tokens


def test_chat_trims_oldest_turns_keeping_system(fast_model_path: Path) -> None:
    with Model(
        fast_model_path, n_ctx=256, params=GenerationParams(temperature=0, max_tokens=40)
    ) as small:
        chat = small.chat(system_prompt="Be brief.")
        for i in range(6):
            chat.send(f"Tell me fact number {i} about the ocean in one sentence.").text()
        assert chat.dropped > 0
        assert chat.history[0].content == "Be brief."


def test_chat_session_persists_every_message(fast_model: Model, tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chats.db")
    chat = llm4all.ChatSession(
        fast_model, store=store, params=fast_model.params.replace(max_tokens=8)
    )
    chat.send("Hi there").text()
    assert chat.chat_id is not None
    stored = store.messages(chat.chat_id)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].completion_tokens and stored[1].tokens_per_second is not None
    assert store.get_chat(chat.chat_id).title == "Hi there"


def test_unknown_model_suggests(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as info:
        Model("smollm2-135m-instrct", allow_download=False)
    assert "smollm2-135m-instruct" in info.value.suggestions


def test_corrupt_model_is_a_clear_error(tmp_path: Path, fast_model_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(fast_model_path.read_bytes()[:20_000_000])
    with pytest.raises(llm4all.ModelLoadError, match=r"broken\.gguf"):
        Model(broken)


@pytest.mark.default_model
def test_default_model_knows_paris(default_model: Model) -> None:
    answer = default_model.generate(
        "What is the capital of France? Answer in one word.", max_tokens=10
    )
    assert "Paris" in answer


@pytest.mark.default_model
def test_default_model_remembers_a_name(default_model: Model) -> None:
    chat = default_model.chat(max_tokens=40)
    chat.send("Hi! My name is Ada Lovelace.").text()
    chat.send("What is 3 + 4?").text()
    assert "Ada" in chat.send("What is my name?").text()


def test_model_larger_than_free_ram_is_refused(
    fast_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    class Tiny:
        available = 50 * 2**20

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    with pytest.raises(llm4all.Llm4allError, match="check_memory=False") as info:
        Model(fast_model_path)
    assert info.value.needed_bytes > Tiny.available  # type: ignore[attr-defined]
    with Model(fast_model_path, check_memory=False, n_ctx=256) as model:  # the user's override
        assert model.count_tokens("hello") > 0
