"""``llm4all chats``: the commands run through click's CliRunner on a real database."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from llm4all.cli._common import run_guarded
from llm4all.cli.chats import chats_group
from llm4all.errors import AmbiguousChatId, ChatNotFound
from llm4all.store import ChatStore
from llm4all.store import chats as chats_module


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ChatStore:
    monkeypatch.setenv("LLM4ALL_HOME", str(tmp_path))
    # Wide enough that rich never cuts an id or a title short.
    monkeypatch.setenv("COLUMNS", "200")
    return ChatStore()


@pytest.fixture
def chat_id(store: ChatStore) -> str:
    chat = store.create_chat(model="tiny.gguf", system_prompt="Be brief.")
    store.add_message(chat.id, "user", "Name a [bold]colour[/bold]")
    store.add_message(chat.id, "assistant", "Blue.", model="tiny.gguf")
    return chat.id


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(chats_group, list(args), input=input)


def test_list_shows_a_table(store: ChatStore, chat_id: str) -> None:
    store.create_chat(title="Second chat")
    result = invoke("list")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["id", "title", "model", "messages", "updated"]
    assert rows[0].startswith(store.list_chats()[0].id)
    assert chat_id in rows[1] and "Name a [bold]colour[/bold]" in rows[1]
    assert "tiny.gguf" in rows[1] and " 2 " in rows[1]


def test_list_json_search_and_limit(store: ChatStore, chat_id: str) -> None:
    store.create_chat(title="Something else")
    listed = json.loads(invoke("list", "--json").stdout)
    assert [c["title"] for c in listed] == ["Something else", "Name a [bold]colour[/bold]"]
    assert listed[1]["id"] == chat_id and listed[1]["message_count"] == 2
    searched = json.loads(invoke("list", "--search", "blue", "--json").stdout)
    assert [c["id"] for c in searched] == [chat_id]
    assert len(json.loads(invoke("list", "-n", "1", "--json").stdout)) == 1


def test_list_says_when_there_is_nothing(store: ChatStore) -> None:
    result = invoke("list")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no chats yet" in result.stderr
    assert "no chats match" in invoke("list", "-s", "zebra").stderr


def test_show_prints_the_transcript_by_prefix(store: ChatStore, chat_id: str) -> None:
    result = invoke("show", chat_id[:5])
    assert result.exit_code == 0, result.output
    user, assistant = store.messages(chat_id)
    lines = result.stdout.splitlines()
    assert lines[0] == "Name a [bold]colour[/bold]"  # the title, markup printed as typed
    assert lines[1].startswith(f"{chat_id} · tiny.gguf · updated ")
    assert lines[3:] == [
        "System prompt",
        "Be brief.",
        "",
        f"User  {user.id}",
        "Name a [bold]colour[/bold]",
        "",
        f"Assistant · tiny.gguf  {assistant.id}",
        "Blue.",
    ]


def test_export_jsonl_to_stdout(chat_id: str) -> None:
    result = invoke("export", chat_id, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["role"] for r in records] == ["system", "user", "assistant"]
    assert records[2]["content"] == "Blue."


def test_export_markdown_to_a_file(chat_id: str, tmp_path: Path) -> None:
    target = tmp_path / "chat.md"
    result = invoke("export", chat_id, "-f", "md", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "wrote 2 messages" in result.stderr
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Name a [bold]colour[/bold]") and "## Assistant" in text


def test_rm_asks_first(store: ChatStore, chat_id: str) -> None:
    declined = invoke("rm", chat_id, input="n\n")
    assert declined.exit_code != 0
    assert store.get_chat(chat_id).id == chat_id
    confirmed = invoke("rm", chat_id[:6], input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    with pytest.raises(ChatNotFound):
        store.get_chat(chat_id)


def test_rm_yes_skips_the_question(store: ChatStore, chat_id: str) -> None:
    result = invoke("rm", chat_id, "-y")
    assert result.exit_code == 0 and f"deleted chat {chat_id}" in result.stderr
    assert store.list_chats() == []


def test_rename(store: ChatStore, chat_id: str) -> None:
    result = invoke("rename", chat_id[:4], "Colours", "of", "things")
    assert result.exit_code == 0, result.output
    assert store.get_chat(chat_id).title == "Colours of things"
    assert invoke("rename", chat_id, " ").exit_code == 2


def test_titles_and_paths_are_printed_exactly(
    store: ChatStore, chat_id: str, tmp_path: Path
) -> None:
    renamed = invoke("rename", chat_id, "a[i-1] [bold]x[/bold] [/]")
    assert renamed.exit_code == 0, renamed.output
    assert "to 'a[i-1] [bold]x[/bold] [/]'" in renamed.stderr  # was "to 'a x '"
    target = tmp_path / "chat[1].md"
    exported = invoke("export", chat_id, "-f", "md", "-o", str(target))
    assert exported.exit_code == 0 and f"to {target}" in exported.stderr


def test_unknown_and_ambiguous_ids_raise_llm4all_errors(
    store: ChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(invoke("show", "ffffffffffff").exception, ChatNotFound)
    assert isinstance(invoke("export", "").exception, ChatNotFound)
    ids = iter(["abc000000001", "abc000000002"])
    monkeypatch.setattr(chats_module, "new_chat_id", ids.__next__)
    store.create_chat()
    store.create_chat()
    result = invoke("rm", "abc", "-y")
    assert isinstance(result.exception, AmbiguousChatId)
    assert len(store.list_chats()) == 2


def test_the_cli_edge_prints_one_line(
    store: ChatStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["llm4all", "show", "ffff"])
    assert run_guarded(chats_group, debug=False) == 1
    err = capsys.readouterr().err
    assert err == "error: no chat with id 'ffff' (see `llm4all chats list`)\n"
