"""llm4all's LangChain classes on real models: what the standard suites do not check.

Stop strings end generation (not cut after it), the prompt is llm4all's own,
forced tool calls and structured output always parse, the retriever says where
each excerpt came from, the GPT4All compat names take the old fields, the
remote mode talks to a real ``llm4all serve``, and docs/langchain.md runs.
"""

from __future__ import annotations

import gc
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from conftest import FACT, FAST_MODEL
from llm4all.chat.template import Message
from llm4all.chat.tools import parse
from llm4all.integrations.langchain import (
    ChatLlm4all,
    GPT4All,
    GPT4AllEmbeddings,
    Llm4allEmbeddings,
    Llm4allLLM,
    LocalDocsRetriever,
)
from llm4all.server.tool_stream import ContentSplitter

COUNT = "Count from 1 to 20, separated by commas."


@pytest.fixture
def chat(fast_model: Any) -> ChatLlm4all:
    return ChatLlm4all(model=FAST_MODEL, client=fast_model, temperature=0, max_tokens=60)


# -- chat --------------------------------------------------------------------------------------
def test_the_answer_is_llm4alls_own(chat: ChatLlm4all, fast_model: Any) -> None:
    """Same template, default system prompt and sampling as llm4all.Model: the same answer."""
    answer = chat.invoke("What is the capital of France?")
    assert answer.content == fast_model.generate(
        "What is the capital of France?", temperature=0, max_tokens=60
    )
    asked = [Message("user", "What is the capital of France?")]
    prompt = fast_model.chat_tokens(fast_model.with_system_prompt(asked))
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == len(prompt)
    assert answer.response_metadata["model_provider"] == "llm4all"


def test_stop_strings_end_generation(chat: ChatLlm4all) -> None:
    """The answer stops at the stop string: fewer tokens are generated, not cut afterwards."""
    whole = chat.invoke(COUNT)
    stopped = chat.invoke(COUNT, stop=["5"])
    assert "5" in str(whole.content) and "5" not in str(stopped.content)
    assert str(whole.content).startswith(str(stopped.content))
    assert whole.usage_metadata and stopped.usage_metadata
    assert stopped.usage_metadata["output_tokens"] < whole.usage_metadata["output_tokens"]


def test_stream_is_the_invoke_answer_in_pieces(chat: ChatLlm4all) -> None:
    pieces = [c for c in chat.stream(COUNT)]
    assert len([p for p in pieces if p.content]) > 3
    assert "".join(str(p.content) for p in pieces) == chat.invoke(COUNT).content
    assert pieces[-1].usage_metadata and pieces[-1].usage_metadata["output_tokens"] > 3


def test_batch_on_threads_shares_one_model_safely(chat: ChatLlm4all) -> None:
    """LangChain's batch runs on threads; one model answers one at a time, the same answers."""
    prompts = ["Name a colour.", "Name a fruit.", "Name an animal."]
    alone = [chat.invoke(p).content for p in prompts]
    together = chat.batch(prompts, config={"max_concurrency": 3})
    assert [m.content for m in together] == alone


def test_objects_naming_one_model_share_one_load(fast_model_path: Path) -> None:
    """Constructing is cheap (nothing loads); the first answer loads; later ones reuse it."""
    first = ChatLlm4all(model=str(fast_model_path), temperature=0, max_tokens=4, n_ctx=512)
    second = ChatLlm4all(model=str(fast_model_path), temperature=0, max_tokens=4, n_ctx=512)
    first.invoke("hi")
    loaded = weakref.ref(first._local())
    gc.collect()
    assert loaded() is not None  # ``first`` keeps its model loaded between calls
    second.invoke("hi")
    assert second._local() is loaded()


def test_timeout_cuts_a_local_answer(fast_model: Any) -> None:
    slow = ChatLlm4all(model=FAST_MODEL, client=fast_model, temperature=0, timeout=0)
    with pytest.raises(TimeoutError, match="timeout=0s"):
        slow.invoke(COUNT)


def test_unknown_argument_is_named(chat: ChatLlm4all) -> None:
    with pytest.raises(TypeError, match="'tempreature'"):
        chat.invoke("hi", tempreature=0)
    with pytest.raises(Exception, match="tempreature"):
        ChatLlm4all(tempreature=0)
    with pytest.raises(ValueError, match="temperature"):
        ChatLlm4all(temperature=9)  # out of range: when made, not at the first answer
    with pytest.raises(ValueError, match="temp"):
        GPT4All(model="x.gguf", temp=-1)


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is sunny in {city}."


def test_a_forced_tool_call_always_parses(chat: ChatLlm4all) -> None:
    """tool_choice forces a grammar-bound call: even SmolLM2-135M makes a valid one."""
    answer = chat.bind_tools([get_weather], tool_choice="any").invoke("Weather in Paris?")
    assert isinstance(answer, AIMessage)
    [call] = answer.tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) == {"city"}
    assert answer.response_metadata["finish_reason"] == "tool_calls"
    # ... and back into the conversation it goes, as the chat template writes calls.
    result = get_weather.invoke(call)
    chat.bind_tools([get_weather]).invoke([HumanMessage("Weather in Paris?"), answer, result])


class Person(BaseModel):
    name: str
    age: int


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_always_parses(chat: ChatLlm4all, method: str) -> None:
    person = chat.with_structured_output(Person, method=method).invoke(  # type: ignore[arg-type]
        "Ada Lovelace was 36."
    )
    assert isinstance(person, Person)
    raw = chat.with_structured_output(Person, include_raw=True).invoke("Ada Lovelace was 36.")
    assert isinstance(raw["parsed"], Person) and raw["parsing_error"] is None


def test_fenced_calls_are_calls() -> None:
    """Qwen2.5-0.5B fences its calls in Markdown; the shared parser and the server's stream read them."""
    text = '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
    [call] = parse(text, forced=False, known={"get_weather"}).calls
    assert call["function"]["arguments"] == '{"city": "Paris"}'
    assert parse(text, forced=False, known={"other"}).calls == []
    splitter = ContentSplitter(forced=False)
    assert "".join(splitter.feed(t) for t in ["``", "`json\n", text[8:]]) == ""
    assert splitter.held == text
    plain = ContentSplitter(forced=False)
    # A short inline fence is held until its first line shows what it is, never lost.
    shown = plain.feed("Use ```print```") + plain.feed(" to show it, then more words.")
    assert shown.startswith("Use ```print")
    assert shown + plain.flush() == "Use ```print``` to show it, then more words."
    short = ContentSplitter(forced=False)
    assert short.feed("Use ```print```") + short.flush() == "Use ```print```"


# -- completion model and compat ------------------------------------------------------------
def test_llm_streams_and_stops(fast_model: Any) -> None:
    llm = Llm4allLLM(model=FAST_MODEL, client=fast_model, temperature=0, max_tokens=60)
    pieces = list(llm.stream(COUNT))
    assert len(pieces) > 3 and "".join(pieces) == llm.invoke(COUNT)
    assert "5" not in llm.invoke(COUNT, stop=["5"])


def test_a_gpt4all_script_runs_after_one_import_change(fast_model_path: Path) -> None:
    """langchain_community's GPT4All fields, as old scripts pass them."""
    llm = GPT4All(
        model=str(fast_model_path),
        n_threads=2,
        max_tokens=24,
        temp=0.0,
        top_p=0.1,
        top_k=40,
        repeat_penalty=1.18,
        streaming=True,
        allow_download=False,
        device="cpu",
        backend="llama",
        n_batch=8,
    )
    assert llm.temperature == 0.0 and llm.raw and llm.n_gpu_layers is None
    text = llm.invoke("The capital of France is")
    assert text and len(list(llm.stream("The capital of France is"))) > 1
    assert GPT4All(model="x.gguf", device="gpu").n_gpu_layers == -1


def test_gpt4all_embeddings_honour_model_name(embedding_model_path: Path) -> None:
    """The old class ignored model_name; here it is the model loaded (a wrong one fails)."""
    embeddings = GPT4AllEmbeddings(model_name=str(embedding_model_path))
    assert len(embeddings.embed_query("hello")) == 384
    with pytest.raises(Exception, match="no-such-embedder"):
        GPT4AllEmbeddings(model_name="no-such-embedder", allow_download=False).embed_query("x")


def test_embeddings_add_the_models_task_prefixes(embedder: Any) -> None:
    """nomic-style prefixes: a query and a document of the same text get different vectors."""
    prefixed = type(embedder).from_engine(
        embedder.engine, "prefixed", {"document": "search_document", "query": "search_query"}
    )
    embeddings = Llm4allEmbeddings(client=prefixed)
    [as_document] = embeddings.embed_documents(["a cat on a mat"])
    as_query = embeddings.embed_query("a cat on a mat")
    assert as_document != pytest.approx(as_query, abs=1e-3)
    alone = prefixed.embed(["search_query: a cat on a mat"], task=None)[0]
    assert as_query == pytest.approx(alone, abs=1e-5)


# -- retriever -----------------------------------------------------------------------------
def test_retriever_documents_say_where_they_came_from(notes: Path, embedder: Any) -> None:
    from llm4all.localdocs import LocalDocs

    with LocalDocs(notes.parent / "ld.db", embedder_factory=lambda _: embedder) as docs:
        docs.add("notes", [notes])
        docs.index("notes")
        found = LocalDocsRetriever(collections=["notes"], localdocs=docs, k=2).invoke(
            "Where is the Zorblax conference?"
        )
    top = found[0]
    assert FACT in top.page_content
    assert top.metadata["source"].endswith("events.md")
    assert top.metadata["collection"] == "notes" and top.metadata["score"] > 0
    assert top.metadata["line_start"] is not None and top.metadata["location"].startswith("line")


# -- against a server ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(fast_model_path: Path) -> Iterator[Any]:
    from server_helpers import fast_settings, running

    with running(fast_settings(fast_model_path.parent, api_key="sk-lc", ctx=2048)) as live:
        yield live


@pytest.mark.slow
def test_remote_mode_answers_as_the_local_one(server: Any, chat: ChatLlm4all) -> None:
    remote = ChatLlm4all(
        base_url=server.base_url, api_key="sk-lc", model=FAST_MODEL, temperature=0, max_tokens=60
    )
    answer = remote.invoke(COUNT, stop=["5"])
    assert answer.content == chat.invoke(COUNT, stop=["5"]).content
    assert answer.usage_metadata and answer.usage_metadata["output_tokens"] > 0
    assert "".join(str(c.content) for c in remote.stream(COUNT)) == chat.invoke(COUNT).content
    [call] = (
        remote.bind_tools([get_weather], tool_choice="any").invoke("Weather in Rome?").tool_calls
    )
    assert call["name"] == "get_weather"
    person = remote.with_structured_output(Person).invoke("Ada Lovelace was 36.")
    assert isinstance(person, Person)
    llm = Llm4allLLM(base_url=server.base_url, api_key="sk-lc", model=FAST_MODEL, max_tokens=8)
    assert llm.invoke("Once upon a time")
    default = ChatLlm4all(base_url=server.base_url, api_key="sk-lc", max_tokens=4).invoke("hi")
    assert default.response_metadata["model_name"] == FAST_MODEL  # no model: the server's own
    with pytest.raises(Exception, match=r"401|[Aa]uth"):
        ChatLlm4all(base_url=server.base_url, api_key="wrong", max_retries=0).invoke("hi")


# -- docs/langchain.md runs as written ------------------------------------------------------------
DOC = Path(__file__).parent.parent / "docs" / "langchain.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


@pytest.mark.slow
@pytest.mark.default_model
def test_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks()
    assert len(blocks) >= 3
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "Biscuit" in printed  # the RAG chain found the cat's name in the notes
    assert namespace["calls"] and namespace["calls"][0]["name"] == "get_weather"


@pytest.mark.slow
def test_remote_embeddings_are_the_local_ones(server: Any, embedder: Any) -> None:
    remote = Llm4allEmbeddings(base_url=server.base_url, api_key="sk-lc", model="all-minilm-l6-v2")
    local = Llm4allEmbeddings(client=embedder)
    texts = ["The cat sat on the mat.", "Dogs bark."]
    for far, near in zip(remote.embed_documents(texts), local.embed_documents(texts), strict=True):
        assert far == pytest.approx(near, abs=1e-4)
