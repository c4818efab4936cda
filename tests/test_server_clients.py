"""Real clients against a real server: the ``openai`` package (sync, async, streaming,
structured output, tools, embeddings) and LangChain's ``ChatOpenAI``."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from server_helpers import DEFAULT, FAST, LiveServer, fast_settings, running

openai = pytest.importorskip("openai")

KEY = "sk-test-key"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def server(fast_model_path: Path) -> Iterator[LiveServer]:
    with running(fast_settings(fast_model_path.parent, api_key=KEY, ctx=2048)) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=300)


def test_sync_chat_and_models(client: openai.OpenAI) -> None:
    assert FAST in [m.id for m in client.models.list()]
    answer = client.chat.completions.create(
        model=FAST,
        messages=[{"role": "user", "content": "What is 2 + 2?"}],
        temperature=0,
        max_tokens=20,
        seed=1,
    )
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens <= 20


def test_wrong_key_is_refused(server: LiveServer) -> None:
    bad = openai.OpenAI(base_url=server.base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=FAST,
        messages=[{"role": "user", "content": "Name three fruits."}],
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    usage = chunks[-1].usage
    assert usage is not None and 0 < usage.completion_tokens <= 16


def test_async_client_runs_requests_concurrently(server: LiveServer) -> None:
    async def main() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
        questions = ["a colour", "a fruit", "an animal", "a country"]
        answers = await asyncio.gather(
            *(
                aclient.chat.completions.create(
                    model=FAST,
                    messages=[{"role": "user", "content": f"Name {q}."}],
                    temperature=0,
                    max_tokens=12,
                )
                for q in questions
            )
        )
        stream = await aclient.chat.completions.create(
            model=FAST, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream]
        await aclient.close()
        return [a.choices[0].message.content or "" for a in answers] + ["".join(pieces)]

    assert all(asyncio.run(main()))


def test_json_schema_structured_output(client: openai.OpenAI) -> None:
    class Person(BaseModel):
        name: str
        age: int

    parsed = client.chat.completions.parse(
        model=FAST,
        messages=[{"role": "user", "content": "Invent a person with a name and an age."}],
        response_format=Person,
        temperature=0,
        max_tokens=60,
    )
    person = parsed.choices[0].message.parsed
    assert isinstance(person, Person) and person.name


def test_forced_tool_call(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=FAST,
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=60,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


@pytest.mark.default_model
def test_tools_with_the_default_model_loaded_on_demand(client: openai.OpenAI) -> None:
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "What is the weather like in Paris today?"}
    ]
    first = client.chat.completions.create(
        model=DEFAULT, messages=messages, tools=[WEATHER_TOOL], temperature=0, max_tokens=80
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["city"].lower()
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'})
    second = client.chat.completions.create(
        model=DEFAULT, messages=messages, tools=[WEATHER_TOOL], temperature=0, max_tokens=60
    )
    assert "21" in (second.choices[0].message.content or "")
    stream = client.chat.completions.create(  # tool_choice "auto": Qwen's <tool_call> tags
        model=DEFAULT,
        messages=messages[:1],
        tools=[WEATHER_TOOL],
        temperature=0,
        max_tokens=80,
        stream=True,
    )
    chunks = [c for c in stream if c.choices]
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or ()]
    assert calls[0].function.name == "get_weather" and len(calls) > 2
    streamed = json.loads("".join(tc.function.arguments or "" for tc in calls))
    assert streamed == json.loads(call.function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


class GetWeather(BaseModel):
    city: str


def test_streamed_tool_call_with_the_stream_helper(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": FAST,
        "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
        "tools": [openai.pydantic_function_tool(GetWeather, name="get_weather")],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0,
        "max_tokens": 60,
    }
    pieces = []
    with client.chat.completions.stream(**request) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                pieces.append(event.arguments_delta)
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert isinstance(call.function.parsed_arguments, GetWeather)
    assert len(pieces) > 2 and "".join(pieces) == call.function.arguments
    whole = client.chat.completions.create(**request).choices[0].message.tool_calls or []
    assert json.loads(whole[0].function.arguments) == json.loads(call.function.arguments)


def test_streamed_tool_call_chunks_are_shaped_as_openai_sends_them(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=FAST,
        messages=[{"role": "user", "content": "Weather in Lima?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        temperature=0,
        max_tokens=60,
        stream=True,
    )
    chunks = [c for c in stream if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [
        tc.model_dump(exclude_unset=True)
        for c in chunks
        for tc in c.choices[0].delta.tool_calls or ()
    ]
    first, rest = deltas[0], deltas[1:]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert rest and all(d.keys() == {"index", "function"} for d in rest)
    assert all(d["function"].keys() == {"arguments"} for d in rest)
    arguments = json.loads("".join(d["function"]["arguments"] for d in rest))
    assert isinstance(arguments["city"], str)
    assert [c.choices[0].finish_reason for c in chunks][-1] == "tool_calls"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings(client: openai.OpenAI) -> None:
    texts = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock markets fell."]
    result = client.embeddings.create(model=FAST, input=texts)  # base64 on the wire
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 3 and len(vectors[0]) == 576
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0, rel_tol=1e-3)
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])
    as_floats = client.embeddings.create(model=FAST, input=texts[0], encoding_format="float")
    assert as_floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    assert result.usage.prompt_tokens > 0
    # SmolLM2's tokenizer drops a lone control character: no tokens, nothing to embed
    # (found by fuzzing: llama_decode of an empty batch failed, a 500).
    with pytest.raises(openai.BadRequestError, match="input 1 has no tokens"):
        client.embeddings.create(model=FAST, input=["fine", "\x06"])


@pytest.mark.parametrize("name", [FAST, "all-minilm-l6-v2"])
def test_a_list_of_inputs_is_embedded_in_one_batch_in_order(
    server: LiveServer, client: openai.OpenAI, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm4all.models import ModelStore

    if ModelStore(server.settings.models_dir).find_installed(name) is None:
        pytest.skip(f"{name} is not installed")
    texts = [
        "Hi.",
        "A considerably longer sentence about rivers, mountains and the sea at dawn.",
        "Tax law.",
        "The cat sat on the mat while the old dog slept by the fire all evening long.",
        "ok",
    ]
    client.embeddings.create(model=name, input="warm up")  # loads the model
    engine = next(
        m.model.engine
        for m in server.app.state.manager.loaded()
        if (m.name, m.kind) == (name, "embedding")
    )
    decodes: list[int] = []
    embed_group = engine._embed_group

    def counted(group: list[list[int]]) -> list[list[float]]:
        decodes.append(len(group))
        return embed_group(group)  # type: ignore[no-any-return]

    monkeypatch.setattr(engine, "_embed_group", counted)
    batch = client.embeddings.create(model=name, input=texts, encoding_format="float")
    assert decodes == [len(texts)]  # all five in one llama_decode
    alone = [client.embeddings.create(model=name, input=t, encoding_format="float") for t in texts]
    assert [d.index for d in batch.data] == list(range(len(texts)))
    for together, one in zip(batch.data, alone, strict=True):
        assert _cosine(together.embedding, one.data[0].embedding) >= 0.9999
    assert batch.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    assert batch.usage.total_tokens == batch.usage.prompt_tokens


def test_embeddings_with_minilm_if_installed(server: LiveServer, client: openai.OpenAI) -> None:
    from llm4all.models import ModelStore

    name = "all-minilm-l6-v2"
    if ModelStore(server.settings.models_dir).find_installed(name) is None:
        pytest.skip(f"{name} is not installed")
    result = client.embeddings.create(model=name, input=["hello world", "hi there", "tax law"])
    vectors = [d.embedding for d in result.data]
    assert len(vectors[0]) == 384
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])


def test_langchain_chat_openai(server: LiveServer) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(
        base_url=server.base_url, api_key=KEY, model=FAST, temperature=0, max_tokens=16
    )
    reply = llm.invoke("Say hello in French.")
    assert isinstance(reply.content, str) and reply.content
    pieces = [chunk.content for chunk in llm.stream("Count to three.")]
    assert "".join(str(p) for p in pieces)
    tool_llm = llm.model_copy(update={"max_tokens": 60}).bind_tools(
        [WEATHER_TOOL], tool_choice="get_weather"
    )
    message = tool_llm.invoke("Weather in Rome?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"
    # Streamed: LangChain joins the deltas of one call; name and id must come once.
    merged = None
    for chunk in tool_llm.stream("Weather in Rome?"):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None and len(merged.tool_call_chunks) == 1
    assert merged.tool_calls[0]["name"] == "get_weather"
    assert isinstance(merged.tool_calls[0]["args"]["city"], str)
    assert merged.response_metadata["finish_reason"] == "tool_calls"
