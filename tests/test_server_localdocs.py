"""LocalDocs on the OpenAI-compatible server: ``collections`` in, ``references`` out.

A real collection (a temp folder, MiniLM embeddings) is put on the server's
``app.state.localdocs``; the real ``openai`` client sends the extension field
with ``extra_body`` and reads the references from ``model_extra``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import FACT
from llm4all.api import Model
from llm4all.chat.template import Message
from llm4all.embeddings import Embedder
from llm4all.localdocs import LocalDocs
from llm4all.localdocs.context import INSTRUCTION
from server_helpers import DEFAULT, FAST, LiveServer, fast_settings, running

openai = pytest.importorskip("openai")

QUESTION = "Where is the Zorblax conference held?"


@pytest.fixture(scope="module")
def server(fast_model_path: Path) -> Iterator[LiveServer]:
    with running(fast_settings(fast_model_path.parent, ctx=2048)) as live:
        yield live


@pytest.fixture
def docs(server: LiveServer, tmp_path: Path, notes: Path, embedder: Embedder) -> Iterator[None]:
    """The ``notes`` collection, as the server's LocalDocs for this test."""
    with LocalDocs(tmp_path / "ld.db", embedder_factory=lambda _: embedder) as d:
        d.add("notes", [notes])
        d.index("notes")
        server.app.state.localdocs = d
        try:
            yield
        finally:
            server.app.state.localdocs = None


@pytest.fixture
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=300)


def _prompts(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> list[list[Message]]:
    """The messages each chat request renders, as the server's loaded model sees them."""
    model: Model = next(m.model for m in server.app.state.manager.loaded() if m.kind == "chat")
    seen: list[list[Message]] = []
    render = model.chat_tokens

    def spy(messages: Any, template: str | None = None, **kw: Any) -> list[int]:
        seen.append(list(messages))
        return render(messages, template, **kw)

    monkeypatch.setattr(model, "chat_tokens", spy)
    return seen


def _ask(**extra: Any) -> dict[str, Any]:
    return {
        "model": FAST,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": QUESTION},
        ],
        "temperature": 0,
        "max_tokens": 4,
        **extra,
    }


@pytest.mark.usefixtures("docs")
def test_collections_put_excerpts_in_the_turn_and_return_references(
    server: LiveServer, client: openai.OpenAI, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = _prompts(server, monkeypatch)
    answer = client.chat.completions.create(**_ask(), extra_body={"collections": ["notes"]})
    turn = prompts[-1][-1]
    assert turn.role == "user" and turn.content.startswith(f"{INSTRUCTION}\n\n[1] {FACT}\n")
    assert turn.content.endswith(f"Question: {QUESTION}")
    assert prompts[-1][0] == Message("system", "Answer briefly.")
    references = (answer.model_extra or {})["references"]
    first = references[0]
    assert (first["index"], first["path"], first["file"]) == (
        1,
        str(notes / "events.md"),
        "events.md",
    )
    assert (first["line_start"], first["location"], first["heading"]) == (
        7,
        "line 7",
        "Events › Travel",
    )
    assert first["excerpt"] == FACT and first["collection"] == "notes"
    # checked against the answer (which sentences each excerpt supports), as everywhere
    assert all(isinstance(r["citations"], list) for r in references)
    plain = client.chat.completions.create(**_ask())
    assert "references" not in (plain.model_extra or {})
    assert prompts[-1][-1].content == QUESTION
    assert plain.usage is not None and answer.usage is not None
    assert answer.usage.prompt_tokens > plain.usage.prompt_tokens + 20


@pytest.mark.usefixtures("docs")
@pytest.mark.parametrize("include_usage", [False, True])
def test_a_stream_carries_the_references_in_its_last_chunk(
    client: openai.OpenAI, include_usage: bool
) -> None:
    stream = client.chat.completions.create(
        **_ask(stream=True, stream_options={"include_usage": include_usage}),
        extra_body={"collections": ["notes"]},
    )
    chunks = list(stream)
    carrying = [i for i, c in enumerate(chunks) if "references" in (c.model_extra or {})]
    assert carrying == [len(chunks) - 1]
    last = chunks[-1]
    assert (last.model_extra or {})["references"][0]["excerpt"] == FACT
    assert isinstance((last.model_extra or {})["references"][0]["citations"], list)
    assert (last.usage is not None) is include_usage
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


@pytest.mark.usefixtures("docs")
def test_an_unknown_collection_is_a_400_that_names_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**_ask(), extra_body={"collections": ["notes", "nope"]})
    assert err.value.status_code == 400
    assert "'nope'" in err.value.message
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "collections"
    assert body["code"] == "collection_not_found"


@pytest.mark.usefixtures("docs")
def test_empty_collections_search_nothing(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(**_ask(), extra_body={"collections": []})
    assert (answer.model_extra or {})["references"] == []


@pytest.mark.slow
@pytest.mark.default_model
@pytest.mark.usefixtures("docs")
def test_the_default_model_answers_from_the_collection(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=DEFAULT,
        messages=[
            {"role": "user", "content": "In which city will the Zorblax conference be held?"}
        ],
        temperature=0,
        max_tokens=40,
        extra_body={"collections": ["notes"]},
    )
    assert "Tallinn" in (answer.choices[0].message.content or "")
    assert (answer.model_extra or {})["references"][0]["excerpt"] == FACT
