"""The side-by-side report in Markdown and HTML (one page, no external assets).

Both are built from the same :func:`summary` rows and the same answers; the
HTML puts each question's answers in columns, the Markdown one after another.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llm4all.evaluate.compare import Answer, Verdict
from llm4all.evaluate.sets import Question


@dataclass
class Report:
    """Everything a report shows."""

    title: str
    settings: dict[str, Any]
    questions: Sequence[Question]
    answers: dict[str, dict[str, Answer]]  # model -> question id -> answer
    verdicts: Sequence[Verdict] = ()
    judge: str | None = None


def summary(report: Report) -> list[dict[str, Any]]:
    """One row per model: answers, mean length and speed, refusals, checks, judge record."""
    rows = []
    for model, per_q in report.answers.items():
        answers = list(per_q.values())
        checked = [a for a in answers if a.check is not None]
        row: dict[str, Any] = {
            "model": model,
            "answers": len(answers),
            "mean tokens": round(statistics.fmean(a.completion_tokens for a in answers), 1),
            "mean tok/s": round(statistics.fmean(a.tokens_per_second for a in answers), 1),
            "refusals": sum(a.refusal is not None for a in answers),
            "cut at max tokens": sum(a.finish_reason == "length" for a in answers),
        }
        if checked:
            row["checks passed"] = f"{sum(bool(a.check) for a in checked)}/{len(checked)}"
        if report.verdicts:
            mine = [v for v in report.verdicts if model in (v.a, v.b)]
            wins = sum(v.result == model for v in mine)
            losses = sum(v.result not in (model, "tie", "inconsistent", "unparsed") for v in mine)
            ties = sum(v.result in ("tie", "inconsistent") for v in mine)
            row["judge W/T/L"] = f"{wins}/{ties}/{losses}"
        rows.append(row)
    return rows


def _md_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for row in rows:
        out.append("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    return out


def _figures(answer: Answer) -> str:
    parts = [f"{answer.completion_tokens} tokens", f"{answer.tokens_per_second} tok/s"]
    if answer.finish_reason == "length":
        parts.append("cut at max tokens")
    if answer.refusal:
        parts.append(f"REFUSAL ({answer.refusal!r})")
    if answer.check is not None:
        parts.append(f"check {'passed' if answer.check else 'FAILED'}: {answer.check_note}")
    return ", ".join(parts)


def _verdict_rows(report: Report) -> list[dict[str, Any]]:
    """Each judged pair: the model each order picked, and the result."""

    def picked(verdict: str | None, shown_first: str, shown_second: str) -> str:
        return {"A": shown_first, "B": shown_second, "C": "tie", None: "unparsed"}[verdict]

    return [
        {
            "question": v.question,
            "pair": f"{v.a} vs {v.b}",
            "first shown first": picked(v.a_first, v.a, v.b),
            "second shown first": picked(v.b_first, v.b, v.a),
            "result": v.result,
        }
        for v in report.verdicts
    ]


def summary_markdown(report: Report) -> str:
    """The summary table alone (what the command prints)."""
    return "\n".join(_md_table(summary(report))) + "\n"


def markdown(report: Report) -> str:
    """The report as Markdown."""
    lines = [f"# {report.title}", ""]
    lines += [f"- {k}: {v}" for k, v in report.settings.items()]
    lines += ["", "## Summary", "", *_md_table(summary(report)), ""]
    if report.verdicts:
        lines += [f"## Judge: {report.judge} (both orders; a winner only when they agree)", ""]
        lines += _md_table(_verdict_rows(report))
        lines.append("")
    for q in report.questions:
        head = f"## {q.id}" + (f" ({q.category})" if q.category else "")
        lines += [head, "", _quote(q.text), ""]
        if q.expect:
            lines += [f"*A correct answer:* {q.expect}", ""]
        for model, per_q in report.answers.items():
            answer = per_q[q.id]
            # Quoted: an answer's own headings and rules stay inside it.
            text = _quote(answer.text) if answer.text else "*(empty)*"
            lines += [f"### {model}: {_figures(answer)}", "", text, ""]
        for v in (v for v in report.verdicts if v.question == q.id):
            lines += [f"**Judge, {v.a} vs {v.b}: {v.result}**", ""]
            for order, reply in zip((v.a, v.b), v.reasoning, strict=False):
                lines += [f"*{order} shown first:*", "", _quote(reply), ""]
    return "\n".join(lines).rstrip() + "\n"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:110rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.3rem .6rem;
text-align:left;vertical-align:top}th{background:#f2f2f2}.answers{display:grid;gap:.8rem;
grid-template-columns:repeat(var(--n),minmax(0,1fr))}.answer{border:1px solid #ddd;border-radius:6px;
padding:.6rem}.answer pre{white-space:pre-wrap;word-wrap:break-word;font:inherit;margin:.4rem 0 0}
.meta{font-size:.85rem;color:#555}.bad{color:#b00020;font-weight:600}.good{color:#0a7a28}
.question{background:#f7f7fb;padding:.6rem;border-left:4px solid #88a;white-space:pre-wrap}
details{margin:.3rem 0}
"""


def _html_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(k, '')))}</td>" for k in keys) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_answer(model: str, answer: Answer) -> str:
    flags = []
    if answer.refusal:
        flags.append(f'<span class="bad">refusal: {html.escape(answer.refusal)}</span>')
    if answer.check is not None:
        cls, word = ("good", "check passed") if answer.check else ("bad", "check failed")
        flags.append(f'<span class="{cls}">{word}: {html.escape(answer.check_note)}</span>')
    meta = f"{answer.completion_tokens} tokens · {answer.tokens_per_second} tok/s"
    if answer.finish_reason == "length":
        meta += " · cut at max tokens"
    return (
        f'<div class="answer"><b>{html.escape(model)}</b><div class="meta">{meta}</div>'
        f"{'<br>'.join(flags)}<pre>{html.escape(answer.text)}</pre></div>"
    )


def to_html(report: Report) -> str:
    """The report as one HTML page: each question's answers side by side."""
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(report.title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{esc(report.title)}</h1><ul>",
        *(f"<li>{esc(str(k))}: {esc(str(v))}</li>" for k, v in report.settings.items()),
        "</ul><h2>Summary</h2>",
        _html_table(summary(report)),
    ]
    if report.verdicts:
        parts += [f"<h2>Judge: {esc(report.judge or '')}</h2>", _html_table(_verdict_rows(report))]
    n = len(report.answers)
    for q in report.questions:
        cat = f" ({esc(q.category)})" if q.category else ""
        parts += [f"<h2 id='q-{esc(q.id)}'>{esc(q.id)}{cat}</h2>"]
        parts += [f"<div class='question'>{esc(q.text)}</div>"]
        if q.expect:
            parts += [f"<p><i>A correct answer:</i> {esc(q.expect)}</p>"]
        parts += [f"<div class='answers' style='--n:{n}'>"]
        parts += [_html_answer(m, per_q[q.id]) for m, per_q in report.answers.items()]
        parts += ["</div>"]
        for v in (v for v in report.verdicts if v.question == q.id):
            parts += [f"<p><b>Judge, {esc(v.a)} vs {esc(v.b)}: {esc(v.result)}</b></p>"]
            for order, reply in zip((v.a, v.b), v.reasoning, strict=False):
                parts += [
                    f"<details><summary>{esc(order)} shown first</summary>"
                    f"<pre>{esc(reply)}</pre></details>"
                ]
    parts.append("</body></html>\n")
    return "".join(parts)
