"""Chat with documents: the prompt gets numbered excerpts, answers carry their sources.

The SmolLM2 test model checks the plumbing (what the prompt contains, which
references come back and get stored), not its prose; the default model checks
once that an answer really uses a fact only a document holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import FACT
from llm4all.api import ChatSession, Model
from llm4all.chat.template import Message
from llm4all.embeddings import Embedder
from llm4all.localdocs import LocalDocs, documents_turn, with_excerpts
from llm4all.localdocs.context import (
    INSTRUCTION,
    PROMPT,
    DocumentsPrompt,
    attribute,
    search_text,
)
from llm4all.store import ChatStore


@pytest.fixture
def docs(tmp_path: Path, notes: Path, embedder: Embedder) -> Iterator[LocalDocs]:
    with LocalDocs(tmp_path / "ld.db", embedder_factory=lambda _: embedder) as d:
        d.add("notes", [notes])
        d.index("notes")
        yield d


def _capture_prompts(model: Model, monkeypatch: pytest.MonkeyPatch) -> list[list[Message]]:
    seen: list[list[Message]] = []
    original = model.chat_tokens

    def spy(messages: Any, template: str | None = None, **kw: Any) -> list[int]:
        seen.append(list(messages))
        return original(messages, template, **kw)

    monkeypatch.setattr(model, "chat_tokens", spy)
    return seen


def test_chat_session_puts_numbered_excerpts_in_the_turn(
    fast_model: Model, docs: LocalDocs, notes: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prompts = _capture_prompts(fast_model, monkeypatch)
    store = ChatStore(tmp_path / "chats.db")
    session = ChatSession(fast_model, collections=["notes"], localdocs=docs, store=store)
    response = session.send("Where is the Zorblax conference?", max_tokens=8)
    response.text()
    turn = prompts[-1][-1].content
    assert turn.startswith(
        INSTRUCTION + f"\n\n[1] {FACT}\n(from events.md, line 7 — Events › Travel)"
    )
    assert "\n\n[2] " in turn
    assert turn.endswith("Question: Where is the Zorblax conference?")
    refs = response.sources
    assert refs[0]["index"] == 1 and refs[0]["path"] == str(notes / "events.md")
    assert (refs[0]["line_start"], refs[0]["heading"], refs[0]["excerpt"]) == (
        7,
        "Events › Travel",
        FACT,
    )
    # The history keeps the plain question; the stored answer keeps the references.
    assert session.messages[0].content == "Where is the Zorblax conference?"
    stored = store.messages(session.chat_id or "")
    unchecked = [{k: v for k, v in r.items() if k != "citations"} for r in refs]
    assert stored[0].sources is None
    assert [{k: v for k, v in r.items() if k != "citations"} for r in stored[1].sources or []] == (
        unchecked
    )
    # The answer's citations were checked once it finished: on the response and each reference.
    assert response.citations == attribute(response.text(), refs)
    assert all(r["citations"] == [
        {k: v for k, v in c.items() if k != "index"}
        for c in response.citations if c["index"] == r["index"]
    ] for r in refs)  # fmt: skip
    # The next turn searches again, for its own question.
    second = session.send("What is the cat called?", max_tokens=4)
    second.text()
    assert second.sources[0]["file"] == "pets.txt"
    assert [m.content for m in prompts[-1][-3:-1]] == [
        "Where is the Zorblax conference?",
        response.text(),
    ]


def test_model_stream_with_collections(
    fast_model: Model, docs: LocalDocs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("llm4all.localdocs.context.shared_localdocs", lambda path=None: docs)
    prompts = _capture_prompts(fast_model, monkeypatch)
    response = fast_model.stream("office cat name?", collections=["notes"], max_tokens=4)
    response.text()
    assert response.sources[0]["file"] == "pets.txt"
    assert prompts[-1][-1].content.startswith(
        INSTRUCTION + "\n\n[1] The office cat is called Biscuit.\n(from pets.txt, line 1)"
    )
    plain = fast_model.stream("office cat name?", max_tokens=4)
    assert plain.sources == [] and plain.citations == []


def test_with_excerpts_without_excerpts_is_the_question() -> None:
    assert with_excerpts("hi", "") == "hi"


def test_a_documents_prompt_can_remind_after_the_question() -> None:
    wording = DocumentsPrompt("Use the excerpts.", 3, "End with the [n] you used.")
    assert with_excerpts("Why?", "[1] x", wording) == (
        "Use the excerpts.\n\n[1] x\n\nQuestion: Why?\nEnd with the [n] you used."
    )
    assert with_excerpts("Why?", "[1] x") == f"{PROMPT.instruction}\n\n[1] x\n\nQuestion: Why?" + (
        f"\n{PROMPT.reminder}" if PROMPT.reminder else ""
    )


def test_cli_docs_and_run_with_docs(
    notes: Path, fast_model_path: Path, embedding_model_path: Path
) -> None:
    from llm4all.cli import cli

    runner = CliRunner()
    added = runner.invoke(cli, ["docs", "add", "notes", str(notes)])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(cli, ["docs", "ls", "--json"])
    info = json.loads(listed.output)[0]
    assert (info["name"], info["files"], info["embedded"]) == ("notes", 2, info["chunks"])
    found = runner.invoke(cli, ["docs", "search", "notes", "Zorblax conference", "--json"])
    assert json.loads(found.output)[0]["excerpt"] == FACT
    text = runner.invoke(cli, ["docs", "search", "notes", "Zorblax conference"])
    assert text.output.startswith(f"[1] {notes / 'events.md'}, line 7 — Events › Travel\n")
    run = runner.invoke(
        cli,
        [
            "run",
            "--docs",
            "notes",
            "-m",
            str(fast_model_path),
            "--temp",
            "0",
            "-n",
            "8",
            "--json",
            "Zorblax?",
        ],
    )
    assert run.exit_code == 0, run.output
    assert json.loads(run.output)["sources"][0]["file"] == "events.md"
    streamed = runner.invoke(
        cli,
        [
            "run",
            "--docs",
            "notes",
            "-m",
            str(fast_model_path),
            "--temp",
            "0",
            "-n",
            "4",
            "Zorblax?",
        ],
    )
    assert f"[1] {notes / 'events.md'}, line 7 — Events › Travel" in streamed.output  # stderr too
    chatted = runner.invoke(
        cli,
        ["chat", "--docs", "notes", "-m", str(fast_model_path), "--temp", "0", "-n", "4",
         "--no-save", "--plain"],
        input="Zorblax?\n",
    )  # fmt: skip
    assert chatted.exit_code == 0, chatted.output
    assert f"Sources:\n  [1] {notes / 'events.md'}, line 7 — Events › Travel" in chatted.output
    missing = runner.invoke(cli, ["run", "--docs", "nope", "hi"])
    assert missing.exit_code != 0 and "no collection named nope" in missing.output
    assert runner.invoke(cli, ["docs", "rm", "notes"]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["docs", "ls", "--json"]).output) == []


@pytest.mark.slow
@pytest.mark.default_model
def test_the_default_model_answers_from_the_document(default_model: Model, docs: LocalDocs) -> None:
    session = ChatSession(default_model, collections=["notes"], localdocs=docs)
    response = session.send("In which city will the Zorblax conference be held?", max_tokens=40)
    assert "Tallinn" in response.text()
    assert response.sources[0]["excerpt"] == FACT


# -- a conversation: follow-up questions are searched with the earlier turns ----------------------
VENV = "Activate the environment with source .venv/bin/activate before installing packages."
VPN = "Activate the connection from the tray icon, then sign in with your badge number."


@pytest.fixture
def how_to(tmp_path: Path, embedder: Embedder) -> Iterator[LocalDocs]:
    """Two pages that both say how to activate something, and one about something else."""
    folder = tmp_path / "how-to"
    folder.mkdir()
    (folder / "venv.md").write_text(f"# Python virtual environments\n\n{VENV}\n")
    (folder / "vpn.md").write_text(f"# The office VPN\n\n{VPN}\n")
    (folder / "pets.txt").write_text("The office cat is called Biscuit.\n")
    with LocalDocs(tmp_path / "how-to.db", embedder_factory=lambda _: embedder) as d:
        d.add("how-to", [folder])
        d.index("how-to")
        yield d


FOLLOW_UP = "How do I activate it?"
TOPICS = {
    "venv.md": "What is a Python virtual environment for?",
    "vpn.md": "What is the office VPN?",
}


def test_search_text_keeps_the_last_user_turns() -> None:
    assert search_text("how do I activate it?", ["a", " ", "what is a venv?"]) == (
        "a\nwhat is a venv?\nhow do I activate it?"
    )
    assert search_text("q", ["a", "b", "c"], turns=1) == "c\nq"
    assert search_text(" q ", []) == "q" and search_text("q", ["a"], turns=0) == "q"


def test_a_follow_up_is_searched_with_the_conversation(how_to: LocalDocs) -> None:
    for expected, topic in TOPICS.items():
        turn, refs = documents_turn(FOLLOW_UP, ["how-to"], [topic], localdocs=how_to)
        assert refs[0]["file"] == expected, (topic, [r["file"] for r in refs])
        assert turn.endswith(FOLLOW_UP) and topic not in turn  # the model sees its question only
    # A question that changes the subject still finds its own page.
    _, refs = documents_turn(
        "What is the cat called?", ["how-to"], [TOPICS["vpn.md"]], localdocs=how_to
    )
    assert refs[0]["file"] == "pets.txt"


def test_a_chat_session_searches_follow_ups_with_the_earlier_turns(
    fast_model: Model, how_to: LocalDocs
) -> None:
    for expected, topic in TOPICS.items():
        session = ChatSession(fast_model, collections=["how-to"], localdocs=how_to)
        session.send(topic, max_tokens=4).text()
        follow_up = session.send(FOLLOW_UP, max_tokens=4)
        follow_up.text()
        assert follow_up.sources[0]["file"] == expected


def test_answers_from_documents_have_a_default_length(
    fast_model: Model, docs: LocalDocs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("llm4all.localdocs.context.ANSWER_TOKENS", 3)
    session = ChatSession(fast_model, collections=["notes"], localdocs=docs)
    bounded = session.send("Tell me everything about the Zorblax conference.", temperature=0)
    bounded.text()
    assert bounded.completion is not None and bounded.completion.finish_reason == "length"
    assert bounded.completion.usage.completion_tokens == 3
    longer = session.send("And about the cat?", temperature=0, max_tokens=6)
    longer.text()
    assert longer.completion is not None  # the caller's own limit wins
    assert longer.completion.usage.completion_tokens > 3


@pytest.mark.slow
def test_the_server_searches_follow_ups_with_the_conversation(
    fast_model_path: Path, how_to: LocalDocs
) -> None:
    """Both HTTP paths: /v1/chat/completions with collections, and the web chat's stored chats."""
    import httpx
    import openai

    from server_helpers import fast_settings, running

    with running(fast_settings(fast_model_path.parent, ctx=2048)) as live:
        live.app.state.localdocs = how_to
        client = openai.OpenAI(base_url=live.base_url, api_key="none", max_retries=0)
        http = httpx.Client(base_url=live.url, timeout=120)
        try:
            for expected, topic in TOPICS.items():
                messages = [
                    {"role": "user", "content": topic},
                    {"role": "assistant", "content": "It is described in your notes."},
                    {"role": "user", "content": FOLLOW_UP},
                ]
                answer = client.chat.completions.create(
                    model=live.settings.model or "",
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=2,
                    temperature=0,
                    extra_body={"collections": ["how-to"]},
                )
                assert (answer.model_extra or {})["references"][0]["file"] == expected
                chat = http.post(
                    "/api/chats", json={"collections": ["how-to"], "params": {"max_tokens": 2}}
                ).json()
                for text in (topic, FOLLOW_UP):
                    with http.stream(
                        "POST", f"/api/chats/{chat['id']}/messages", json={"content": text}
                    ) as response:
                        response.read()
                stored = http.get(f"/api/chats/{chat['id']}").json()["messages"]
                assert stored[-1]["sources"][0]["file"] == expected
        finally:
            http.close()
            live.app.state.localdocs = None
