"""Judge LocalDocs on a labelled question set: retrieval figures and answers from documents.

A question set is a JSON Lines file, one question a line::

    {"question": "Which file lists the name servers?", "documents": ["resolv.conf.5.txt"],
     "evidence": ["nameserver Name server IP address"], "answers": ["resolv.conf"]}

``documents`` are file names (or paths ending so) that answer it; ``evidence``
(optional) short strings of those files that hold the answer; ``answers``
(optional) what a right answer names. Retrieval is scored at file level (R@1,
R@5, MRR over the top 10) and passage level (a top-5 excerpt from a labelled
file holds an evidence string). An answer is judged *right* when it names one
of ``answers`` (without them: when it holds at least half the words of an
evidence string), *cited* when one of its ``[n]`` markers points at an excerpt
of a labelled file and that excerpt supports its sentence
(:func:`llm4all.localdocs.context.check_citations`), and *copied* when its runs of
12 words or more taken verbatim from one excerpt cover more than ``copy_limit``
of that excerpt. *Good* is right, cited and not copied; *sourced* and
*good_sourced* also count the sentence the answer pipeline attributes to an
excerpt of a labelled file when the model cited none.

Example::

    items = load_questions(Path("my_questions.jsonl"))
    figures = retrieval(LocalDocs(), ["notes"], items)["summary"]   # {"r@1": …, "r@5": …, …}
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4all.evaluate.sets import EvalDataError

#: Excerpts scored for retrieval (MRR over this many).
TOP = 10
#: A verbatim run of this many words counts as copying.
COPY_RUN = 12
#: An answer is *copied* when its verbatim runs cover more than this share of one excerpt.
COPY_LIMIT = 0.4
_WORDS = re.compile(r"\S+")
_CONTENT = re.compile(r"\w+")


def load_questions(path: Path) -> list[dict[str, Any]]:
    """The questions of a JSON Lines file; a bad line is one :class:`EvalDataError` naming it."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalDataError(str(path), f"cannot read it: {exc}") from exc
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalDataError(str(path), f"not JSON ({exc.msg})", n) from exc
        if not isinstance(item, dict) or not isinstance(item.get("question"), str):
            raise EvalDataError(str(path), 'needs a "question" string', n)
        documents = item.get("documents")
        if (
            not isinstance(documents, list)
            or not documents
            or not all(isinstance(d, str) for d in documents)
        ):
            raise EvalDataError(str(path), 'needs "documents", a list of file names', n)
        for key in ("evidence", "answers"):
            value = item.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise EvalDataError(str(path), f'"{key}" must be a list of strings', n)
        items.append(item)
    if not items:
        raise EvalDataError(str(path), "no questions")
    return items


def normalise(text: str) -> str:
    """Whitespace collapsed. Example: ``normalise("a  b\\n c") == "a b c"``."""
    return " ".join(text.split())


def from_labelled(path: str, documents: Sequence[str]) -> bool:
    """Whether ``path`` is one of the labelled files (by name, or a path it ends with).

    Example: ``from_labelled("/d/faq/kernel.html", ["kernel.html"]) is True``
    """
    p = Path(path).as_posix()
    return any(p == d or p.endswith("/" + d.lstrip("/")) for d in documents)


def holds_evidence(text: str, item: dict[str, Any]) -> bool:
    """Whether an excerpt holds one of the item's evidence strings (whitespace normalised)."""
    body = normalise(text)
    return any(normalise(e) in body for e in item.get("evidence", []))


def ranks(hits: Sequence[Any], item: dict[str, Any]) -> tuple[int | None, bool]:
    """(rank of the first hit from a labelled file within :data:`TOP`, passage hit in the top 5)."""
    file_rank = next(
        (n for n, h in enumerate(hits[:TOP], 1) if from_labelled(h.path, item["documents"])), None
    )
    passage = any(
        from_labelled(h.path, item["documents"]) and holds_evidence(h.text, item) for h in hits[:5]
    )
    return file_rank, passage


def summarise_ranks(rows: Sequence[tuple[int | None, bool]]) -> dict[str, float]:
    """R@1, R@5, MRR@10 and passage R@5 of (file rank, passage hit) rows.

    Example: ``summarise_ranks([(1, True), (None, False)])["mrr"] == 0.5``
    """
    n = max(1, len(rows))
    return {
        "r@1": sum(r == 1 for r, _ in rows) / n,
        "r@5": sum(r is not None and r <= 5 for r, _ in rows) / n,
        "mrr": sum(1 / r for r, _ in rows if r) / n,
        "passage r@5": sum(p for _, p in rows) / n,
        "questions": len(rows),
    }


def retrieval(
    docs: Any, collections: Sequence[str], items: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Search every question in ``collections`` with ``docs`` (a LocalDocs): per question and summary."""
    per_question = []
    rows = []
    for item in items:
        hits = docs.search(collections, item["question"], TOP)
        file_rank, passage = ranks(hits, item)
        rows.append((file_rank, passage))
        per_question.append({"question": item["question"], "file_rank": file_rank,
                             "passage_at_5": passage,
                             "top": [Path(h.path).name for h in hits[:5]]})  # fmt: skip
    return {"summary": summarise_ranks(rows), "questions": per_question}


def copied_share(answer: str, excerpt: str, run: int = COPY_RUN) -> float:
    """The share of ``excerpt``'s words that ``answer`` repeats in runs of ``run`` words or more.

    Example: an answer that pastes the whole excerpt scores 1.0; one in its own words 0.0.
    """
    a = [w.lower() for w in _WORDS.findall(answer)]
    e = [w.lower() for w in _WORDS.findall(excerpt)]
    if len(e) < run or len(a) < run:
        return 0.0
    grams = {tuple(a[i : i + run]) for i in range(len(a) - run + 1)}
    covered = [False] * len(e)
    for i in range(len(e) - run + 1):
        if tuple(e[i : i + run]) in grams:
            covered[i : i + run] = [True] * run
    return sum(covered) / len(e)


def is_right(answer: str, item: dict[str, Any]) -> bool:
    """Whether the answer names one of ``answers``, or holds half the words of an evidence string.

    Example: ``is_right("Use apt-mark hold.", {"answers": ["apt-mark hold"]}) is True``
    """
    low = answer.lower()
    if item.get("answers"):
        return any(a.lower() in low for a in item["answers"])
    said = set(_CONTENT.findall(low))
    for evidence in item.get("evidence", []):
        words = set(_CONTENT.findall(evidence.lower()))
        if words and len(words & said) / len(words) >= 0.5:
            return True
    return False


def judge(
    answer: str,
    refs: Sequence[dict[str, Any]],
    item: dict[str, Any],
    copy_limit: float = COPY_LIMIT,
) -> dict[str, Any]:
    """Right, cited, copied, good; the same with post-hoc attribution; and the citations.

    *cited* counts the model's own markers only (a supported ``[n]`` of an
    excerpt from a labelled file); *sourced* also counts a sentence the answer
    pipeline attributes to such an excerpt when the model cited none
    (:func:`llm4all.localdocs.context.attribute`), as the user sees it under the
    answer. *good* uses *cited*, *good_sourced* uses *sourced*.
    """
    from llm4all.localdocs.context import attribute

    citations = attribute(answer, refs)
    by_index = {r["index"]: r for r in refs}

    def labelled(by: str) -> bool:
        return any(
            c["supported"]
            and c["by"] == by
            and from_labelled(by_index[c["index"]]["path"], item["documents"])
            for c in citations
            if c["index"] in by_index
        )

    cited = labelled("model")
    sourced = cited or labelled("attribution")
    copied = max((copied_share(answer, r["excerpt"]) for r in refs), default=0.0)
    right = is_right(answer, item)
    kept = copied <= copy_limit
    return {"right": right, "cited": cited, "sourced": sourced, "copied": not kept,
            "copied_share": round(copied, 3), "good": right and cited and kept,
            "good_sourced": right and sourced and kept, "citations": citations}  # fmt: skip


def summarise_answers(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts of right, cited, copied and good answers, and the median answer length in tokens."""
    n = len(rows)
    tokens = sorted(r.get("tokens", 0) for r in rows)
    return {
        "questions": n,
        **{
            key: sum(bool(r.get(key)) for r in rows)
            for key in ("right", "cited", "sourced", "copied", "good", "good_sourced")
        },
        "good_share": sum(bool(r["good"]) for r in rows) / max(1, n),
        "good_sourced_share": sum(bool(r.get("good_sourced")) for r in rows) / max(1, n),
        "median_tokens": tokens[n // 2] if n else 0,
    }
