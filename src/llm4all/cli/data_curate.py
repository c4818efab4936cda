"""``llm4all data curate`` and ``llm4all data convert``: training data in, curated schema out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from llm4all.cli._common import err_console
from llm4all.data.formats import FORMATS, RowProblem, read_many, write_rows
from llm4all.data.rules import DEFAULT_RULES, RULE_NAMES, RuleSettings

PROBLEMS_SHOWN = 10
"""Unreadable rows named on stderr as they are met (all are in the report)."""


def _rule_list(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in RULE_NAMES]
    if unknown:
        raise click.BadParameter(
            f"unknown rule(s) {', '.join(unknown)}; one of {', '.join(RULE_NAMES)}"
        )
    return names


def _no_rule_options(function: Any) -> Any:
    for name in reversed(RULE_NAMES):
        if name == "language":
            continue
        function = click.option(
            f"--no-{name}",
            f"no_{name.replace('-', '_')}",
            is_flag=True,
            help=f"Keep rows the {name} rule drops.",
        )(function)
    return function


def _default_report(output: Path) -> Path:
    name = output.name.removesuffix(".parquet").removesuffix(".jsonl")
    return output.with_name(f"{name}.report.md")


@click.command("curate")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Curated rows: .jsonl, or .parquet for large sets.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    help="Input format (default: detected per file).",
)
@click.option(
    "--rules",
    "rules",
    metavar="LIST",
    help=f"Comma-separated rules to run, instead of the default ({', '.join(DEFAULT_RULES)}).",
)
@_no_rule_options
@click.option(
    "--min-answer-words",
    type=click.IntRange(min=0),
    default=RuleSettings.min_answer_words,
    show_default=True,
    help="short-answer: fewer words than this go.",
)
@click.option(
    "--near-threshold",
    type=click.FloatRange(0, 1, min_open=True),
    default=RuleSettings.near_threshold,
    show_default=True,
    help="near-duplicate: Jaccard similarity of prompt and of answer.",
)
@click.option(
    "--template-cap",
    type=click.IntRange(min=1),
    default=RuleSettings.template_cap,
    show_default=True,
    help="template: rows kept per prompt template.",
)
@click.option(
    "--language",
    "languages",
    metavar="LANGS",
    help="Keep only these languages (e.g. en,zh); turns the language rule on.",
)
@click.option(
    "--refusal-phrases",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your own refusal phrase list (format of llm4all/data/refusal_phrases.txt).",
)
@click.option(
    "--keep-drop",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='Ids from the data map: JSON {"keep": [...], "drop": [...]} or one id to drop per line.',
)
@click.option(
    "--dropped",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the removed rows here (JSONL, with the rule that removed each).",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Report path (.md; an .html is written beside it). Default: OUTPUT.report.md",
)
def curate_command(
    inputs: tuple[Path, ...],
    output: Path,
    fmt: str | None,
    rules: str | None,
    min_answer_words: int,
    near_threshold: float,
    template_cap: int,
    languages: str | None,
    refusal_phrases: Path | None,
    keep_drop: Path | None,
    dropped: Path | None,
    report: Path | None,
    **no_rules: bool,
) -> None:
    """Curate training data the way GPT4All's was: drop refusals, bad answers, duplicates, templates.

    INPUTS are files or folders in any format `llm4all data convert` reads.
    Every rule is on by default; switch one off with --no-RULE, or name the
    ones to run with --rules. Prints the counts; the report (Markdown and
    HTML) lists them per source with examples of what each rule removed.
    """
    from llm4all.data.curate import CurateConfig, curate
    from llm4all.data.report import to_html, to_markdown

    chosen = _rule_list(rules) if rules else DEFAULT_RULES
    chosen = tuple(n for n in chosen if not no_rules.get(f"no_{n.replace('-', '_')}"))
    language_list = tuple(lang.strip() for lang in (languages or "").split(",") if lang.strip())
    if language_list and "language" not in chosen:
        chosen = (*chosen, "language")
    settings = RuleSettings(
        min_answer_words, near_threshold, template_cap, language_list, refusal_phrases
    )
    config = CurateConfig(rules=chosen, settings=settings, keep_drop=keep_drop, fmt=fmt)
    shown = 0

    def progress(stats: Any) -> None:
        nonlocal shown
        while shown < min(len(stats.problem_examples), PROBLEMS_SHOWN):
            err_console.print(
                f"skipped {stats.problem_examples[shown]}", markup=False, highlight=False
            )
            shown += 1
        if stats.read % 10_000 == 0:
            err_console.print(
                f"{stats.read:,} rows, {stats.kept:,} kept", markup=False, highlight=False
            )

    stats = curate(list(inputs), output, config, dropped=dropped, on_row=progress)
    report = report or _default_report(output)
    report.write_text(to_markdown(stats), encoding="utf-8")
    report.with_suffix(".html").write_text(to_html(stats), encoding="utf-8")
    click.echo(
        f"read {stats.read:,} rows, kept {stats.kept:,}, removed {stats.read - stats.kept:,}"
        f" ({stats.seconds:.1f} s)"
    )
    for rule in stats.columns:
        click.echo(f"  {rule:<18} {stats.dropped[rule]:>9,}")
    if stats.problems:
        click.echo(f"skipped {stats.problems:,} unreadable row(s), listed in the report")
    click.echo(f"wrote {output}, report {report} and {report.with_suffix('.html')}")


@click.command("convert")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Rows in llm4all's conversation schema: .jsonl, or .parquet.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    help="Input format (default: detected per file).",
)
def convert_command(inputs: tuple[Path, ...], output: Path, fmt: str | None) -> None:
    """Convert training data (GPT4All, Alpaca, ShareGPT, OpenAI, P3, chat exports…) to one schema."""
    problems = 0

    def rows() -> Any:
        nonlocal problems
        for row in read_many(inputs, fmt):
            if isinstance(row, RowProblem):
                problems += 1
                if problems <= PROBLEMS_SHOWN:
                    err_console.print(f"skipped {row}", markup=False, highlight=False)
                continue
            yield row

    if any(output.resolve() == Path(i).resolve() for i in inputs):
        raise click.BadParameter("the output is also an input", param_hint="--output")
    count = write_rows(rows(), output)
    click.echo(
        f"wrote {count:,} rows to {output}"
        + (f"; skipped {problems:,} unreadable" if problems else "")
    )
