"""From retrieved chunks to a prompt: numbered excerpts in, cited answers and references out.

The model sees the question preceded by numbered excerpts and an instruction
to cite them as ``[1]``, ``[2]``; the caller gets the same numbering back as
references (file, page or lines, heading, the excerpt itself), which the CLI
prints under the answer, the chat store keeps in a message's ``sources``, and
the server returns with a response. Everything here but :func:`build_context`
is pure.

For the server (or any other caller)::

    excerpts, references = build_context(["notes"], question)
    user_content = with_excerpts(question, excerpts)   # put this in the user turn
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4all.localdocs.collections import Hit, LocalDocs

#: Chunks put into a prompt.
TOP_K = 5
# Instruction first, each excerpt's text before its label: small models (0.5B) then
# answer from the text and cite "[1]" instead of copying the label back.
INSTRUCTION = (
    "Answer the question using the excerpts from the user's documents below, "
    "and cite the excerpts you use by their number, like [1]."
)

_shared: dict[str, LocalDocs] = {}
_shared_lock = threading.Lock()


def format_excerpts(hits: Sequence[Hit]) -> str:
    """Numbered excerpts, one block each, ready for a prompt ("" when there are none).

    Example: one hit in ``notes.md`` lines 3–4 under "Setup" →
    ``"[1] <text>\\n(from notes.md, lines 3–4 — Setup)"``.
    """
    return "\n\n".join(f"[{i}] {h.text.strip()}\n(from {_label(h)})" for i, h in enumerate(hits, 1))


def _label(hit: Hit) -> str:
    place = ", ".join(p for p in (Path(hit.path).name, hit.location) if p)
    return f"{place} — {hit.heading}" if hit.heading else place


def references(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """JSON-ready references, numbered as in :func:`format_excerpts`."""
    return [
        {
            "index": i,
            "collection": h.collection,
            "path": h.path,
            "file": Path(h.path).name,
            "location": h.location,
            "page": h.page,
            "line_start": h.line_start,
            "line_end": h.line_end,
            "heading": h.heading,
            "excerpt": h.text,
            "score": round(h.score, 6),
        }
        for i, h in enumerate(hits, 1)
    ]


def with_excerpts(question: str, excerpts: str) -> str:
    """The user turn with excerpts before the question (the question alone when there are none)."""
    if not excerpts:
        return question
    return f"{INSTRUCTION}\n\n{excerpts}\n\nQuestion: {question}"


def source_lines(refs: Sequence[dict[str, Any]]) -> list[str]:
    """One line per reference for a terminal: ``[1] /path/notes.md, lines 3–4 — Setup``."""
    lines = []
    for ref in refs:
        place = ", ".join(p for p in (str(ref["path"]), str(ref.get("location") or "")) if p)
        heading = f" — {ref['heading']}" if ref.get("heading") else ""
        lines.append(f"[{ref['index']}] {place}{heading}")
    return lines


def shared_localdocs(path: str | None = None) -> LocalDocs:
    """One :class:`LocalDocs` per database file for the whole process (thread-safe)."""
    from llm4all.localdocs.db import default_path

    key = str(Path(path).resolve() if path else default_path().resolve())
    with _shared_lock:
        if key not in _shared:
            _shared[key] = LocalDocs(key)
        return _shared[key]


def build_context(
    collections: Sequence[str],
    query: str,
    *,
    k: int = TOP_K,
    localdocs: LocalDocs | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Retrieve for ``query`` in ``collections``: (numbered excerpt text, references).

    Raises :class:`~llm4all.localdocs.CollectionNotFound` for an unknown name.
    """
    if not collections:
        return "", []
    hits = (localdocs or shared_localdocs()).search(collections, query, k)
    return format_excerpts(hits), references(hits)
