"""The chat store against real SQLite files under tmp_path."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest

from llm4all.errors import (
    AmbiguousChatId,
    ChatNotFound,
    InvalidParameter,
    MessageNotFound,
    StoreError,
)
from llm4all.store import ChatStore, db, default_title, export_chat
from llm4all.store import chats as chats_module
from llm4all.store.chats import fts_query


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLM4ALL_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def store(home: Path) -> Iterator[ChatStore]:
    with ChatStore() as chat_store:
        yield chat_store


def fixed_chat_ids(monkeypatch: pytest.MonkeyPatch, *ids: str) -> None:
    """Make the next chats get these ids."""
    monkeypatch.setattr(chats_module, "new_chat_id", iter(ids).__next__)


# -- opening and migrations ---------------------------------------------------


def test_opens_the_home_database_in_wal_mode(store: ChatStore, home: Path) -> None:
    assert store.path == home / "llm4all.db"
    raw = sqlite3.connect(store.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == db.schema_version()
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    assert {"chats", "messages", "settings", "messages_fts"} <= tables
    raw.close()


def test_migrates_an_empty_file_and_reopens_idempotently(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with ChatStore(path) as first:
        chat = first.create_chat(title="kept")
    with ChatStore(path) as again:
        assert again.get_chat(chat.id).title == "kept"
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == db.schema_version()
    raw.close()


def test_applies_only_the_missing_migrations_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chats.db"
    ChatStore(path).close()
    applied: list[int] = []
    number = len(db.MIGRATIONS) + 1

    def m_tags(conn: sqlite3.Connection) -> None:
        applied.append(number)
        conn.execute("CREATE TABLE tags (name TEXT)")

    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, m_tags])
    ChatStore(path).close()
    ChatStore(path).close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == number
    assert raw.execute("SELECT COUNT(*) FROM tags").fetchone()[0] == 0
    raw.close()
    assert applied == [number]


def test_a_failed_migration_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chats.db"

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x)")
        conn.execute("THIS IS NOT SQL")

    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, broken])
    with pytest.raises(StoreError):
        ChatStore(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 0
    assert raw.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    raw.close()


def test_refuses_a_database_from_a_newer_llm4all(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {db.schema_version() + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer than this llm4all supports") as caught:
        ChatStore(path)
    assert "\n" not in str(caught.value)


def test_a_file_that_is_not_sqlite_is_a_one_line_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(StoreError, match="not a valid SQLite database") as caught:
        ChatStore(path)
    assert "\n" not in str(caught.value)
    assert caught.value.path == str(path)


def test_a_folder_in_the_way_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot open"):
        ChatStore(tmp_path / "dir.db")


# -- chats --------------------------------------------------------------------


def test_create_and_get_a_chat(store: ChatStore) -> None:
    chat = store.create_chat(
        title="Trip", model="m.gguf", system_prompt="Be brief.", params={"temperature": 0.2}
    )
    assert len(chat.id) == 12 and int(chat.id, 16) >= 0
    assert (chat.title, chat.model, chat.system_prompt) == ("Trip", "m.gguf", "Be brief.")
    assert chat.params == {"temperature": 0.2}
    assert chat.created_at.tzinfo == UTC and chat.created_at == chat.updated_at
    assert chat.message_count == 0
    assert store.get_chat(chat.id) == chat


def test_the_first_user_message_titles_an_untitled_chat(store: ChatStore) -> None:
    chat = store.create_chat()
    assert chat.title is None
    store.add_message(chat.id, "system", "You are helpful.")
    store.add_message(chat.id, "user", "What is   the capital\nof France?")
    store.add_message(chat.id, "user", "And of Spain?")
    assert store.get_chat(chat.id).title == "What is the capital of France?"
    titled = store.create_chat(title="Mine")
    store.add_message(titled.id, "user", "hello")
    assert store.get_chat(titled.id).title == "Mine"


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("  hi\n there ", "hi there"),
        ("", None),
        ("\n \t", None),
        ("word " * 30, ("word " * 12).strip() + "…"),
        ("x" * 100, "x" * 60 + "…"),
    ],
)
def test_default_title(text: str, title: str | None) -> None:
    assert default_title(text) == title


def test_updates_of_a_chat_bump_updated_at(store: ChatStore) -> None:
    chat = store.create_chat()
    renamed = store.rename_chat(chat.id, "New name")
    assert renamed.title == "New name" and renamed.updated_at > chat.updated_at
    assert store.set_system_prompt(chat.id, "Talk like a pirate.").system_prompt == (
        "Talk like a pirate."
    )
    assert store.set_params(chat.id, {"top_k": 10, "stop": ["\n"]}).params == {
        "top_k": 10,
        "stop": ["\n"],
    }
    assert store.set_model(chat.id, "other.gguf").model == "other.gguf"
    with pytest.raises(ChatNotFound):
        store.rename_chat("000000000000", "nope")


def test_lookup_by_unique_prefix(store: ChatStore, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_chat_ids(monkeypatch, "abc000000001", "abc000000002", "def000000003")
    first, second, third = (store.create_chat(title=t) for t in ("one", "two", "three"))
    assert store.get_chat("d").id == third.id
    assert store.get_chat(" ABC000000001 ").id == first.id
    assert store.get_chat("abc000000002").id == second.id


def test_an_ambiguous_prefix_names_the_candidates(
    store: ChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_chat_ids(monkeypatch, "abc000000001", "abc000000002")
    store.create_chat()
    store.create_chat()
    with pytest.raises(AmbiguousChatId) as caught:
        store.get_chat("abc")
    assert isinstance(caught.value, ChatNotFound)
    assert sorted(caught.value.matches) == ["abc000000001", "abc000000002"]
    assert "ambiguous" in str(caught.value) and "abc000000001" in str(caught.value)


@pytest.mark.parametrize("key", ["ffff", "", "%", "_"])
def test_an_unknown_id_is_chat_not_found(store: ChatStore, key: str) -> None:
    store.create_chat()
    with pytest.raises(ChatNotFound, match="no chat with id"):
        store.get_chat(key)


def test_a_colliding_random_id_is_drawn_again(
    store: ChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_chat_ids(monkeypatch, "aaaaaaaaaaaa", "aaaaaaaaaaaa", "bbbbbbbbbbbb")
    assert store.create_chat().id == "aaaaaaaaaaaa"
    assert store.create_chat().id == "bbbbbbbbbbbb"


def test_list_chats_most_recently_updated_first(store: ChatStore) -> None:
    assert store.latest_chat() is None
    a, b, c = (store.create_chat(title=t) for t in "abc")
    assert [chat.id for chat in store.list_chats()] == [c.id, b.id, a.id]
    store.add_message(a.id, "user", "bump")
    listed = store.list_chats()
    assert [chat.id for chat in listed] == [a.id, c.id, b.id]
    assert listed[0].message_count == 1
    assert [chat.id for chat in store.list_chats(limit=2)] == [a.id, c.id]
    assert len(store.list_chats(limit=None)) == 3
    latest = store.latest_chat()
    assert latest is not None and latest.id == a.id


def test_search_by_title_and_content(store: ChatStore) -> None:
    paris = store.create_chat(title="Geography")
    store.add_message(paris.id, "user", "Which city is the capital of France?")
    store.add_message(paris.id, "assistant", "Paris, naturally.")
    cooking = store.create_chat(title="Cooking 100% vegan")
    store.add_message(cooking.id, "user", "A recipe with lentils, please.")

    def found(query: str) -> set[str]:
        return {chat.id for chat in store.list_chats(query=query)}

    assert found("geog") == {paris.id}
    assert found("capital France") == {paris.id}
    assert found("capit") == {paris.id}  # words match as prefixes
    assert found("LENTILS") == {cooking.id}
    assert found("100%") == {cooking.id}
    assert found("capital lentils") == set()
    assert found("") == {paris.id, cooking.id}
    for awkward in ['"', "c++", "—", "a OR b", "NEAR(x)", "%_", "*"]:
        store.list_chats(query=awkward)  # user text never reaches FTS syntax


def test_search_follows_edits_and_deletes(store: ChatStore) -> None:
    chat = store.create_chat(title="t")
    message = store.add_message(chat.id, "assistant", "draft about zebras")
    store.update_message(message.id, content="final answer about giraffes")
    assert store.list_chats(query="zebras") == []
    assert [c.id for c in store.list_chats(query="giraffes")] == [chat.id]
    store.truncate_from(message.id)
    assert store.list_chats(query="giraffes") == []


def test_search_without_fts_falls_back_to_like(
    store: ChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = store.create_chat(title="t")
    store.add_message(chat.id, "user", "the 50% solution")
    monkeypatch.setattr(store, "_fts", False)
    assert [c.id for c in store.list_chats(query="50%")] == [chat.id]
    assert store.list_chats(query="5_%") == []


def test_fts_query_quotes_every_word() -> None:
    assert fts_query('say "hi" now') == '"say"* """hi"""* "now"*'
    assert fts_query("— !") is None


def test_delete_cascades_to_messages(store: ChatStore) -> None:
    chat = store.create_chat()
    kept = store.create_chat()
    store.add_message(chat.id, "user", "hello")
    store.add_message(kept.id, "user", "stay")
    store.delete_chat(chat.id)
    with pytest.raises(ChatNotFound):
        store.get_chat(chat.id)
    with pytest.raises(ChatNotFound):
        store.messages(chat.id)
    with pytest.raises(ChatNotFound):
        store.delete_chat(chat.id)
    raw = sqlite3.connect(store.path)
    assert raw.execute("SELECT chat_id FROM messages").fetchall() == [(kept.id,)]
    raw.close()


# -- messages -----------------------------------------------------------------


def test_messages_keep_their_order_and_metadata(store: ChatStore) -> None:
    chat = store.create_chat(model="m.gguf")
    store.add_message(chat.id, "user", "Hi")
    answer = store.add_message(
        chat.id,
        "assistant",
        "Hello!",
        model="m.gguf",
        finish_reason="stop",
        prompt_tokens=12,
        completion_tokens=3,
        tokens_per_second=41.5,
        time_to_first_token=0.25,
        sources=[{"path": "notes.txt", "page": 2}],
    )
    stored = store.messages(chat.id)
    assert [(m.position, m.role, m.content) for m in stored] == [
        (0, "user", "Hi"),
        (1, "assistant", "Hello!"),
    ]
    assert stored[1] == answer
    assert answer.sources == [{"path": "notes.txt", "page": 2}]
    assert (answer.prompt_tokens, answer.tokens_per_second) == (12, 41.5)
    assert store.get_message(answer.id) == answer
    assert store.messages(store.create_chat().id) == []


def test_add_message_checks_its_arguments(store: ChatStore) -> None:
    with pytest.raises(ChatNotFound):
        store.add_message("000000000000", "user", "hi")
    chat = store.create_chat()
    with pytest.raises(InvalidParameter, match="role"):
        store.add_message(chat.id, "narrator", "hi")
    assert store.messages(chat.id) == []


def test_a_message_is_on_disk_as_soon_as_it_is_added(store: ChatStore) -> None:
    chat = store.create_chat()
    partial = store.add_message(chat.id, "assistant", "The answer is")
    with ChatStore(store.path) as other:
        assert [m.content for m in other.messages(chat.id)] == ["The answer is"]
    store.update_message(partial.id, content="The answer is 42.", finish_reason="stop")
    with ChatStore(store.path) as other:
        [done] = other.messages(chat.id)
    assert (done.content, done.finish_reason, done.position) == ("The answer is 42.", "stop", 0)


def test_update_message_keeps_what_it_is_not_given(store: ChatStore) -> None:
    chat = store.create_chat()
    message = store.add_message(chat.id, "assistant", "", model="m.gguf", prompt_tokens=7)
    updated = store.update_message(
        message.id, content="done", completion_tokens=2, sources=[{"title": "a.pdf"}]
    )
    assert (updated.content, updated.model, updated.prompt_tokens) == ("done", "m.gguf", 7)
    assert (updated.completion_tokens, updated.sources) == (2, [{"title": "a.pdf"}])
    assert store.update_message(message.id) == updated
    with pytest.raises(MessageNotFound):
        store.update_message("nope", content="x")


def test_truncate_from_deletes_the_message_and_all_after_it(store: ChatStore) -> None:
    chat = store.create_chat()
    other = store.create_chat()
    ids = [store.add_message(chat.id, "user", f"m{i}").id for i in range(4)]
    store.add_message(other.id, "user", "untouched")
    assert store.truncate_from(ids[2]) == 2
    assert [m.content for m in store.messages(chat.id)] == ["m0", "m1"]
    assert store.add_message(chat.id, "user", "again").position == 2
    assert len(store.messages(other.id)) == 1
    with pytest.raises(MessageNotFound):
        store.truncate_from(ids[3])


def test_rate_message(store: ChatStore) -> None:
    chat = store.create_chat()
    message = store.add_message(chat.id, "assistant", "ok")
    store.rate_message(message.id, 1)
    assert store.get_message(message.id).rating == 1
    store.rate_message(message.id, -1)
    assert store.get_message(message.id).rating == -1
    store.rate_message(message.id, None)
    assert store.get_message(message.id).rating is None
    with pytest.raises(InvalidParameter, match="rating"):
        store.rate_message(message.id, 5)
    with pytest.raises(MessageNotFound):
        store.rate_message("nope", 1)


def test_a_suggested_better_answer_is_kept_beside_the_answer(store: ChatStore) -> None:
    chat = store.create_chat()
    question = store.add_message(chat.id, "user", "2+2?")
    answer = store.add_message(chat.id, "assistant", "5")
    assert store.suggest_answer(answer.id, "4").edited_content == "4"
    kept = store.get_message(answer.id)
    assert (kept.content, kept.edited_content) == ("5", "4")
    assert store.suggest_answer(answer.id, "  ").edited_content is None  # blank removes it
    with pytest.raises(InvalidParameter, match="message_id"):
        store.suggest_answer(question.id, "a question is not an answer")
    with pytest.raises(MessageNotFound):
        store.suggest_answer("nope", "x")


def test_an_old_database_gains_the_edit_column_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    db.MIGRATIONS[0](raw)  # the schema as version 1 wrote it
    raw.execute("PRAGMA user_version = 1")
    raw.execute(
        "INSERT INTO chats VALUES ('c1', 't', NULL, NULL, '{}', '2026-01-01', '2026-01-01')"
    )
    raw.execute(
        "INSERT INTO messages (id, chat_id, position, role, content, created_at, rating)"
        " VALUES ('m1', 'c1', 0, 'assistant', 'hi', '2026-01-01T00:00:00', 1)"
    )
    raw.commit()
    raw.close()
    with ChatStore(path) as store:
        (message,) = store.messages("c1")
        assert (message.content, message.rating, message.edited_content) == ("hi", 1, None)
        assert store.suggest_answer("m1", "hello").edited_content == "hello"


def test_settings_hold_json_values(store: ChatStore) -> None:
    assert store.get_setting("theme") is None
    assert store.get_setting("theme", "dark") == "dark"
    store.set_setting("theme", "light")
    store.set_setting("theme", {"name": "solarized", "sizes": [1, 2]})
    assert store.get_setting("theme") == {"name": "solarized", "sizes": [1, 2]}
    store.set_setting("datalake.opt_in", False)
    assert store.get_setting("datalake.opt_in", True) is False


# -- concurrency --------------------------------------------------------------

_WORKER = """
import sys
from llm4all.store import ChatStore
path, chat_id, tag, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with ChatStore(path) as store:
    own = store.create_chat(title=tag)
    for i in range(count):
        store.add_message(chat_id, "user", f"{tag}-{i}")
        store.add_message(own.id, "assistant", f"{tag}-{i}")
"""


def test_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with ChatStore(path) as store:
        shared = store.create_chat(title="shared")
    src_dir = Path(db.__file__).parents[2]  # the folder that holds the llm4all package
    env = os.environ | {"PYTHONPATH": str(src_dir)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), shared.id, f"w{n}", "40"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    with ChatStore(path) as store:
        messages = store.messages(shared.id)
        assert [m.position for m in messages] == list(range(160))
        assert {m.content for m in messages} == {f"w{n}-{i}" for n in range(4) for i in range(40)}
        own = [c for c in store.list_chats() if c.id != shared.id]
        assert sorted(c.title or "" for c in own) == ["w0", "w1", "w2", "w3"]
        assert all(c.message_count == 40 for c in own)


def test_threads_sharing_one_store_lose_nothing(store: ChatStore) -> None:
    chat = store.create_chat()
    other = ChatStore(store.path)

    def write(target: ChatStore, tag: str) -> None:
        for i in range(50):
            target.add_message(chat.id, "user", f"{tag}{i}")

    threads = [
        threading.Thread(target=write, args=(target, tag))
        for target, tag in [(store, "a"), (store, "b"), (other, "c")]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    assert len({m.content for m in store.messages(chat.id)}) == 150


# -- export -------------------------------------------------------------------


@pytest.fixture
def conversation(store: ChatStore) -> str:
    chat = store.create_chat(model="m.gguf", system_prompt="Be brief.")
    store.add_message(chat.id, "user", "Où est la tour Eiffel ?")
    answer = store.add_message(
        chat.id,
        "assistant",
        "À Paris.\n\n```\ncode\n```",
        model="m.gguf",
        tokens_per_second=20.0,
        sources=[{"title": "guide.pdf"}],
    )
    store.rate_message(answer.id, 1)
    return chat.id


def test_jsonl_export_parses_back(store: ChatStore, conversation: str) -> None:
    chat = store.get_chat(conversation)
    messages = store.messages(chat.id)
    text = export_chat(chat, messages, "jsonl")
    records = [json.loads(line) for line in text.splitlines()]
    assert [(r["role"], r["content"]) for r in records] == [
        ("system", "Be brief."),
        ("user", "Où est la tour Eiffel ?"),
        ("assistant", "À Paris.\n\n```\ncode\n```"),
    ]
    assert all(r["chat_id"] == chat.id for r in records)
    assert records[2]["rating"] == 1 and records[2]["sources"] == [{"title": "guide.pdf"}]
    assert records[2]["id"] == messages[1].id and records[2]["model"] == "m.gguf"
    assert "Où" in text  # UTF-8, not \\u escapes


def test_markdown_export_is_a_readable_transcript(store: ChatStore, conversation: str) -> None:
    chat = store.get_chat(conversation)
    text = export_chat(chat, store.messages(chat.id), "md")
    assert text.startswith("# Où est la tour Eiffel ?\n")
    assert "- Model: m.gguf" in text and f"`{chat.id}`" in text
    assert chat.created_at.strftime("%Y-%m-%d") in text
    assert "## System prompt\n\nBe brief." in text
    assert "## User\n\nOù est la tour Eiffel ?" in text
    assert "## Assistant · m.gguf · 20.0 tok/s · rated good" in text
    assert "1. guide.pdf" in text


def test_export_rejects_an_unknown_format(store: ChatStore, conversation: str) -> None:
    chat = store.get_chat(conversation)
    with pytest.raises(InvalidParameter, match="format"):
        export_chat(chat, [], "csv")
