"""Every training-data format, read into the one conversation schema.

The API (curation, the data map and the trainer all read rows through it)::

    from llm4all.data.formats import read_rows, Conversation, RowProblem

    for row in read_rows(Path("data.json")):          # the format is detected
        if isinstance(row, RowProblem):
            print(row)                                # "data.json:12: 'output' is missing"
            continue
        row.id, row.source, row.prompt, row.response  # a schema.Conversation

- :func:`read_rows` streams one file (``fmt`` = one of :data:`FORMATS`, or
  None to detect it from the first rows). A row that cannot be read (not JSON,
  invalid UTF-8, not the claimed format, a field missing or of the wrong type)
  comes out as a :class:`RowProblem` with the file and line, in place, and the
  file goes on. A file whose format cannot be told is one RowProblem (line 1);
  only a missing file or an unknown ``fmt`` raises :class:`DataFormatError`.
- :func:`read_many` does the same for several files or folders (``*.json``,
  ``*.jsonl``, ``*.parquet`` inside, sorted, so the order is deterministic).
- :func:`write_rows` writes conversations as the schema's JSON Lines, or as
  Parquet when the path ends in ``.parquet`` (pyarrow, extra ``data``).

Formats (the keys of a row that identify it):

========================  =====================================================
``gpt4all``               ``prompt``, ``response`` (and ``source``): GPT4All's own
``alpaca``                ``instruction``, ``input``, ``output`` (JSON array or JSONL)
``self-instruct``         ``instruction``, ``instances[{input, output}]``: one row per instance
``sharegpt``              ``conversations[{from, value}]``
``openai``                ``messages[{role, content}]`` (fine-tuning JSONL)
``p3``                    ``prompt``, ``completion`` (``<|endoftext|>`` removed)
``chat-export``           ``llm4all chats export --format jsonl``: a line per message
                          with ``chat_id``; consecutive lines of one chat are one row
``llm4all``               the schema's own JSONL (``id``, ``source``, ``messages``,
                          ``meta``); also what ``llm4all datalake export`` writes,
                          with ``rating`` on messages. ``.parquet`` files of this
                          schema are read too.
========================  =====================================================

Each row gets ``source`` (the row's own ``source`` field where the format has
one, else the file's stem) and a stable ``id`` (see :mod:`llm4all.data.schema`):
two identical rows of one source share an id, which is what exact-duplicate
removal then drops. ``meta`` holds ``file`` and ``line`` (1-based line where
the row starts), and ``instance`` for self-instruct rows.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from llm4all.data.schema import Conversation
from llm4all.errors import Llm4allError

FORMATS: dict[str, str] = {
    "gpt4all": "prompt/response/source JSONL (GPT4All)",
    "alpaca": "instruction/input/output (Alpaca; JSON array or JSONL)",
    "self-instruct": "instruction with instances[{input, output}] (self-instruct)",
    "sharegpt": "conversations[{from, value}] (ShareGPT)",
    "openai": "messages[{role, content}] (OpenAI fine-tuning JSONL)",
    "p3": "prompt/completion (P3, OpenAI legacy fine-tuning)",
    "chat-export": "llm4all chats export --format jsonl",
    "llm4all": "llm4all's conversation schema (also the datalake export)",
}
"""The formats :func:`read_rows` knows, by name, with what they are."""

SUFFIXES = (".json", ".jsonl", ".parquet")
"""The files :func:`read_many` picks up inside a folder."""

DETECT_ROWS = 20
"""How many rows format detection looks at before giving up."""

_ENDOFTEXT = re.compile(r"(?:<\|endoftext\|>|</s>)\s*$")
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
}


@dataclass(frozen=True)
class RowProblem:
    """A row that was skipped: where it is and why. ``str()`` is one line."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


Row = Conversation | RowProblem


class DataFormatError(Llm4allError, ValueError):
    """A data file that cannot be read at all (missing, or of no known format)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class _BadRow(ValueError):
    """A row's content does not fit its format (becomes a RowProblem)."""


# -- raw records: (line, object) or (line, problem) from JSONL, JSON arrays, Parquet ------------


def _jsonl_records(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    for number, raw in enumerate(stream, 1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield number, _BadRow(f"invalid UTF-8 at byte {error.start}")
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as error:
            yield number, _BadRow(f"not JSON ({error.msg})")


def _json_array_records(stream: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[tuple[int, Any]]:
    """The elements of one top-level JSON array, streamed chunk by chunk.

    Invalid UTF-8 is decoded with ``surrogateescape`` so that only the element
    holding it is reported; an element that does not parse ends the file (the
    rest of an array cannot be found reliably), which is reported too.
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    buffer, position, line, eof = "", 0, 1, False

    def fill() -> None:
        nonlocal buffer, position, eof
        data = stream.read(chunk_size)
        eof = not data
        buffer = buffer[position:] + utf8.decode(data, final=eof)
        position = 0

    def next_value(separator: str) -> int:
        """Move past whitespace and one separator; the index of the next value, -1 at the end."""
        nonlocal line
        index = _skip(buffer, position, separator)
        while index < 0 and not eof:
            fill()
            index = _skip(buffer, position, separator)
        if index >= 0:
            line += buffer.count("\n", position, index)
        return index

    fill()
    position = next_value("\ufeff")
    if position < 0 or buffer[position] != "[":
        yield line, _BadRow("not a JSON array")
        return
    position += 1
    separator = ""
    while True:
        index = next_value(separator or " ")
        if index < 0 or buffer[index] == "]":
            return
        position, separator = index, ","
        try:
            value, end = decoder.raw_decode(buffer, position)
        except json.JSONDecodeError as error:
            if not eof:
                fill()
                continue
            yield line, _BadRow(f"not JSON ({error.msg}); the rest of the file is skipped")
            return
        element = buffer[position:end]
        yield line, (_BadRow("invalid UTF-8") if _has_bad_bytes(element) else value)
        line += element.count("\n")
        position = end


def _skip(text: str, start: int, separator: str) -> int:
    """The index of the next value after whitespace and at most one ``separator``; -1 if none yet."""
    seen = False
    for index in range(start, len(text)):
        char = text[index]
        if char.isspace():
            continue
        if char == separator and not seen:
            seen = True
            continue
        return index
    return -1


_ESCAPED_BYTES = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of invalid UTF-8


def _has_bad_bytes(text: str) -> bool:
    return _ESCAPED_BYTES.search(text) is not None


def _parquet_records(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            number += 1
            yield number, _from_parquet(record)


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    if path.suffix == ".parquet":
        yield from _parquet_records(path)
        return
    with path.open("rb") as stream:
        head = stream.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
        stream.seek(0)
        if head.startswith(b"["):
            yield from _json_array_records(stream)
        else:
            yield from _jsonl_records(stream)


# -- detection ----------------------------------------------------------------------------------


def format_of(record: Any) -> str | None:
    """The format a row's keys say it is in, or None.

    Example: ``format_of({"prompt": "Hi", "completion": "Hello"}) == "p3"``
    """
    if not isinstance(record, dict):
        return None
    keys = record.keys()
    if isinstance(record.get("messages"), list):
        return "llm4all" if keys & {"id", "source", "meta"} else "openai"
    if "conversations" in keys:
        return "sharegpt"
    if "chat_id" in keys and "role" in keys and "content" in keys:
        return "chat-export"
    if "instruction" in keys and "instances" in keys:
        return "self-instruct"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "prompt" in keys and "completion" in keys:
        return "p3"
    if "prompt" in keys and "response" in keys:
        return "gpt4all"
    return None


def detect_format(path: Path) -> str:
    """The format of a file, from its first rows; raises DataFormatError if none fits."""
    if path.suffix == ".parquet":
        return "llm4all"
    seen = 0
    for _, record in _records(path):
        if isinstance(record, _BadRow):
            continue
        found = format_of(record)
        if found:
            return found
        seen += 1
        if seen >= DETECT_ROWS:
            break
    raise DataFormatError(
        str(path), f"no known format in its first {DETECT_ROWS} rows; pass --format"
    )


# -- conversion: one record to conversations ------------------------------------------------------


def _text(record: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if key not in record:
        raise _BadRow(f"{key!r} is missing")
    if not isinstance(value, str):
        raise _BadRow(f"{key!r} must be text, not {type(value).__name__}")
    return value


def _pair(prompt: str, response: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": prompt.strip()},
        {"role": "assistant", "content": response.strip()},
    ]


def _instruction(instruction: str, given: str) -> str:
    return f"{instruction.strip()}\n\n{given.strip()}" if given.strip() else instruction


def _openai_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": …}]
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts) and parts:
            return "".join(str(p) for p in parts)
    raise _BadRow("a message's content must be text")


def _messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _BadRow("'messages' must be a list of objects")
    out = []
    for message in messages:
        if message.get("role") in ("tool", "function") or message.get("tool_calls"):
            raise _BadRow("tool calls are not training conversations here")
        out.append({**message, "content": _openai_content(message.get("content"))})
    return out


def _sharegpt(record: dict[str, Any]) -> list[dict[str, Any]]:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise _BadRow("'conversations' must be a non-empty list")
    messages = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise _BadRow("a turn of 'conversations' must be an object")
        role = _SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise _BadRow(f"unknown speaker {turn.get('from')!r} in 'conversations'")
        messages.append({"role": role, "content": _text(turn, "value").strip()})
    return messages


def _convert(
    record: Any, fmt: str, stem: str
) -> list[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    """(source, messages, extra meta) for each conversation of one record."""
    if not isinstance(record, dict):
        raise _BadRow(f"a row must be a JSON object, not {type(record).__name__}")
    if fmt == "gpt4all":
        source = record.get("source")
        source = source if isinstance(source, str) and source.strip() else stem
        return [(source, _pair(_text(record, "prompt"), _text(record, "response")), {})]
    if fmt == "alpaca":
        prompt = _instruction(_text(record, "instruction"), _text(record, "input", required=False))
        return [(stem, _pair(prompt, _text(record, "output")), {})]
    if fmt == "self-instruct":
        instances = record.get("instances")
        if not isinstance(instances, list) or not instances:
            raise _BadRow("'instances' must be a non-empty list")
        instruction, rows = _text(record, "instruction"), []
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise _BadRow("an instance must be an object")
            prompt = _instruction(instruction, _text(instance, "input", required=False))
            rows.append((stem, _pair(prompt, _text(instance, "output")), {"instance": index}))
        return rows
    if fmt == "p3":
        completion = _ENDOFTEXT.sub("", _text(record, "completion"))
        return [(stem, _pair(_text(record, "prompt"), completion), {})]
    if fmt == "sharegpt":
        return [(stem, _sharegpt(record), {})]
    if fmt == "openai":
        return [(stem, _messages(record), {})]
    raise DataFormatError(stem, f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _conversation(
    path: Path, line: int, source: str, messages: list[dict[str, Any]], meta: dict[str, Any]
) -> Row:
    try:
        return Conversation(
            messages=messages, source=source, meta={"file": path.name, "line": line, **meta}
        )
    except ValueError as error:
        return RowProblem(str(path), line, str(error))


def _schema_row(path: Path, line: int, record: Any) -> Row:
    try:
        if isinstance(record, dict):
            record = {**record, "messages": _messages(record)}
            if not record.get("source"):
                record["source"] = path.stem
        conversation = Conversation.from_dict(record)
    except ValueError as error:
        return RowProblem(str(path), line, str(error))
    conversation.meta.setdefault("file", path.name)
    conversation.meta.setdefault("line", line)
    return conversation


def _chat_exports(path: Path, records: Iterator[tuple[int, Any]]) -> Iterator[Row]:
    """Consecutive message lines with one ``chat_id`` make one conversation."""
    chat: str | None = None
    messages: list[dict[str, Any]] = []
    first = 0

    def flush() -> Iterator[Row]:
        if messages:
            meta = {"chat_id": chat}
            yield _conversation(path, first, path.stem, list(messages), meta)

    for line, record in records:
        if isinstance(record, _BadRow):
            yield RowProblem(str(path), line, str(record))
            continue
        if not isinstance(record, dict) or not isinstance(record.get("chat_id"), str):
            yield RowProblem(
                str(path), line, "a chat export line needs 'chat_id', 'role', 'content'"
            )
            continue
        if record["chat_id"] != chat:
            yield from flush()
            chat, messages, first = record["chat_id"], [], line
        keep = ("role", "content", "rating", "model")
        messages.append({k: record[k] for k in keep if record.get(k) is not None})
    yield from flush()


def read_rows(path: Path, fmt: str | None = None) -> Iterator[Row]:
    """Every row of one file as a Conversation, or a RowProblem where it cannot be read.

    ``fmt`` is one of :data:`FORMATS`; None detects it. Streams: memory does
    not grow with the file (a JSON array is parsed element by element).

    Example: ``next(read_rows(Path("alpaca.json"))).prompt``
    """
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise DataFormatError(str(path), f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataFormatError(str(path), "no such file")
    if fmt is None:
        try:
            fmt = detect_format(path)
        except DataFormatError as error:
            yield RowProblem(str(path), 1, f"skipped the whole file: {error.reason}")
            return
    records = _records(path)
    if fmt == "chat-export":
        yield from _chat_exports(path, records)
        return
    for line, record in records:
        if isinstance(record, _BadRow):
            yield RowProblem(str(path), line, str(record))
        elif fmt == "llm4all":
            yield _schema_row(path, line, record)
        else:
            try:
                converted = _convert(record, fmt, path.stem)
            except _BadRow as error:
                yield RowProblem(str(path), line, f"not {fmt}: {error}")
                continue
            for source, messages, meta in converted:
                yield _conversation(path, line, source, messages, meta)


def input_files(paths: Iterable[Path]) -> list[Path]:
    """Files named, and the data files inside folders named (recursively, sorted)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
            if not found:
                raise DataFormatError(str(path), f"no {', '.join(SUFFIXES)} files in this folder")
            files.extend(found)
        else:
            files.append(path)
    return files


def read_many(paths: Iterable[Path], fmt: str | None = None) -> Iterator[Row]:
    """:func:`read_rows` over files and folders, in order (each file's format detected)."""
    for path in input_files(paths):
        yield from read_rows(path, fmt)


# -- writing --------------------------------------------------------------------------------------

PARQUET_BATCH = 2048
"""Rows per Parquet row group write: bounded memory, good compression."""


def write_rows(conversations: Iterable[Conversation], path: Path) -> int:
    """Write conversations to ``path``: Parquet if it ends in ``.parquet``, else JSON Lines."""
    path = Path(path)
    if path.suffix == ".parquet":
        return _write_parquet(conversations, path)
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for conversation in conversations:
            out.write(json.dumps(conversation.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count


def _parquet_schema() -> Any:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("messages", pa.list_(message)),
            ("message_extras", pa.string()),  # JSON list of each message's other keys, or null
            ("meta", pa.string()),  # JSON object
        ]
    )


def _to_parquet(conversation: Conversation) -> dict[str, Any]:
    extras = [
        {k: v for k, v in m.items() if k not in ("role", "content")} for m in conversation.messages
    ]
    return {
        "id": conversation.id,
        "source": conversation.source,
        "messages": [{"role": m["role"], "content": m["content"]} for m in conversation.messages],
        "message_extras": json.dumps(extras, ensure_ascii=False) if any(extras) else None,
        "meta": json.dumps(conversation.meta, ensure_ascii=False),
    }


def _from_parquet(record: dict[str, Any]) -> dict[str, Any]:
    messages = [dict(m) for m in record.get("messages") or []]
    if record.get("message_extras"):
        for message, extra in zip(messages, json.loads(record["message_extras"]), strict=False):
            message.update(extra)
    meta = json.loads(record["meta"]) if record.get("meta") else {}
    return {
        "id": record.get("id"),
        "source": record.get("source"),
        "messages": messages,
        "meta": meta,
    }


def _write_parquet(conversations: Iterable[Conversation], path: Path) -> int:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

    schema, count, batch = _parquet_schema(), 0, []
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for conversation in conversations:
            batch.append(_to_parquet(conversation))
            if len(batch) >= PARQUET_BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count, batch = count + len(batch), []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    return count
