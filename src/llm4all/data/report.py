"""What a curation run did, counted as it streams, and written as Markdown and HTML.

:class:`CurationStats` is filled row by row (counts per rule and per source,
the first few examples of what each rule removed, the rows that could not be
read) and holds no rows beyond those examples, so it stays small however
large the input. :func:`to_markdown` and :func:`to_html` write the report a
person reads to judge the rules.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from llm4all.data.schema import Conversation

EXAMPLES = 5
"""Examples kept per rule (the first ones met, so the report is deterministic)."""

PROBLEMS = 20
"""Unreadable rows listed by place (all are counted)."""

SNIPPET = 300
"""Characters of a prompt or answer shown in an example."""


@dataclass
class Example:
    """One removed row as the report shows it."""

    id: str
    source: str
    where: str
    detail: str
    prompt: str
    response: str


@dataclass
class CurationStats:
    """Counts of one curation run; ``rules`` lists the rules that were on, in order."""

    rules: list[str]
    read: int = 0
    kept: int = 0
    problems: int = 0
    problem_examples: list[str] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    by_source: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    examples: dict[str, list[Example]] = field(default_factory=lambda: defaultdict(list))
    forced_keep: int = 0
    seconds: float = 0.0
    inputs: list[str] = field(default_factory=list)
    output: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def problem(self, text: str) -> None:
        self.problems += 1
        if len(self.problem_examples) < PROBLEMS:
            self.problem_examples.append(text)

    def count(self, row: Conversation, rule: str | None, detail: str = "") -> None:
        """Count one row: kept (``rule`` None) or dropped by ``rule``."""
        self.read += 1
        source = self.by_source[row.source]
        source["read"] += 1
        if rule is None:
            self.kept += 1
            source["kept"] += 1
            return
        self.dropped[rule] += 1
        source[rule] += 1
        if len(self.examples[rule]) < EXAMPLES:
            where = f"{row.meta.get('file', '')}:{row.meta.get('line', '')}"
            self.examples[rule].append(
                Example(
                    row.id, row.source, where, detail, row.prompt[:SNIPPET], row.response[:SNIPPET]
                )
            )

    @property
    def columns(self) -> list[str]:
        """Rules that removed something, in rule order (the map's keep/drop list first)."""
        return [r for r in ["map-drop", *self.rules] if self.dropped[r]]


def _inputs(stats: CurationStats) -> str:
    shown = ", ".join(stats.inputs[:3])
    more = len(stats.inputs) - 3
    return f"{len(stats.inputs)} files: {shown}, … ({more} more)" if more > 0 else shown


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def to_markdown(stats: CurationStats) -> str:
    """The report as Markdown: totals, per rule, per source, examples, unreadable rows."""
    rate = stats.read / stats.seconds if stats.seconds else 0
    lines = [
        "# Curation report",
        "",
        f"- Input: {_inputs(stats)}",
        f"- Output: {stats.output}",
        f"- Rows read: {stats.read:,}; kept {stats.kept:,} ({_percent(stats.kept, stats.read)}); "
        f"unreadable rows skipped: {stats.problems:,}",
        f"- Rules on: {', '.join(stats.rules) or 'none'}",
        f"- Settings: {', '.join(f'{k}={v}' for k, v in stats.settings.items())}",
        f"- Time: {stats.seconds:.1f} s ({rate:,.0f} rows/s)",
    ]
    if stats.forced_keep:
        lines.append(f"- Kept because the keep list named them: {stats.forced_keep:,}")
    lines += [
        "",
        "## Removed, per rule",
        "",
        "| rule | removed | share of rows read |",
        "| --- | ---: | ---: |",
    ]
    for rule in ["map-drop", *stats.rules]:
        lines.append(
            f"| {rule} | {stats.dropped[rule]:,} | {_percent(stats.dropped[rule], stats.read)} |"
        )
    columns = stats.columns
    lines += ["", "## Per source", "", "| source | read | kept | " + " | ".join(columns) + " |"]
    lines.append("| --- | ---: | ---: |" + " ---: |" * len(columns))
    for source in sorted(stats.by_source):
        counts = stats.by_source[source]
        cells = [f"{counts[c]:,}" if counts[c] else "" for c in columns]
        lines.append(
            f"| {source} | {counts['read']:,} | {counts['kept']:,} | " + " | ".join(cells) + " |"
        )
    lines += ["", "## Examples of what each rule removed", ""]
    for rule in columns:
        lines += [f"### {rule}", ""]
        for example in stats.examples[rule]:
            lines += [
                f"- `{example.id}` ({example.source}, {example.where}): **{_cell(example.detail)}**",
                f"  - prompt: {_cell(example.prompt)[:SNIPPET]}",
                f"  - answer: {_cell(example.response)[:SNIPPET]}",
            ]
        lines.append("")
    if stats.problems:
        lines += ["## Unreadable rows (skipped)", ""]
        lines += [f"- {_cell(p)}" for p in stats.problem_examples]
        if stats.problems > len(stats.problem_examples):
            lines.append(f"- … and {stats.problems - len(stats.problem_examples):,} more")
        lines.append("")
    return "\n".join(lines)


_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .6rem}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
.ex{border-left:3px solid #c33;padding:.2rem .8rem;margin:.6rem 0;background:#fafafa}
.ex pre{white-space:pre-wrap;margin:.2rem 0;font-size:13px}code{font-size:13px}
"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"n" if i else ""}">{html.escape(c)}</td>' for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def to_html(stats: CurationStats) -> str:
    """The report as one self-contained HTML page (no scripts, no external files)."""
    esc = html.escape
    rate = stats.read / stats.seconds if stats.seconds else 0
    parts = [
        f"<!doctype html><meta charset=utf-8><title>Curation report</title><style>{_STYLE}</style>",
        "<h1>Curation report</h1><ul>",
        f"<li>Input: {esc(_inputs(stats))}</li><li>Output: {esc(stats.output)}</li>",
        f"<li>Rows read: {stats.read:,}; kept {stats.kept:,} ({_percent(stats.kept, stats.read)}); "
        f"unreadable rows skipped: {stats.problems:,}</li>",
        f"<li>Rules on: {esc(', '.join(stats.rules) or 'none')}</li>",
        f"<li>Settings: {esc(', '.join(f'{k}={v}' for k, v in stats.settings.items()))}</li>",
        f"<li>Time: {stats.seconds:.1f} s ({rate:,.0f} rows/s)</li></ul>",
        "<h2>Removed, per rule</h2>",
        _table(
            ["rule", "removed", "share of rows read"],
            [
                [r, f"{stats.dropped[r]:,}", _percent(stats.dropped[r], stats.read)]
                for r in ["map-drop", *stats.rules]
            ],
        ),
        "<h2>Per source</h2>",
    ]
    columns = stats.columns
    rows = []
    for source in sorted(stats.by_source):
        counts = stats.by_source[source]
        rows.append(
            [source, f"{counts['read']:,}", f"{counts['kept']:,}"]
            + [f"{counts[c]:,}" if counts[c] else "" for c in columns]
        )
    parts.append(_table(["source", "read", "kept", *columns], rows))
    parts.append("<h2>Examples of what each rule removed</h2>")
    for rule in columns:
        parts.append(f"<h3>{esc(rule)}</h3>")
        for example in stats.examples[rule]:
            parts.append(
                f'<div class="ex"><code>{esc(example.id)}</code> {esc(example.source)}, '
                f"{esc(example.where)}: <b>{esc(example.detail)}</b>"
                f"<pre>prompt: {esc(example.prompt)}</pre><pre>answer: {esc(example.response)}</pre></div>"
            )
    if stats.problems:
        parts.append("<h2>Unreadable rows (skipped)</h2><ul>")
        parts += [f"<li>{esc(p)}</li>" for p in stats.problem_examples]
        if stats.problems > len(stats.problem_examples):
            parts.append(f"<li>… and {stats.problems - len(stats.problem_examples):,} more</li>")
        parts.append("</ul>")
    return "\n".join(parts) + "\n"
