"""From retrieved chunks to a prompt: numbered excerpts in, cited answers and references out.

The model sees an instruction to answer from the excerpts and cite them as
``[1]``, ``[2]``, the numbered excerpts, then the question; the caller gets the same
numbering back as references (file, page or lines, heading, the excerpt
itself), which the CLI prints under the answer, the chat store keeps in a
message's ``sources``, and the server returns with a response.

Every front end (``ChatSession``, ``llm4all run/chat --docs``, the web chat,
``/v1/chat/completions`` with ``collections``) goes through
:func:`documents_turn`, so they search and word the prompt alike. A follow-up
question ("how do I activate it?") is searched together with the earlier user
turns of the conversation (:func:`search_text`), and its own words are
searched alone as well, the two rankings fused (:func:`retrieve`): the
follow-up finds the page the conversation is about, and a question that
changes the subject still finds its own. The numbers behind each choice here
(conversational retrieval, how many excerpts, the wording, the answer length)
are measured by ``benchmarks/bench_localdocs_answers.py`` (docs/localdocs.md).

For the server (or any other caller)::

    user_content, references = documents_turn(question, ["notes"], earlier=["what is X?"])
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4all.localdocs.collections import CANDIDATES, Hit, LocalDocs
from llm4all.localdocs.search import query_terms, rrf

#: Chunks put into a prompt. Three, and other wordings (an answer in one or two sentences,
#: the question first and last, the citation first or last), were measured and did not
#: make the default model answer better (docs/localdocs.md, "Answers from documents").
TOP_K = 5
#: Earlier user turns searched together with a question (most recent last).
EARLIER_TURNS = 2
#: Default length of an answer from documents, in tokens, when the caller sets none: the
#: nearly all measured answers that finished took under 110; what runs on is pasted excerpts.
ANSWER_TOKENS = 256
INSTRUCTION = (
    "Answer the question using the excerpts from the user's documents below, "
    "and cite the excerpts you use by their number, like [1]."
)


@dataclasses.dataclass(frozen=True)
class DocumentsPrompt:
    """How a question from documents is worded: the instruction, how many excerpts, a reminder.

    The user turn is ``instruction``, the ``k`` numbered excerpts, ``Question: …``,
    then ``reminder`` on its own line when there is one.
    """

    instruction: str = INSTRUCTION
    k: int = TOP_K
    reminder: str = ""
    #: The citation step: an answer that ends (not at the length limit) without any ``[n]``
    #: is continued with `` [`` and a grammar allowing only the excerpts' numbers, so the
    #: model names the excerpt it used (:func:`citation_grammar`; engines with grammars only).
    cite: bool = True


_END_CITE = (
    "Answer the question in one or two sentences using the excerpts from the user's documents "
    "below, and end your answer with the number of the excerpt you used, like [1]."
)
_END_REMINDER = "Answer in one or two sentences and end with the [n] of the excerpt you used."
#: The wordings measured by ``benchmarks/bench_localdocs_sets_answers.py --prompt`` (docs/localdocs.md);
#: ``-no-step`` ones without the citation step.
PROMPTS = {
    "shipped": DocumentsPrompt(),
    "shipped-no-step": DocumentsPrompt(cite=False),
    "end-cite": DocumentsPrompt(_END_CITE, TOP_K, _END_REMINDER),
    "end-cite-no-step": DocumentsPrompt(_END_CITE, TOP_K, _END_REMINDER, cite=False),
    "end-cite-3": DocumentsPrompt(_END_CITE, 3, _END_REMINDER),
}
#: The wording every front end uses.
PROMPT = PROMPTS["shipped"]

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


def with_excerpts(question: str, excerpts: str, prompt: DocumentsPrompt | None = None) -> str:
    """The user turn with excerpts before the question (the question alone when there are none)."""
    if not excerpts:
        return question
    p = prompt or PROMPT
    reminder = f"\n{p.reminder}" if p.reminder else ""
    return f"{p.instruction}\n\n{excerpts}\n\nQuestion: {question}{reminder}"


def source_lines(refs: Sequence[dict[str, Any]]) -> list[str]:
    """One line per reference for a terminal: ``[1] /path/notes.md, lines 3–4 — Setup (cited)``.

    After an answer (references marked by :func:`annotate`) each line says how the
    answer used that excerpt (:func:`citation_note`).
    """
    lines = []
    for ref in refs:
        place = ", ".join(p for p in (str(ref["path"]), str(ref.get("location") or "")) if p)
        heading = f" — {ref['heading']}" if ref.get("heading") else ""
        note = citation_note(ref)
        lines.append(f"[{ref['index']}] {place}{heading}" + (f" ({note})" if note else ""))
    return lines


def shared_localdocs(path: str | None = None) -> LocalDocs:
    """One :class:`LocalDocs` per database file for the whole process (thread-safe)."""
    from llm4all.localdocs.db import default_path

    key = str(Path(path).resolve() if path else default_path().resolve())
    with _shared_lock:
        if key not in _shared:
            _shared[key] = LocalDocs(key)
        return _shared[key]


def search_text(question: str, earlier: Sequence[str] = (), turns: int = EARLIER_TURNS) -> str:
    """What a question is searched with in a conversation: the last ``turns`` user turns, then it.

    Example: ``search_text("how do I activate it?", ["what is a venv?"])``
    → ``"what is a venv?\nhow do I activate it?"``
    """
    kept = [t.strip() for t in earlier if t.strip()][-turns:] if turns > 0 else []
    return "\n".join([*kept, question.strip()])


def fuse_hits(rankings: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    """The ``k`` best of several rankings of hits by reciprocal rank (scores replaced by it)."""
    by_id = {h.chunk_id: h for ranking in rankings for h in ranking}
    fused = rrf([[h.chunk_id for h in ranking] for ranking in rankings])[:k]
    return [dataclasses.replace(by_id[i], score=score) for i, score in fused]


def retrieve(
    collections: Sequence[str],
    question: str,
    earlier: Sequence[str] = (),
    *,
    k: int = TOP_K,
    localdocs: LocalDocs | None = None,
) -> list[Hit]:
    """The ``k`` excerpts for ``question`` asked after the user turns ``earlier``.

    Without earlier turns this is one search. With them, the question with the
    recent turns and the question alone are searched, and the rankings fused.
    Raises :class:`~llm4all.localdocs.CollectionNotFound` for an unknown name.
    """
    if not collections:
        return []
    docs = localdocs or shared_localdocs()
    conversation = search_text(question, earlier)
    if conversation == question.strip():
        return docs.search(collections, question, k)
    rankings = [docs.search(collections, q, CANDIDATES) for q in (conversation, question)]
    return fuse_hits(rankings, k)


def build_context(
    collections: Sequence[str],
    query: str,
    *,
    earlier: Sequence[str] = (),
    k: int = TOP_K,
    localdocs: LocalDocs | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Retrieve for ``query`` in ``collections``: (numbered excerpt text, references).

    Raises :class:`~llm4all.localdocs.CollectionNotFound` for an unknown name.
    """
    hits = retrieve(collections, query, earlier, k=k, localdocs=localdocs)
    return format_excerpts(hits), references(hits)


def documents_turn(
    question: str,
    collections: Sequence[str],
    earlier: Sequence[str] = (),
    *,
    localdocs: LocalDocs | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """The user turn that asks ``question`` of ``collections``, and the references it cites.

    ``earlier`` are the conversation's previous user turns (oldest first). The
    turn is the question itself when no collection is named or nothing is found.
    """
    if not collections:
        return question, []
    p = PROMPT
    excerpts, refs = build_context(
        collections, question, earlier=earlier, k=p.k, localdocs=localdocs
    )
    return with_excerpts(question, excerpts, p), refs


def answer_tokens(max_tokens: int | None) -> int:
    """The length limit of an answer from documents: the caller's, else :data:`ANSWER_TOKENS`."""
    return max_tokens if max_tokens is not None else ANSWER_TOKENS


#: Most tokens the citation step may add (`` [``, the number's digits, ``]``).
CITE_TOKENS = 4


def has_citation(answer: str) -> bool:
    """Whether an answer holds any ``[n]`` marker. Example: ``has_citation("Yes [2].") is True``."""
    return _CITATION.search(answer) is not None


def citation_grammar(n_excerpts: int) -> str:
    """A GBNF grammar for the citation step: `` [``, one excerpt's number, ``]``.

    Example: ``citation_grammar(2) == 'root ::= " [" ("1" | "2") "]"'``.
    """
    numbers = " | ".join(f'"{i}"' for i in range(1, n_excerpts + 1))
    return f'root ::= " [" ({numbers}) "]"'


#: A citation is supported when at least this share of its sentence's significant words
#: occur in the cited excerpt.
SUPPORT = 0.3
_CITATION = re.compile(r"\[(\d+)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def check_citations(answer: str, refs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each ``[n]`` of an answer, with whether excerpt ``n`` supports the sentence that cites it.

    Support is the share of the sentence's significant words (three letters or
    more, not stopwords) found among the excerpt's words; a citation is
    ``supported`` at :data:`SUPPORT` or more. A marker standing alone after a
    sentence (``… Toy Story. [1]``) cites that sentence. A number with no
    excerpt, or a marker with no sentence before it, is unsupported. Example: with excerpt 1
    ``"Use apt-mark hold to keep a package"``, ``"Run apt-mark hold [1]."`` is supported
    and ``"Reinstall the kernel [1]."`` is not.
    """
    excerpts = {int(r["index"]): r.get("excerpt", "") for r in refs}
    found = []
    previous = ""
    for sentence in _SENTENCE_END.split(answer):
        numbers = [int(n) for n in _CITATION.findall(sentence)]
        words = [w for w in query_terms(_CITATION.sub(" ", sentence)) if len(w) >= 3]
        if (
            numbers and not words and previous
        ):  # "… Toy Story. [1]": the marker cites the sentence before
            sentence = f"{previous} {sentence.strip()}"
            words = [w for w in query_terms(_CITATION.sub(" ", previous)) if len(w) >= 3]
        if words:
            previous = sentence.strip()
        if not numbers:
            continue
        for number in dict.fromkeys(numbers):
            excerpt = excerpts.get(number)
            if excerpt is None or not words:
                support = 0.0
            else:
                have = set(query_terms(excerpt))
                support = sum(w in have for w in words) / len(words)
            found.append({"index": number, "sentence": sentence.strip(), "support": round(support, 3),
                          "supported": support >= SUPPORT})  # fmt: skip
    return found


#: A sentence is attributed to an excerpt (when the model cited none that supports it) at
#: this share of its significant words, and at least :data:`ATTRIBUTE_WORDS` of them: a
#: stricter bar than :data:`SUPPORT`, since no marker says the model used that excerpt.
ATTRIBUTE_SUPPORT = 0.5
ATTRIBUTE_WORDS = 2


def _support(words: Sequence[str], excerpt: str) -> tuple[float, int]:
    have = set(query_terms(excerpt))
    matched = sum(w in have for w in words)
    return (matched / len(words) if words else 0.0), matched


def attribute(answer: str, refs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which excerpt supports which sentence of an answer: the checked markers, else a match.

    The model's own ``[n]`` markers come first, each checked against its excerpt
    (:func:`check_citations`; ``"by": "model"``, ``supported`` true or false).
    When none of them is supported (the model cited nothing, or only excerpts
    that do not say what it wrote), each sentence of the answer is matched to
    the excerpt holding the largest share of its significant words, at least
    :data:`ATTRIBUTE_SUPPORT` and :data:`ATTRIBUTE_WORDS` of them (the
    better-ranked excerpt on a tie): ``"by": "attribution"``, always supported.
    Sentences no excerpt supports get no entry. Example: with excerpt 1
    ``"Use apt-mark hold to keep a package"``, the answer ``"Run apt-mark hold."``
    gives ``[{"index": 1, "sentence": "Run apt-mark hold.", "support": 0.667,
    "supported": True, "by": "attribution"}]``.
    """
    found = [c | {"by": "model"} for c in check_citations(answer, refs)]
    if any(c["supported"] for c in found):
        return found
    attributed = []
    for sentence in _SENTENCE_END.split(answer):
        text = sentence.strip()
        words = [w for w in query_terms(_CITATION.sub(" ", text)) if len(w) >= 3]
        if not words:
            continue
        best: tuple[float, int, int] | None = None  # (support, matched words, excerpt number)
        for ref in refs:
            support, matched = _support(words, str(ref.get("excerpt", "")))
            enough = support >= ATTRIBUTE_SUPPORT and matched >= ATTRIBUTE_WORDS
            if enough and (best is None or support > best[0]):
                best = (support, matched, int(ref["index"]))
        if best is not None:
            attributed.append({"index": best[2], "sentence": text, "support": round(best[0], 3),
                               "supported": True, "by": "attribution"})  # fmt: skip
    return found + attributed


def annotate(answer: str, refs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check an answer's citations and mark each reference with the sentences it supports.

    Each reference (changed in place, so every holder of the list sees it: the
    stored answer's sources, the server's references) gets ``"citations"``: its
    entries of :func:`attribute` without the index (empty when the answer does
    not use it). The answer's text is not touched: an unsupported ``[n]`` stays
    in it, marked ``"supported": false`` here. Returns :func:`attribute`'s list.
    """
    found = attribute(answer, refs)
    for ref in refs:
        number = int(ref["index"])
        ref["citations"] = [
            {k: v for k, v in c.items() if k != "index"} for c in found if c["index"] == number
        ]
    return found


def _short(sentence: str, limit: int = 70) -> str:
    one = re.sub(r"\s+(?=[.,;:!?])", "", " ".join(_CITATION.sub("", sentence).split()))
    return one if len(one) <= limit else one[: limit - 1].rstrip() + "…"


def citation_note(ref: dict[str, Any]) -> str:
    """How an answer used a reference, for its source line ("" when not checked or not used).

    Examples: ``"cited"``; ``"cited, but it does not say: “Reinstall the kernel.”"``;
    ``"not cited; it supports: “Run apt-mark hold.”"``.
    """
    notes = []
    by_model = [c for c in ref.get("citations") or () if c.get("by") == "model"]
    if any(c["supported"] for c in by_model):
        notes.append("cited")
    unsupported = [c for c in by_model if not c["supported"]]
    if unsupported:
        notes.append(f"cited, but it does not say: “{_short(unsupported[0]['sentence'])}”")
    matched = [c for c in ref.get("citations") or () if c.get("by") == "attribution"]
    if matched:
        notes.append(f"not cited; it supports: “{_short(matched[0]['sentence'])}”")
    return "; ".join(notes)
