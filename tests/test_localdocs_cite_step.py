"""The citation step: an answer from documents that cites nothing gets the excerpt the model picks.

With SmolLM2 (fast) on a tiny real collection: an answer that ends without a
``[n]`` is continued under a grammar that allows only the excerpts' numbers, so
it ends with a marker of one of them; an answer that already cites, one from a
wording without the step, an answer without documents and an engine without
grammars are left as they are.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm4all import answer
from llm4all.api import Model
from llm4all.chat.template import Message
from llm4all.embeddings import Embedder
from llm4all.engine import Chunk
from llm4all.localdocs import LocalDocs, context
from llm4all.localdocs.context import CITE_TOKENS, PROMPTS, citation_grammar, has_citation

QUESTION = "What is the office cat called?"
#: The answer ends at its first full stop: a finished answer ("stop"), short and quick.
ONE_SENTENCE: dict[str, Any] = {"temperature": 0.0, "max_tokens": 64, "stop": ["."]}
_ENDS_WITH_MARKER = re.compile(r" \[(\d+)\]$")


@pytest.fixture
def docs(
    tmp_path: Path, notes: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalDocs]:
    with LocalDocs(tmp_path / "ld.db", embedder_factory=lambda _: embedder) as d:
        d.add("notes", [notes])
        d.index("notes")
        monkeypatch.setattr(context, "shared_localdocs", lambda path=None: d)
        yield d


def test_citation_grammar_allows_only_the_excerpts_numbers() -> None:
    assert citation_grammar(3) == 'root ::= " [" ("1" | "2" | "3") "]"'
    assert has_citation("It is Biscuit [1].") and not has_citation("It is Biscuit [a].")


def test_an_answer_that_cites_nothing_ends_with_an_excerpts_marker(
    fast_model: Model, docs: LocalDocs
) -> None:
    plain = fast_model.stream(QUESTION, collections=["notes"], **ONE_SENTENCE)
    pieces = list(plain)
    text = "".join(pieces)
    assert plain.completion is not None and plain.completion.finish_reason == "stop"
    found = _ENDS_WITH_MARKER.search(text)
    assert found is not None, text
    number = int(found.group(1))
    assert number in {r["index"] for r in plain.sources}
    assert not has_citation(text[: found.start()])  # the model wrote none itself
    assert pieces[-1] == found.group(0)  # streamed as a piece of the answer
    # checked like any citation the model writes
    assert [c["index"] for c in plain.citations if c["by"] == "model"] == [number]
    assert "citations" in plain.sources[number - 1]
    # bounded: the step adds at most CITE_TOKENS tokens
    without = _answer(fast_model, "shipped-no-step", docs)
    assert text == without + found.group(0)
    assert plain.completion.usage.completion_tokens <= _tokens(fast_model, without) + CITE_TOKENS


def _answer(model: Model, wording: str, docs: LocalDocs) -> str:
    kept = context.PROMPT
    context.PROMPT = PROMPTS[wording]
    try:
        return model.stream(QUESTION, collections=["notes"], **ONE_SENTENCE).text()
    finally:
        context.PROMPT = kept


def _tokens(model: Model, text: str) -> int:
    return len(model.engine.tokenize(text, add_special=False, parse_special=False))


def test_a_chat_session_keeps_the_marker_in_its_history(fast_model: Model, docs: LocalDocs) -> None:
    session = fast_model.chat(collections=["notes"])
    text = session.send(QUESTION, **ONE_SENTENCE).text()
    assert _ENDS_WITH_MARKER.search(text) and session.messages[-1].content == text


def _prepared(model: Model, docs: LocalDocs) -> answer.Prepared:
    return answer.prepare(
        model,
        [Message("user", QUESTION)],
        params=model.params.replace(temperature=0.0),
        collections=["notes"],
        localdocs=docs,
    )


def test_an_answer_that_already_cites_is_unchanged(fast_model: Model, docs: LocalDocs) -> None:
    prepared = _prepared(fast_model, docs)
    assert prepared.cite
    cited = "The office cat is called Biscuit [1]"
    ids = fast_model.engine.tokenize(cited, add_special=False, parse_special=False)
    assert answer.citation_request(fast_model, prepared, cited, ids, "stop") is None
    # one that ran into the length limit is not finished: no step either
    uncited = "The office cat is called Biscuit"
    ids = fast_model.engine.tokenize(uncited, add_special=False, parse_special=False)
    assert answer.citation_request(fast_model, prepared, uncited, ids, "length") is None
    request = answer.citation_request(fast_model, prepared, uncited, ids, "stop")
    assert request is not None
    tokens, params = request
    assert tokens == [*prepared.token_ids, *ids]  # the same sequence, continued
    assert params.max_tokens == CITE_TOKENS and params.greedy

    # through the stream: an answer the model ends with a marker of its own keeps it as it is
    def stream() -> Iterator[Chunk]:
        yield from fast_model.engine.generate(
            [*prepared.token_ids, *fast_model.engine.tokenize("The office cat", add_special=False)],
            prepared.params.replace(grammar='root ::= " is Biscuit [2]."', max_tokens=12),
        )

    chunks = list(answer.with_citation(fast_model, prepared, stream(), lambda: True))
    assert "".join(c.text for c in chunks) == " is Biscuit [2]."
    assert chunks[-1].finish_reason == "stop"


def test_no_step_without_documents_or_grammars(
    fast_model: Model, docs: LocalDocs, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = answer.prepare(fast_model, [Message("user", QUESTION)], params=fast_model.params)
    assert not bare.cite
    text = fast_model.stream(QUESTION, **ONE_SENTENCE).text()
    assert not has_citation(text)
    monkeypatch.setattr(context, "PROMPT", PROMPTS["shipped-no-step"])  # a wording without it
    assert not _prepared(fast_model, docs).cite
    monkeypatch.setattr(context, "PROMPT", PROMPTS["shipped"])
    caps = dataclasses.replace(fast_model.engine.capabilities, grammar=False)
    monkeypatch.setattr(fast_model.engine, "capabilities", caps)
    prepared = _prepared(fast_model, docs)
    ids = fast_model.engine.tokenize("Biscuit", add_special=False, parse_special=False)
    assert answer.citation_request(fast_model, prepared, "Biscuit", ids, "stop") is None


@pytest.fixture(scope="module")
def server(fast_model_path: Path) -> Iterator[Any]:
    from server_helpers import fast_settings, running

    with running(fast_settings(fast_model_path.parent, ctx=2048)) as live:
        yield live


@pytest.mark.parametrize("stream", [False, True])
def test_the_server_answers_with_the_step(
    server: Any, tmp_path: Path, notes: Path, embedder: Embedder, stream: bool
) -> None:
    """``/v1/chat/completions`` with ``collections``: the same marker, checked in the references."""
    openai = pytest.importorskip("openai")
    from server_helpers import FAST

    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=300)
    with LocalDocs(tmp_path / "ld.db", embedder_factory=lambda _: embedder) as d:
        d.add("notes", [notes])
        d.index("notes")
        server.app.state.localdocs = d
        try:
            asked = {"model": FAST, "messages": [{"role": "user", "content": QUESTION}]}
            body = asked | ONE_SENTENCE | {"extra_body": {"collections": ["notes"]}}
            if stream:
                chunks = list(client.chat.completions.create(**body, stream=True))
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                references = (chunks[-1].model_extra or {})["references"]
            else:
                reply = client.chat.completions.create(**body)
                text = reply.choices[0].message.content or ""
                references = (reply.model_extra or {})["references"]
        finally:
            server.app.state.localdocs = None
    found = _ENDS_WITH_MARKER.search(text)
    assert found is not None, text
    number = int(found.group(1))
    cited = references[number - 1]["citations"]
    assert [c["by"] for c in cited] == ["model"]  # checked like a marker the model wrote


def test_the_web_chat_answers_with_the_step(
    server: Any, tmp_path: Path, notes: Path, embedder: Embedder
) -> None:
    """The web UI's answer (its own async rounds on the runner): streamed and stored with it."""
    import httpx

    from llm4all.store import ChatStore

    server.app.state.chat_store = ChatStore(tmp_path / "chats.db")
    params = {"temperature": 0, "max_tokens": 64, "stop": ["."]}
    with LocalDocs(tmp_path / "ld.db", embedder_factory=lambda _: embedder) as d:
        d.add("notes", [notes])
        d.index("notes")
        server.app.state.localdocs = d
        try:
            with httpx.Client(base_url=server.url, timeout=180) as http:
                chat = http.post("/api/chats", json={"collections": ["notes"], "params": params})
                path = f"/api/chats/{chat.json()['id']}/messages"
                with http.stream("POST", path, json={"content": QUESTION}) as response:
                    assert response.status_code == 200, response.read()
                    got = [json.loads(line[6:]) for line in response.iter_lines()
                           if line.startswith("data: ")]  # fmt: skip
        finally:
            server.app.state.localdocs = None
    done = got[-1]["message"]
    streamed = "".join(e["text"] for e in got if e["type"] == "delta")
    assert _ENDS_WITH_MARKER.search(done["content"]), done["content"]
    assert streamed == done["content"]
