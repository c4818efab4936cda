"""Answers saved while they stream: the recorder on a real database, and ``ChatSession`` with it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from llm4all.store import ChatStore
from llm4all.store.answers import AnswerRecorder


@pytest.fixture
def store(tmp_path: Path) -> ChatStore:
    return ChatStore(tmp_path / "llm4all.db")


def assistant(store: ChatStore, chat_id: str) -> list[str]:
    return [m.content for m in store.messages(chat_id) if m.role == "assistant"]


def test_answer_is_created_at_its_first_text_and_saved_as_it_grows(store: ChatStore) -> None:
    chat = store.create_chat()
    rec = AnswerRecorder(store, chat.id, model="tiny", prompt_tokens=7, every=0.0)
    rec.add("", 1)  # a token whose text is held back: nothing to keep yet
    assert assistant(store, chat.id) == []
    rec.add("Par", 1)
    assert assistant(store, chat.id) == ["Par"]
    rec.add("is.", 1)
    assert assistant(store, chat.id) == ["Paris."]
    saved = rec.finish("stop", completion_tokens=3, tokens_per_second=12.5)
    assert saved is not None and saved.content == "Paris." and saved.finish_reason == "stop"
    assert (saved.prompt_tokens, saved.completion_tokens, saved.tokens_per_second) == (7, 3, 12.5)
    assert len(store.messages(chat.id)) == 1  # one message, updated in place


def test_a_snapshot_commits_without_waiting_for_the_disk(store: ChatStore) -> None:
    chat = store.create_chat()
    message = store.add_message(chat.id, "assistant", "Pa")
    store.update_message(message.id, content="Paris", durable=False)
    with sqlite3.connect(store.path) as other:  # committed: another connection sees it
        row = other.execute("SELECT content FROM messages WHERE id = ?", (message.id,)).fetchone()
    assert row == ("Paris",)
    done = store.update_message(message.id, content="Paris.", finish_reason="stop")
    assert done.content == "Paris." and done.finish_reason == "stop"


def test_saves_are_spaced_and_the_end_saves_everything(store: ChatStore) -> None:
    chat = store.create_chat()
    rec = AnswerRecorder(store, chat.id, every=3600)
    for piece in ("One", " two", " three"):
        rec.add(piece, 1)
    assert assistant(store, chat.id) == ["One"]  # the first text at once, then not for an hour
    rec.finish("length")
    assert assistant(store, chat.id) == ["One two three"]


def test_an_answer_stopped_before_its_first_word_is_not_stored(store: ChatStore) -> None:
    chat = store.create_chat()
    rec = AnswerRecorder(store, chat.id)
    assert rec.finish("cancelled", completion_tokens=0, tokens_per_second=0.0) is None
    assert store.messages(chat.id) == []


def test_an_empty_answer_the_model_ended_is_kept(store: ChatStore) -> None:
    chat = store.create_chat()
    saved = AnswerRecorder(store, chat.id).finish("stop")
    assert saved is not None and saved.content == "" and saved.finish_reason == "stop"


def test_a_stopped_answer_gets_its_measured_rate_or_none_never_zero(store: ChatStore) -> None:
    chat = store.create_chat()
    rec = AnswerRecorder(store, chat.id, prompt_tokens=5)
    rec.add("A", 1)
    one = rec.finish("cancelled", tokens_per_second=0.0)  # what a stopped engine reports
    assert one is not None and one.tokens_per_second is None  # one token: no rate
    assert one.completion_tokens == 1 and one.prompt_tokens == 5
    rec = AnswerRecorder(store, chat.id)
    for piece in ("A", " few", " words"):
        rec.add(piece, 1)
    three = rec.finish("cancelled", tokens_per_second=0.0)
    assert three is not None and three.tokens_per_second is not None
    assert three.tokens_per_second > 0 and three.time_to_first_token is not None


# -- ChatSession with a store (SmolLM2) ---------------------------------------------------


def test_chat_session_saves_the_answer_while_it_streams(
    fast_model: object, store: ChatStore
) -> None:
    import llm4all

    assert isinstance(fast_model, llm4all.Model)
    chat = llm4all.ChatSession(fast_model, store=store)
    # closing(): a failed test must not leave the stream (and the engine's lock) open
    with closing(iter(chat.send("Count from one to twenty.", max_tokens=40))) as pieces:
        first = next(pieces)
        assert chat.chat_id is not None
        assert assistant(store, chat.chat_id) == [first]  # on disk before the answer ends
        rest = "".join(pieces)
    [saved] = [m for m in store.messages(chat.chat_id) if m.role == "assistant"]
    assert saved.content == first + rest and saved.finish_reason in ("stop", "length")
    assert saved.tokens_per_second and saved.tokens_per_second > 0


def test_chat_session_cancelled_before_the_first_token_stores_no_answer(
    fast_model: object, store: ChatStore
) -> None:
    import llm4all

    assert isinstance(fast_model, llm4all.Model)
    chat = llm4all.ChatSession(fast_model, store=store)
    response = chat.send("Hello!", max_tokens=20)
    response.cancel()
    assert response.text() == ""
    assert chat.chat_id is not None
    assert [m.role for m in store.messages(chat.chat_id)] == ["user"]
    assert [m.role for m in chat.messages] == ["user"]


def test_chat_session_abandoned_answer_keeps_its_text_and_real_rate(
    fast_model: object, store: ChatStore
) -> None:
    import llm4all

    assert isinstance(fast_model, llm4all.Model)
    chat = llm4all.ChatSession(fast_model, store=store)
    with closing(iter(chat.send("Write a long story about a cat.", max_tokens=200))) as stream:
        said = "".join(next(stream) for _ in range(8))
    # closed mid-answer, as a KeyboardInterrupt in the loop leaves it
    assert chat.chat_id is not None
    [saved] = [m for m in store.messages(chat.chat_id) if m.role == "assistant"]
    assert saved.content == said and saved.finish_reason == "cancelled"
    assert saved.tokens_per_second is not None and saved.tokens_per_second > 0


def test_the_finished_answer_keeps_sources_changed_while_it_ran(store: ChatStore) -> None:
    """Citations are checked into the references when the answer ends: the store keeps that."""
    chat = store.create_chat()
    sources = [{"index": 1, "file": "a.md"}]
    rec = AnswerRecorder(store, chat.id, model="m", sources=sources, every=0.0)
    rec.add("It is in a.md [1].", 5)
    sources[0]["citations"] = [{"sentence": "It is in a.md [1].", "supported": True}]
    rec.finish("stop")
    saved = store.messages(chat.id)[-1].sources
    assert saved and saved[0]["citations"][0]["supported"] is True


def test_an_answer_saved_first_when_it_finishes_keeps_its_sources(store: ChatStore) -> None:
    chat = store.create_chat()
    sources = [{"index": 1, "file": "a.md"}]
    rec = AnswerRecorder(store, chat.id, model="m", sources=sources)
    rec.pieces.append("Short.")  # text that no add() saved yet
    assert rec.finish("stop") is not None
    assert store.messages(chat.id)[-1].sources == sources
