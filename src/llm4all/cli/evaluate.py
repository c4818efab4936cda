"""``llm4all eval``: evaluate models: ground-truth perplexity and side-by-side answers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from llm4all.cli._common import err_console


@click.group(name="eval")
def eval_group() -> None:
    """Evaluate models: ground-truth perplexity and side-by-side answers."""


def _slug(name: str) -> str:
    """A file name for a model name. Example: ``"hf.co/a/b:Q4"`` → ``"hf.co_a_b_Q4"``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name if "/" in name else name).strip("_")


@eval_group.command(name="perplexity")
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--data",
    default="self-instruct",
    show_default=True,
    help="Reference answers: 'self-instruct' (252, shipped) or a data file in any format "
    "`llm4all data` reads (the last assistant message is the reference).",
)
@click.option(
    "--gpt4all-variant",
    is_flag=True,
    help="Compute what GPT4All's eval_self_instruct.py did (answer scored without its prompt; "
    "see docs/evaluation.md) instead of the answer's perplexity given its prompt.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "llamacpp", "transformers"]),
    default="auto",
    show_default=True,
    help="auto: transformers for a Hugging Face folder, llama.cpp for a GGUF.",
)
@click.option("--n-ctx", type=click.IntRange(64), default=4096, show_default=True,
              help="Context window; longer texts are scored with a sliding window.")  # fmt: skip
@click.option("--limit", type=click.IntRange(1), help="Score only the first N examples.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("eval-perplexity"),
    show_default=True,
    help="Folder for per-example JSONL, summary.md/json and perplexity_hist.png.",
)
def perplexity_command(
    models: tuple[str, ...],
    data: str,
    gpt4all_variant: bool,
    backend: str,
    n_ctx: int,
    limit: int | None,
    out: Path,
) -> None:
    """Ground-truth perplexity of each MODEL on reference answers (lower is better).

    Each reference answer is scored after its prompt in the model's chat format;
    only the answer's tokens count. Prints a summary table; writes per-example
    values, the summary and an overlaid histogram of the models under --out.
    """
    from llm4all.cli.progress import CountProgress
    from llm4all.evaluate import perplexity as ppl
    from llm4all.evaluate.sets import load_examples

    if len(set(models)) != len(models):
        raise click.BadParameter("a model is named twice", param_hint="MODELS")
    examples = load_examples(data, limit)  # bad data fails before any model loads
    summaries: list[dict[str, Any]] = []
    per_model: dict[str, list[float]] = {}
    for ref in models:
        with ppl.open_subject(ref, backend, n_ctx) as subject, CountProgress() as bar:
            bar.start(len(examples), f"{subject.name} ({subject.backend})")
            target = out / f"{_slug(ref)}.jsonl"
            rows = ppl.evaluate(
                subject,
                examples,
                target,
                variant=gpt4all_variant,
                progress=lambda _: bar.advance(1),
            )
            bar.done()
        summaries.append(ppl.summary_row(ref, rows) | {"file": str(target)})
        per_model[ref] = [r["perplexity"] or float("nan") for r in rows]
    method = "GPT4All's variant" if gpt4all_variant else "ground-truth perplexity"
    table = ppl.markdown_table(summaries)
    (out / "summary.md").write_text(f"{method} on {data} ({len(examples)} examples)\n\n{table}")
    (out / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    figure = ppl.histogram(per_model, out / "perplexity_hist.png", f"{method}, {data}")
    click.echo(table, nl=False)
    err_console.print(f"per-example values, summary and {figure.name} in {out}/", markup=False)


@eval_group.command(name="compare")
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--questions",
    default="vicuna80",
    show_default=True,
    help="'vicuna80' (80 open questions), 'seed' (3 Chinese questions, checked automatically) "
    "or a JSONL file with a 'text' per row.",
)
@click.option("--judge", "judge_ref", help="A local chat model that compares each pair of answers.")
@click.option(
    "--temperature",
    type=click.FloatRange(0, 5),
    default=0.0,
    show_default=True,
    help="0 (greedy): the same answers on every run and machine.",
)
@click.option("--seed", type=click.IntRange(0), default=42, show_default=True,
              help="Sampling seed (for a temperature above 0).")  # fmt: skip
@click.option("--max-tokens", type=click.IntRange(1), default=512, show_default=True)
@click.option("--limit", type=click.IntRange(1), help="Only the first N questions.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("eval-compare"),
    show_default=True,
    help="Folder for report.md, report.html, answers.jsonl (and verdicts.jsonl).",
)
def compare_command(
    models: tuple[str, ...],
    questions: str,
    judge_ref: str | None,
    temperature: float,
    seed: int,
    max_tokens: int,
    limit: int | None,
    out: Path,
) -> None:
    """Every MODEL answers every question; one report with the answers side by side.

    With --judge, the judge compares each pair of answers in both orders and a
    winner counts only when both orders agree.
    """
    import datetime

    from llm4all.cli.progress import CountProgress
    from llm4all.evaluate import compare, report
    from llm4all.evaluate.sets import load_questions
    from llm4all.params import GenerationParams

    if len(set(models)) != len(models):
        raise click.BadParameter("a model is named twice", param_hint="MODELS")
    asked = load_questions(questions, limit)  # bad input fails before any model loads
    params = GenerationParams(temperature=temperature, seed=seed, max_tokens=max_tokens)
    answers: dict[str, dict[str, compare.Answer]] = {}
    with CountProgress() as bar:
        for ref in models:
            bar.start(len(asked), f"{ref} answers")
            got = compare.answer_all(ref, asked, params, progress=lambda: bar.advance(1))
            answers[ref] = {a.question: a for a in got}
            bar.done()
        verdicts: list[compare.Verdict] = []
        if judge_ref and len(models) > 1:
            n_pairs = len(models) * (len(models) - 1) // 2
            bar.start(2 * n_pairs * len(asked), f"{judge_ref} judges")
            verdicts = compare.judge_all(judge_ref, asked, answers, progress=lambda: bar.advance(1))
            bar.done()
    settings = {
        "questions": f"{questions} ({len(asked)})",
        "sampling": f"temperature {temperature}, seed {seed}, max tokens {max_tokens}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    doc = report.Report("Side-by-side answers", settings, asked, answers, verdicts, judge_ref)
    out.mkdir(parents=True, exist_ok=True)
    compare.save_jsonl(
        out / "answers.jsonl", (a for per_q in answers.values() for a in per_q.values())
    )
    if verdicts:
        compare.save_jsonl(out / "verdicts.jsonl", verdicts)
    (out / "report.md").write_text(report.markdown(doc), encoding="utf-8")
    (out / "report.html").write_text(report.to_html(doc), encoding="utf-8")
    click.echo(report.summary_markdown(doc), nl=False)
    err_console.print(f"report.md, report.html and answers.jsonl in {out}/", markup=False)


@eval_group.command(name="heldout")
@click.argument("run", type=click.Path(path_type=Path))
def heldout_command(run: Path) -> None:
    """Held-out loss and perplexity of a training RUN's base and tuned model.

    The run's own held-out rows, encoded as it trained, scored by the function
    its trainer reports with (so the figures match the run's result.json).
    """
    from llm4all.evaluate.heldout import heldout_losses

    results = heldout_losses(run)
    click.echo("| model | held-out rows | loss (nats/token) | perplexity |")
    click.echo("| --- | ---: | ---: | ---: |")
    for r in results:
        click.echo(f"| {r.model} | {r.rows} | {r.loss:.4f} | {r.perplexity:.3f} |")


from llm4all.cli.eval_docs import docs_command  # noqa: E402  (LocalDocs on a labelled set)

eval_group.add_command(docs_command)
