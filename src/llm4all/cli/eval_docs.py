"""``llm4all eval docs COLLECTION QUESTIONS.jsonl``: how well LocalDocs answers a labelled set.

Retrieval figures (R@1, R@5, MRR over the top 10, passage R@5) always; with
``--answers N``, the first N questions are also answered by a model (any one
``llm4all`` can load, temperature 0) and each answer judged: right, cited (a
citation of an excerpt from a labelled file that supports its sentence), copied
(verbatim runs over ``--copy-limit`` of an excerpt); *sourced* also counts the
sentence the answer pipeline attributes to an excerpt of a labelled file when the
model cited none (what the user sees under the answer). The file format is in
:mod:`llm4all.evaluate.docs` and docs/localdocs.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from llm4all.cli._common import echo_json, err_console, load_model


@click.command(name="docs")
@click.argument("collection")
@click.argument("questions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--answers", "n_answers", type=int, default=0, show_default=True,
              help="Also answer the first N questions with --model and judge the answers.")  # fmt: skip
@click.option(
    "-m",
    "--model",
    "model_name",
    default=None,
    help="Model for --answers (default: the default model).",
)
@click.option(
    "-n", "--max-tokens", type=int, default=None, help="Answer length limit (default: LocalDocs')."
)
@click.option("--copy-limit", type=float, default=0.4, show_default=True,
              help="An answer copying more than this share of an excerpt verbatim is 'copied'.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print every figure and answer as JSON.")
def docs_command(
    collection: str,
    questions: Path,
    n_answers: int,
    model_name: str | None,
    max_tokens: int | None,
    copy_limit: float,
    as_json: bool,
) -> None:
    """Retrieval figures, and judged answers, of COLLECTION (or a,b) on QUESTIONS.jsonl.

    Each line: {"question": …, "documents": [file names], "evidence": [strings of those files],
    "answers": [what a right answer names]} (evidence and answers optional).
    """
    from llm4all.evaluate import docs as judge_docs
    from llm4all.localdocs.context import answer_tokens, shared_localdocs

    items = judge_docs.load_questions(questions)
    collections = [c for c in collection.split(",") if c]
    docs = shared_localdocs()
    result: dict[str, Any] = {"collections": collections, "questions_file": str(questions)}
    result["retrieval"] = judge_docs.retrieval(docs, collections, items)
    if n_answers > 0:
        model = load_model(model_name)
        rows = []
        for item in items[:n_answers]:
            t0 = time.perf_counter()
            response = model.stream(item["question"], collections=collections, temperature=0.0,
                                    max_tokens=answer_tokens(max_tokens))  # fmt: skip
            text = response.text()
            verdict = judge_docs.judge(text, response.sources, item, copy_limit)
            done = response.completion
            rows.append({"question": item["question"], "answer": text,
                         "tokens": done.usage.completion_tokens if done else 0,
                         "seconds": round(time.perf_counter() - t0, 1), **verdict})  # fmt: skip
            if not as_json:
                marks = " ".join(
                    k for k in ("right", "cited", "sourced", "copied", "good") if verdict[k]
                )
                err_console.print(
                    f"[dim]{len(rows)}/{n_answers}[/] {item['question'][:60]!r}: {marks or '-'}"
                )
        result["answers"] = {
            "model": model.name,
            "summary": judge_docs.summarise_answers(rows),
            "rows": rows,
        }
    if as_json:
        echo_json(result)
        return
    s = result["retrieval"]["summary"]
    click.echo(
        f"retrieval ({s['questions']} questions): R@1 {s['r@1']:.3f}  R@5 {s['r@5']:.3f}  "
        f"MRR@10 {s['mrr']:.3f}  passage R@5 {s['passage r@5']:.3f}"
    )
    if "answers" in result:
        a = result["answers"]["summary"]
        click.echo(
            f"answers by {result['answers']['model']} ({a['questions']}): good {a['good']}, "
            f"right {a['right']}, cited the right file {a['cited']}, copied {a['copied']}; "
            f"with the sources found after the answer: sourced {a['sourced']}, "
            f"good {a['good_sourced']}; median {a['median_tokens']} tokens"
        )
