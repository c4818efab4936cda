"""Every training-data format read into the one schema; bad rows reported by line and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm4all.data.formats import (
    DataFormatError,
    RowProblem,
    detect_format,
    read_many,
    read_rows,
    write_rows,
)
from llm4all.data.schema import Conversation
from llm4all.store.chats import Chat, StoredMessage
from llm4all.store.export import to_jsonl

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.fail(f"the shared training data is missing: {path}")
    return path


def _lines(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def _good(rows: list[Conversation | RowProblem]) -> list[Conversation]:
    return [r for r in rows if isinstance(r, Conversation)]


CASES = {
    "gpt4all": {"prompt": "Name a colour.", "response": "Blue.", "source": "unified_chip2"},
    "alpaca": {"instruction": "Translate.", "input": "Hallo", "output": "Hello"},
    "self-instruct": {"instruction": "Add.", "instances": [{"input": "1+1", "output": "2"}]},
    "sharegpt": {
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]
    },
    "openai": {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]
    },
    "p3": {"prompt": "Is this positive? Great film.\n", "completion": "Yes<|endoftext|>"},
    "llm4all": {
        "id": "abc",
        "source": "lake",
        "messages": [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A", "rating": 1},
        ],
        "meta": {},
    },
}


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_each_format_is_detected_and_read(tmp_path: Path, fmt: str) -> None:
    path = _lines(tmp_path / f"{fmt}.jsonl", [CASES[fmt]])
    assert detect_format(path) == fmt
    (row,) = list(read_rows(path))
    assert isinstance(row, Conversation), row
    assert row.prompt and row.response
    assert row.id == "abc" if fmt == "llm4all" else len(row.id) == 16
    assert row.meta["line"] == 1


def test_conversions_keep_what_matters(tmp_path: Path) -> None:
    def one(fmt: str) -> Conversation:
        (row,) = _good(list(read_rows(_lines(tmp_path / f"{fmt}.jsonl", [CASES[fmt]]))))
        return row

    assert one("gpt4all").source == "unified_chip2"  # the row's own source wins
    assert one("alpaca").prompt == "Translate.\n\nHallo" and one("alpaca").source == "alpaca"
    assert one("p3").response == "Yes"  # <|endoftext|> removed
    assert [m["role"] for m in one("sharegpt").messages] == ["user", "assistant"]
    lake = one("llm4all")
    assert lake.id == "abc" and lake.messages[1]["rating"] == 1


def test_shared_alpaca_json_array_streams_with_line_numbers() -> None:
    path = _shared("gpteacher_roleplay.json")
    rows = list(read_rows(path))
    assert len(rows) == len(json.loads(path.read_text(encoding="utf-8")))
    assert all(isinstance(r, Conversation) for r in rows)
    first, second = rows[0], rows[1]
    assert isinstance(first, Conversation) and isinstance(second, Conversation)
    assert (first.meta["line"], second.meta["line"]) == (2, 7)  # where each object starts
    assert first.prompt.startswith("Imagine you are a detective")


def test_self_instruct_rows_become_one_conversation_per_instance() -> None:
    rows = _good(list(read_rows(_shared("self_instruct_seed_tasks.jsonl"))))
    assert len(rows) == 175 and all(r.meta["instance"] == 0 for r in rows)


def test_bad_rows_are_reported_by_line_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    good = json.dumps(CASES["alpaca"]).encode()
    path.write_bytes(
        b"\n".join(
            [
                good,
                b'{"instruction": "caf\xe9", "output": "x"}',  # Latin-1, not UTF-8
                b"{not json",
                b'{"instruction": "no output"}',
                b"[1, 2]",
                b'{"instruction": 3, "output": "x"}',
                good,
            ]
        )
    )
    rows = list(read_rows(path, "alpaca"))
    problems = [r for r in rows if isinstance(r, RowProblem)]
    assert [p.line for p in problems] == [2, 3, 4, 5, 6]
    assert "UTF-8" in problems[0].reason and "not JSON" in problems[1].reason
    assert "'output' is missing" in problems[2].reason
    assert str(problems[0]).startswith(f"{path}:2: ")
    assert [r.meta["line"] for r in _good(rows)] == [1, 7]


def test_a_file_that_is_not_what_it_claims(tmp_path: Path) -> None:
    path = _lines(tmp_path / "sharegpt.jsonl", [CASES["sharegpt"]] * 3)
    rows = list(read_rows(path, "alpaca"))
    assert all(isinstance(r, RowProblem) and r.reason.startswith("not alpaca") for r in rows)
    unknown = _lines(tmp_path / "other.jsonl", [{"text": "hello"}])
    (problem,) = list(read_rows(unknown))
    assert isinstance(problem, RowProblem) and "pass --format" in problem.reason


def test_a_broken_json_array_keeps_what_came_before(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(
        '[\n{"instruction": "a", "output": "b"},\n{"instruction": "c", "outp', encoding="utf-8"
    )
    first, problem = list(read_rows(path))
    assert isinstance(first, Conversation) and isinstance(problem, RowProblem)
    assert problem.line == 3


def test_chat_exports_become_conversations(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)

    def export(chat_id: str, answer: str) -> str:
        chat = Chat(chat_id, "t", "m", "Be brief.", {}, now, now)
        messages = [
            StoredMessage("1", chat_id, 0, "user", "Hi", now),
            StoredMessage("2", chat_id, 1, "assistant", answer, now, rating=1),
        ]
        return to_jsonl(chat, messages)

    path = tmp_path / "chats.jsonl"
    path.write_text(export("c1", "Hello") + export("c2", "Hey"), encoding="utf-8")  # two chats
    assert detect_format(path) == "chat-export"
    rows = _good(list(read_rows(path)))
    assert [r.meta["chat_id"] for r in rows] == ["c1", "c2"]
    assert [m["role"] for m in rows[0].messages] == ["system", "user", "assistant"]
    assert rows[1].response == "Hey" and rows[0].messages[2]["rating"] == 1
    assert rows[1].meta["line"] == 4


def test_ids_are_stable_and_sources_kept() -> None:
    path = _shared("p3_t0_templates/ag_news_classify.jsonl")
    first = [r.id for r in _good(list(read_rows(path)))]
    assert first == [r.id for r in _good(list(read_rows(path)))]
    assert {r.source for r in _good(list(read_rows(path)))} == {"ag_news_classify"}


def test_jsonl_and_parquet_round_trip(tmp_path: Path) -> None:
    rows = _good(list(read_many([_shared("p3_t0_templates")])))[:300]
    rows[0].messages[1]["rating"] = -1
    for name in ("out.jsonl", "out.parquet"):
        assert write_rows(rows, tmp_path / name) == 300
        back = _good(list(read_rows(tmp_path / name)))
        assert [b.to_dict() for b in back] == [r.to_dict() for r in rows]


def test_missing_file_and_unknown_format_raise() -> None:
    with pytest.raises(DataFormatError, match="no such file"):
        list(read_rows(Path("/nonexistent.jsonl")))
    with pytest.raises(DataFormatError, match="unknown format"):
        list(read_rows(_shared("self_instruct_seed_tasks.jsonl"), "csv"))


@pytest.mark.parametrize("chunk", [5, 4096])
def test_json_arrays_parse_across_chunk_boundaries(chunk: int) -> None:
    import io

    from llm4all.data.formats import _json_array_records

    data = json.loads(_shared("gpteacher_roleplay.json").read_text(encoding="utf-8"))[:60]
    raw = json.dumps(data, indent=2, ensure_ascii=False).encode()  # multi-byte UTF-8 split too
    elements = list(_json_array_records(io.BytesIO(raw), chunk))
    assert [value for _, value in elements] == data
    assert elements[1][0] == 7  # line numbers counted across chunks
