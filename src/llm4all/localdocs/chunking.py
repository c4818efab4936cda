"""Structure-aware chunking: blocks in, token-sized chunks with overlap out (pure functions).

A chunk never spans two sections (a heading starts a new one) or two PDF
pages, so each chunk cites one place: a path, a page or a line range, and the
heading path it sits under. Inside a section, blocks are packed into chunks of
at most ``max_tokens`` tokens. A block that is too long on its own is cut at
sentence ends (text), at line ends (code, tables), and as a last resort between
words. Consecutive chunks of one section share about ``overlap`` tokens: the
last sentences or lines of one chunk start the next, so a fact that straddles
a cut is whole in at least one chunk.

Tokens are counted by a function given by the caller (the embedding model's
tokenizer in LocalDocs; ``len(text.split())`` in tests).

Example::

    chunk_blocks([Block("text", "One. Two. Three.", "")], lambda t: len(t.split()), max_tokens=2)
    # → three chunks: "One. Two." is 2 tokens; the overlap repeats "Two." before "Three."
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from llm4all.localdocs.loaders import Block

CountTokens = Callable[[str], int]

#: Defaults, chosen on the retrieval benchmark (benchmarks/bench_localdocs_quality.py).
MAX_TOKENS = 160
OVERLAP = 32

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=\S)|\n(?=\s*[-*•\d])")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document sized for embedding, with where it came from."""

    text: str
    heading: str
    page: int | None
    line_start: int | None
    line_end: int | None
    n_tokens: int


@dataclass(frozen=True)
class _Unit:
    """The smallest piece chunking moves around: a sentence, a line, a table row."""

    text: str
    n_tokens: int
    line_start: int | None
    line_end: int | None
    joiner: str  # how it attaches to the unit before it ("\n" for lines, " " for sentences)


def split_sentences(text: str) -> list[str]:
    """Cut prose after sentence punctuation and before list items.

    Example: ``split_sentences("A b. C d! E") == ["A b.", "C d!", "E"]``
    """
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _units(block: Block, count: CountTokens, max_tokens: int) -> Iterator[_Unit]:
    """The block as units no longer than ``max_tokens`` each."""
    n = count(block.text)
    if n <= max_tokens:
        yield _Unit(block.text, n, block.line_start, block.line_end, "\n\n")
        return
    by_lines = block.kind in ("code", "row")
    pieces = block.text.splitlines() if by_lines else split_sentences(block.text)
    joiner = "\n" if by_lines else " "
    line = block.line_start
    start: int | None
    end: int | None
    for i, piece in enumerate(pieces):
        if by_lines and line is not None:
            start = end = line + i
        else:
            start, end = block.line_start, block.line_end
        size = count(piece)
        if size <= max_tokens:
            yield _Unit(piece, size, start, end, "\n\n" if i == 0 else joiner)
            continue
        for j, words in enumerate(_word_windows(piece, count, max_tokens)):
            yield _Unit(words, count(words), start, end, "\n\n" if i == j == 0 else " ")


def _word_windows(text: str, count: CountTokens, max_tokens: int) -> Iterator[str]:
    """Runs of whole words of at most ``max_tokens`` (a word longer than that stands alone)."""
    words = text.split()
    start = 0
    while start < len(words):
        end = start + 1
        while end < len(words) and count(" ".join(words[start : end + 1])) <= max_tokens:
            end += 1
        yield " ".join(words[start:end])
        start = end


def _sections(blocks: Iterable[Block]) -> Iterator[tuple[str, int | None, list[Block]]]:
    """Runs of non-heading blocks sharing a heading path and a page (a heading ends a run)."""
    key: tuple[str, int | None] = ("", None)
    run: list[Block] = []
    for block in blocks:
        if block.kind == "heading" or (block.heading, block.page) != key:
            if run:
                yield key[0], key[1], run
            key, run = (block.heading, block.page), []
        if block.kind != "heading":
            run.append(block)
    if run:
        yield key[0], key[1], run


def _pack(units: Sequence[_Unit], max_tokens: int, overlap: int) -> Iterator[list[_Unit]]:
    """Group units into chunks; each new chunk starts with the previous one's tail."""
    current: list[_Unit] = []
    used = 0
    for unit in units:
        if current and used + unit.n_tokens > max_tokens:
            yield current
            tail = _tail(current, overlap, max_tokens - unit.n_tokens)
            current, used = tail, sum(u.n_tokens for u in tail)
        current.append(unit)
        used += unit.n_tokens
    if current:
        yield current


def _tail(units: Sequence[_Unit], overlap: int, room: int) -> list[_Unit]:
    """The last units of a chunk totalling at most ``min(overlap, room)`` tokens."""
    budget = min(overlap, room)
    tail: list[_Unit] = []
    for unit in reversed(units):
        if unit.n_tokens > budget:
            break
        tail.insert(0, unit)
        budget -= unit.n_tokens
    return tail


def _join(units: Sequence[_Unit]) -> str:
    return "".join((u.joiner if i else "") + u.text for i, u in enumerate(units))


def _lines(units: Sequence[_Unit]) -> tuple[int | None, int | None]:
    starts = [u.line_start for u in units if u.line_start is not None]
    ends = [u.line_end for u in units if u.line_end is not None]
    return (min(starts) if starts else None, max(ends) if ends else None)


def chunk_blocks(
    blocks: Iterable[Block],
    count: CountTokens,
    max_tokens: int = MAX_TOKENS,
    overlap: int = OVERLAP,
) -> list[Chunk]:
    """Chunks of at most ``max_tokens`` tokens (by ``count``), sharing ``overlap`` tokens.

    Example: see the module docstring.
    """
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
    chunks: list[Chunk] = []
    for heading, page, run in _sections(blocks):
        units = [u for block in run for u in _units(block, count, max_tokens)]
        for group in _pack(units, max_tokens, overlap):
            text = _join(group)
            start, end = _lines(group)
            chunks.append(Chunk(text, heading, page, start, end, count(text)))
    return chunks


def fixed_size_chunks(text: str, size: int = 512) -> list[str]:
    """GPT4All's LocalDocs scheme: ``size``-character pieces, no overlap (the benchmark baseline).

    Example: ``fixed_size_chunks("abcdef", 4) == ["abcd", "ef"]``
    """
    return [text[i : i + size] for i in range(0, len(text), size) if text[i : i + size].strip()]
