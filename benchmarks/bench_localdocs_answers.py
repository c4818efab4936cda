"""LocalDocs answers: conversational retrieval and the documents prompt, measured.

Corpus: Debian's ``manpages`` pages (``_localdocs_corpus.py``): the pages the
questions below are about plus unrelated pages as distractors, indexed by
``LocalDocs`` as shipped (vectors cached on disk, ``_embedding_cache.py``).

**Retrieval in a conversation** (``data/manpages_followups.jsonl``): follow-up
questions written from the labelled questions so that they lean on an earlier
turn ("What are POSIX message queues?" → "Where can they be mounted?"), and
the same number of *topic switches* (a labelled question asked right after an
unrelated earlier turn), which conversational retrieval must not spoil. Each
strategy is scored by page-level recall@5 and MRR@20 (the excerpt comes from
a labelled page):

- ``alone``: the question alone (before);
- ``with N turns``: the question after the last N user turns, one search;
- ``fused``: that search and the question alone, fused by reciprocal rank
  (``llm4all.localdocs.retrieve`` as shipped);
- ``rewrite``: the default model rewrites the question to stand alone (one
  generation per question; its time is reported).

**Answers** (``data/manpages_answers.jsonl``): labelled questions with what a
right answer names (``"/etc/shells"``, ``"PIPE_BUF"``). Each prompt variant
answers every question with the default model at temperature 0 and a bounded
``max_tokens``; an answer is judged

- *right*: it names one of the answer strings (case-insensitive);
- *cited*: it cites ``[n]`` for an excerpt from a labelled page;
- *copied*: a run of 12 or more words is taken verbatim from an excerpt and
  the answer's words in such runs are over 40 % of some excerpt's words;
- *good*: right, cited and not copied.

Example: ``python benchmarks/bench_localdocs_answers.py --quick`` (12 questions,
the prompt before and as shipped: about 10 minutes of two busy cores); add
``--variant NAME`` to measure one prompt (added to the last results file).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _harness as h
import _localdocs_corpus as corpus_mod
from _embedding_cache import CachedEmbedder
from bench_localdocs_quality import scores
from llm4all.evaluate.docs import copied_share

NAME = "localdocs_answers"
TOP = 20
FOLLOWUPS = h.BENCH_DIR / "data" / "manpages_followups.jsonl"
ANSWERS = h.BENCH_DIR / "data" / "manpages_answers.jsonl"
#: Unrelated pages added to the labelled ones.
DISTRACTORS = 30
#: The share of an excerpt that makes a copy (runs of COPY_RUN words, llm4all.evaluate.docs).
COPY_SHARE = 0.4
_CITE = re.compile(r"\[(\d+)\]")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


# -- judging an answer (pure) ------------------------------------------------------------------
def judge(answer: str, refs: Sequence[dict[str, Any]], item: dict[str, Any]) -> dict[str, Any]:
    """Right, cited, copied and good for one answer (see the module docstring)."""
    right = any(key.lower() in answer.lower() for key in item["answer"])
    right_refs = {
        r["index"] for r in refs if corpus_mod.document_of(r["path"]) in item["documents"]
    }
    cited_numbers = {int(n) for n in _CITE.findall(answer)}
    copy = max((copied_share(answer, r["excerpt"]) for r in refs), default=0.0)
    cited = bool(cited_numbers & right_refs)
    copied = copy > COPY_SHARE
    return {"right": right, "cited": cited, "copied": copied, "copy_share": round(copy, 3),
            "good": right and cited and not copied}  # fmt: skip


# -- prompt variants -------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """How the documents turn is built: excerpts, their wording and where the question goes."""

    k: int
    build: Callable[[str, str], str]  # (question, numbered excerpts) -> user turn


def _before(question: str, excerpts: str) -> str:
    """The prompt as shipped before this measurement: instruction, 5 excerpts, question last."""
    instruction = (
        "Answer the question using the excerpts from the user's documents below, "
        "and cite the excerpts you use by their number, like [1]."
    )
    return f"{instruction}\n\n{excerpts}\n\nQuestion: {question}"


def _shipped(question: str, excerpts: str) -> str:
    from llm4all.localdocs import with_excerpts

    return with_excerpts(question, excerpts)


def _question_first(question: str, excerpts: str) -> str:
    return (
        f"Question: {question}\n\nExcerpts from the user's documents:\n\n{excerpts}\n\n"
        "Answer the question in your own words, in a few sentences, using only what the "
        "excerpts say. Do not copy the excerpts. Cite the excerpt you used by its number, "
        f"like [1].\n\nQuestion: {question}"
    )


def _short(question: str, excerpts: str) -> str:
    instruction = (
        "Answer the question using the excerpts from the user's documents below. Answer in "
        "one or two sentences of your own, and cite the excerpt you used by its number, like [1]."
    )
    return f"{instruction}\n\n{excerpts}\n\nQuestion: {question}"


def _answer_then_cite(question: str, excerpts: str) -> str:
    instruction = (
        "Answer the question from the excerpts of the user's documents below, in one or two "
        "sentences of your own. Give the answer itself (a name, a number, a command), then the "
        "number of the excerpt it comes from in brackets, like this: "
        "The capital of France is Paris [2]."
    )
    return f"{instruction}\n\n{excerpts}\n\nQuestion: {question}"


def _cite_first(question: str, excerpts: str) -> str:
    instruction = (
        "Answer the question using the excerpts from the user's documents below. Start with "
        "the number of the excerpt that answers it, like [1], then answer in one or two "
        "sentences of your own."
    )
    return f"{instruction}\n\n{excerpts}\n\nQuestion: {question}"


def _short_cite_last(question: str, excerpts: str) -> str:
    return (
        f"{_short(question, excerpts)}\n\nAnswer in one or two sentences of your own, and "
        "end with the number of the excerpt you used, like [1]."
    )


VARIANTS: dict[str, Variant] = {
    "before: 5 excerpts, question last": Variant(5, _before),
    "before's wording, 3 excerpts": Variant(3, _before),
    "short answer asked, 5 excerpts": Variant(5, _short),
    "short answer asked, 3 excerpts": Variant(3, _short),
    "short answer asked, citation asked again last; 3 excerpts": Variant(3, _short_cite_last),
    "cite first, then a short answer; 3 excerpts": Variant(3, _cite_first),
    "answer, then cite; 3 excerpts": Variant(3, _answer_then_cite),
    "answer, then cite; 5 excerpts": Variant(5, _answer_then_cite),
    "question first and last, own words, 3 excerpts": Variant(3, _question_first),
    "question first and last, own words, 5 excerpts": Variant(5, _question_first),
    "as shipped": Variant(0, _shipped),  # k = 0: llm4all.localdocs.context.TOP_K
}


# -- the corpus --------------------------------------------------------------------------------
def subset(folder: Path, documents: set[str], n_extra: int) -> Path:
    """The labelled pages plus the first ``n_extra`` others, copied into a temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="llm4all-ld-answers-"))
    pages = sorted(folder.glob("*.txt"))
    others = [p for p in pages if corpus_mod.document_of(str(p)) not in documents]
    for p in [
        *(p for p in pages if corpus_mod.document_of(str(p)) in documents),
        *others[:n_extra],
    ]:
        shutil.copy(p, out / p.name)
    return out


# -- conversational retrieval ----------------------------------------------------------------
def retrieval(docs: Any, followups: list[dict[str, Any]], switches: list[dict[str, Any]],
              rewriter: Callable[[list[str], str], str] | None) -> dict[str, Any]:  # fmt: skip
    from llm4all.localdocs.context import fuse_hits, search_text

    def search(q: str) -> list[Any]:
        return list(docs.search(["man"], q, TOP))

    strategies: dict[str, Callable[[list[str], str], list[Any]]] = {
        "alone": lambda earlier, q: search(q),
        "with 1 turn": lambda earlier, q: search(search_text(q, earlier, 1)),
        "with 2 turns": lambda earlier, q: search(search_text(q, earlier, 2)),
        "fused, 1 turn": lambda earlier, q: fuse_hits(
            [search(search_text(q, earlier, 1)), search(q)], TOP
        ),
        "fused, 2 turns": lambda earlier, q: fuse_hits(
            [search(search_text(q, earlier, 2)), search(q)], TOP
        ),
    }
    out: dict[str, Any] = {}
    rewrite_seconds: list[float] = []
    if rewriter is not None:

        def rewritten(earlier: list[str], q: str) -> list[Any]:
            t0 = time.perf_counter()
            text = rewriter(earlier, q)
            rewrite_seconds.append(time.perf_counter() - t0)
            return search(text)

        strategies["rewrite (default model)"] = rewritten
    for name, strategy in strategies.items():
        row: dict[str, Any] = {}
        for kind, items in (("follow-ups", followups), ("topic switches", switches)):
            got = [[(corpus_mod.document_of(x.path), x.text) for x in strategy(i["earlier"], i["question"])]
                   for i in items]  # fmt: skip
            row[kind] = scores(got, items, passage=False)
        out[name] = row
        h.note(f"retrieval {name}: {row}")
    if rewrite_seconds:
        out["rewrite (default model)"]["seconds_per_question"] = statistics.median(rewrite_seconds)
    return out


def make_rewriter(model: Any) -> Callable[[list[str], str], str]:
    def rewrite(earlier: list[str], question: str) -> str:
        turns = "\n".join(f"- {t}" for t in earlier)
        prompt = (
            f"Earlier questions:\n{turns}\n\nFollow-up question: {question}\n\n"
            "Rewrite the follow-up question so that it can be understood without the "
            "earlier questions. Reply with the rewritten question only."
        )
        return str(model.generate(prompt, temperature=0, max_tokens=48)).strip() or question

    return rewrite


# -- answers -------------------------------------------------------------------------------------
def answers(model: Any, docs: Any, items: list[dict[str, Any]], variants: dict[str, Variant],
            max_tokens: int) -> dict[str, Any]:  # fmt: skip
    from llm4all.localdocs import format_excerpts, references
    from llm4all.localdocs.context import TOP_K

    results: dict[str, Any] = {}
    for name, variant in variants.items():
        rows = []
        for item in items:
            hits = docs.search(["man"], item["question"], variant.k or TOP_K)
            refs = references(hits)
            turn = variant.build(item["question"], format_excerpts(hits))
            t0 = time.perf_counter()
            response = model.chat(temperature=0).send(turn, max_tokens=max_tokens)
            text = response.text()
            done = response.completion
            rows.append({"question": item["question"], "answer": text,
                         "seconds": round(time.perf_counter() - t0, 2),
                         "tokens": done.usage.completion_tokens, "prompt_tokens": done.usage.prompt_tokens,
                         "finish_reason": done.finish_reason, **judge(text, refs, item)})  # fmt: skip
        results[name] = {"rows": rows, **summarise(rows)}
        h.note(f"answers {name}: { {k: v for k, v in results[name].items() if k != 'rows'} }")
    return results


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    n = max(1, len(rows))
    stopped = [r["tokens"] for r in rows if r["finish_reason"] == "stop"]
    return {
        **{k: sum(bool(r[k]) for r in rows) / n for k in ("right", "cited", "copied", "good")},
        "median_tokens": statistics.median(r["tokens"] for r in rows) if rows else 0,
        "max_tokens_of_finished": max(stopped, default=0),
        "truncated": sum(r["finish_reason"] == "length" for r in rows) / n,
        "median_seconds": statistics.median(r["seconds"] for r in rows) if rows else 0,
        "median_prompt_tokens": statistics.median(r["prompt_tokens"] for r in rows) if rows else 0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="12 answer questions; the prompt before and as shipped"
    )
    p.add_argument("--model", default=h.DEFAULT_MODEL, help="the answering model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=200, help="bound on each answer")
    p.add_argument("--no-rewrite", action="store_true", help="skip the model-rewrite strategy")
    p.add_argument("--no-answers", action="store_true", help="measure retrieval only")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        choices=sorted(VARIANTS),
        help="measure only this prompt (repeatable); added to the last results file",
    )
    args = p.parse_args()
    from llm4all.api import Model
    from llm4all.embeddings import Embedder
    from llm4all.localdocs import LocalDocs

    labelled = corpus_mod.questions()
    followups = [labelled[f["of"]] | f for f in _jsonl(FOLLOWUPS)]
    # A topic switch: the next follow-up's labelled question, asked after an unrelated turn.
    switches = [labelled[b["of"]] | {"earlier": a["earlier"]}
                for a, b in zip(followups, [*followups[1:], followups[0]], strict=True)]  # fmt: skip
    asked = [labelled[a["of"]] | a for a in _jsonl(ANSWERS)]
    if args.quick:
        asked = asked[::2]
    quick = ("before: 5 excerpts, question last", "as shipped")
    picked = {n: VARIANTS[n] for n in args.variant} or {
        n: v for n, v in VARIANTS.items() if n in quick or not args.quick
    }
    documents = {d for q in [*followups, *asked] for d in q["documents"]}
    folder = subset(corpus_mod.corpus(), documents, DISTRACTORS)
    embedder = CachedEmbedder(Embedder(n_threads=args.threads))
    machine, load = h.machine_info(), h.load_average()
    h.note(f"{NAME}: {len(list(folder.glob('*.txt')))} pages, load {load}")
    model = None
    if not (args.no_rewrite and args.no_answers):
        model = Model(args.model, n_threads=args.threads, n_ctx=4096)
    payload: dict[str, Any] = {"benchmark": NAME, "quick": args.quick, "machine": machine,
                               "load_before": load, "model": args.model, "max_tokens": args.max_tokens}  # fmt: skip
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalDocs(Path(tmp) / "ld.db", embedder_factory=lambda _: embedder) as docs,
    ):
        docs.add("man", [folder])
        t0 = time.perf_counter()
        report = docs.index("man")
        h.note(f"indexed {report.chunks_added} chunks in {time.perf_counter() - t0:.0f} s")
        rewriter = None if args.no_rewrite or model is None else make_rewriter(model)
        payload["retrieval"] = retrieval(docs, followups, switches, rewriter)
        if not args.no_answers:
            payload["answers"] = answers(model, docs, asked, picked, args.max_tokens)
    payload["load_after"] = h.load_average()
    shutil.rmtree(folder, ignore_errors=True)
    previous = h.RESULTS / f"{NAME}.json"
    if args.variant and "answers" in payload and previous.exists():  # add to the last full run
        kept = json.loads(previous.read_text("utf-8")).get("answers", {})
        payload["answers"] = {**kept, **payload["answers"]}
    _report(payload)
    h.write_json(NAME, False, payload)


def _report(payload: dict[str, Any]) -> None:
    rows = [[name, f"{r['follow-ups']['recall@5']:.3f}", f"{r['follow-ups']['mrr']:.3f}",
             f"{r['topic switches']['recall@5']:.3f}", f"{r['topic switches']['mrr']:.3f}"]
            for name, r in payload["retrieval"].items()]  # fmt: skip
    h.print_table("Retrieval in a conversation (page level)",
                  ["strategy", "follow-up R@5", "follow-up MRR", "switch R@5", "switch MRR"], rows)  # fmt: skip
    if "answers" in payload:
        rows = [[name, f"{r['good']:.2f}", f"{r['right']:.2f}", f"{r['cited']:.2f}", f"{r['copied']:.2f}",
                 f"{r['truncated']:.2f}", str(r["median_tokens"]), f"{r['median_seconds']:.1f}"]
                for name, r in payload["answers"].items()]  # fmt: skip
        h.print_table("Answers (default model, temperature 0)",
                      ["prompt", "good", "right", "cited", "copied", "hit max_tokens", "median tokens",
                       "median s"], rows)  # fmt: skip


if __name__ == "__main__":
    main()
