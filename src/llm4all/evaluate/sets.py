"""The evaluation sets: reference answers to score, and questions to answer.

``self-instruct`` (252 instructions with a reference output each, the set of
GPT4All's report), ``vicuna80`` and ``seed`` ship with llm4all (see
``data/README.md`` for their sources and licences). Any data file that
:func:`llm4all.data.formats.read_rows` reads (GPT4All, Alpaca, self-instruct,
ShareGPT, OpenAI messages, llm4all's schema, …) gives reference answers too:
the last assistant message is the reference, what comes before it the prompt.
That is how the held-out rows of a training run are scored.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from llm4all.chat.template import Message
from llm4all.errors import Llm4allError

#: Shipped sets of reference answers, by name.
REFERENCE_SETS = {"self-instruct": "self_instruct_user_oriented.jsonl"}
#: Shipped question sets, by name.
QUESTION_SETS = {"vicuna80": "vicuna_questions_80.jsonl", "seed": "seed_article_questions.jsonl"}


class EvalDataError(Llm4allError, ValueError):
    """An evaluation file that is missing, empty or has a malformed row (named by its line)."""

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.path, self.reason, self.line = path, reason, line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Example:
    """A prompt (the messages before the reference) and the reference answer."""

    id: str
    messages: tuple[Message, ...]
    reference: str
    #: The prompt as GPT4All's script joined it: instruction + " " + input.
    gpt4all_prompt: str
    #: Where the row starts in its file (1-based).
    line: int | None = None


@dataclass(frozen=True)
class Question:
    """A question to answer; ``check`` says what a correct answer contains (seed set)."""

    id: str
    text: str
    category: str = ""
    expect: str = ""
    check: dict[str, Any] = field(default_factory=dict)


def shipped(filename: str) -> Path:
    """The path of a set shipped in the package."""
    return Path(str(files("llm4all.evaluate") / "data" / filename))


def load_examples(source: str | Path, limit: int | None = None) -> list[Example]:
    """Reference answers from a shipped set's name or a data file (any format read_rows knows)."""
    from llm4all.data.formats import RowProblem, read_rows

    name = str(source)
    path = shipped(REFERENCE_SETS[name]) if name in REFERENCE_SETS else Path(source)
    if not path.is_file():
        raise EvalDataError(str(path), "no such file")
    out: list[Example] = []
    for row in read_rows(path):
        if isinstance(row, RowProblem):
            raise EvalDataError(row.path, row.reason, row.line)
        messages = [Message(m["role"], m["content"]) for m in row.messages]
        if len(messages) < 2 or messages[-1].role != "assistant" or not messages[-1].content:
            line = row.meta.get("line")
            raise EvalDataError(str(path), "the row does not end with an answer", line)
        prompt = _gpt4all_prompt(path, row)
        out.append(
            Example(
                row.id, tuple(messages[:-1]), messages[-1].content, prompt, row.meta.get("line")
            )
        )
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise EvalDataError(str(path), "no rows")
    return out


def _gpt4all_prompt(path: Path, row: Any) -> str:
    """``instruction + " " + input`` of a self-instruct row (re-read: read_rows joins with a
    blank line); other formats: the prompt's messages joined by spaces."""
    if "instance" in row.meta:
        stat = path.stat()
        record = json.loads(_lines(path, stat.st_mtime_ns, stat.st_size)[row.meta["line"] - 1])
        given = record["instances"][row.meta["instance"]].get("input") or ""
        return f"{record['instruction']} {given}"
    return " ".join(m["content"] for m in row.messages[:-1])


@functools.lru_cache(maxsize=4)
def _lines(path: Path, _mtime_ns: int, _size: int) -> list[str]:
    """A file's lines, read once per version of the file (lines end at "\\n" only, as JSONL's)."""
    return path.read_text(encoding="utf-8").split("\n")


def load_questions(source: str | Path, limit: int | None = None) -> list[Question]:
    """Questions from ``vicuna80``, ``seed`` or a JSONL file.

    A row needs the question as ``text``, ``question`` or ``prompt``; ``id`` or
    ``question_id``, ``category``, ``expect`` and ``check`` are optional.
    """
    name = str(source)
    path = shipped(QUESTION_SETS[name]) if name in QUESTION_SETS else Path(source)
    if not path.is_file():
        raise EvalDataError(str(path), "no such file")
    out: list[Question] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                out.append(_question(path, number, line))
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise EvalDataError(str(path), "no questions")
    return out


def _question(path: Path, number: int, line: str) -> Question:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise EvalDataError(str(path), f"not JSON ({exc.args[0]})", number) from None
    if not isinstance(row, dict):
        raise EvalDataError(str(path), "a row must be a JSON object", number)
    text = next((row[k] for k in ("text", "question", "prompt") if k in row), None)
    if not isinstance(text, str) or not text.strip():
        raise EvalDataError(str(path), "the row has no question ('text')", number)
    check = row.get("check") or {}
    if not isinstance(check, dict):
        raise EvalDataError(str(path), "'check' must be an object", number)
    return Question(
        id=str(row.get("id", row.get("question_id", number))),
        text=text,
        category=str(row.get("category", "")),
        expect=str(row.get("expect", "")),
        check=check,
    )
