"""Side-by-side answers (``llm4all eval compare``): every model answers every question.

Answers come through the Python API (:class:`llm4all.Model`), as a user's
would, with the model's catalog system prompt. Each answer records its
length, speed, whether it reads as a refusal (:mod:`llm4all.data.refusals`)
and, for questions with a ``check`` (the seed set), whether it contains what a
correct answer does (:func:`check_answer`).

An optional local judge model compares each pair of answers twice, once in
each order, because small judges favour a position; a verdict stands only
when both orders agree (:func:`combine`), and a reply without a readable
verdict is reported as unparsed, never guessed.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llm4all.data.refusals import find_refusal
from llm4all.evaluate.sets import Question
from llm4all.params import GenerationParams


@dataclass
class Answer:
    """One model's answer to one question, with its figures."""

    model: str
    question: str  # the question's id
    text: str
    completion_tokens: int
    seconds: float
    tokens_per_second: float
    finish_reason: str
    refusal: str | None = None  # the words that read as a refusal
    check: bool | None = None  # the question's check passed (None: no check)
    check_note: str = ""


def answer_all(
    ref: str,
    questions: Sequence[Question],
    params: GenerationParams,
    *,
    n_ctx: int = 4096,
    progress: Callable[[], None] | None = None,
) -> list[Answer]:
    """Load ``ref``, answer every question, unload."""
    from llm4all.api import Model

    answers = []
    with Model(ref, n_ctx=n_ctx, params=params) as model:
        for question in questions:
            t0 = time.perf_counter()
            response = model.stream(question.text)
            text = response.text().strip()
            seconds = time.perf_counter() - t0
            done = response.completion
            assert done is not None  # text() ran the stream to its end
            refusal = find_refusal(text)
            answer = Answer(
                model=ref,
                question=question.id,
                text=text,
                completion_tokens=done.usage.completion_tokens,
                seconds=round(seconds, 2),
                tokens_per_second=round(done.timings.tokens_per_second, 1),
                finish_reason=done.finish_reason,
                refusal=refusal.matched if refusal else None,
            )
            if question.check:
                answer.check, answer.check_note = check_answer(question.check, text)
            answers.append(answer)
            if progress is not None:
                progress()
    return answers


# -- the seed checks --------------------------------------------------------------------------

_ITEM = re.compile(r"^\s*(?:[-*•·]|\d{1,2}[.、)）:]|[一二三四五六七八九十]{1,2}[、.．]|\*\*)\s*\S")
_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)
#: What fib(10) may be: 55 (fib(0) = 0) or 34 (counting from fib(1) = 0).
_FIB_10 = {34, 55}


def check_answer(check: dict[str, Any], text: str) -> tuple[bool, str]:
    """Whether ``text`` meets every rule of ``check``, and a note saying what was found.

    Rules: ``min_items`` (a list of at least that many items), ``contains_any``
    (one of the strings), ``python_function`` (a Python function of that name
    that runs and gives Fibonacci numbers).
    Example: ``check_answer({"contains_any": ["10"]}, "最长 10 厘米")`` → ``(True, "contains '10'")``.
    """
    results = []
    if "min_items" in check:
        n = sum(1 for line in text.splitlines() if _ITEM.match(line))
        results.append((n >= int(check["min_items"]), f"{n} list items"))
    if "contains_any" in check:
        found = [s for s in check["contains_any"] if s in text]
        results.append((bool(found), f"contains {found[0]!r}" if found else "none of the strings"))
    if "python_function" in check:
        results.append(_fibonacci_runs(text, str(check["python_function"])))
    unknown = set(check) - {"min_items", "contains_any", "python_function"}
    if unknown:
        results.append((False, f"unknown check {sorted(unknown)[0]!r}"))
    return all(ok for ok, _ in results), "; ".join(note for _, note in results)


def _fibonacci_runs(text: str, name: str) -> tuple[bool, str]:
    """Find a function whose name contains ``name``; run it on 10 in a separate process.

    Only the answer's imports and function definitions run (not its example calls
    or ``input()``), in a child Python with a time and memory limit.
    """
    blocks = _FENCE.findall(text) or [text]
    for block in blocks:
        try:
            tree = ast.parse(block)
        except SyntaxError:
            continue
        wanted = (ast.FunctionDef, ast.Import, ast.ImportFrom)
        kept: list[ast.stmt] = [n for n in tree.body if isinstance(n, wanted)]
        funcs = [n.name for n in kept if isinstance(n, ast.FunctionDef) and name in n.name.lower()]
        if funcs:
            code = ast.unparse(ast.Module(body=kept, type_ignores=[]))
            return _run_function(code, funcs[0])
    return False, f"no Python function named like {name!r}"


def _run_function(code: str, func: str) -> tuple[bool, str]:
    program = (  # a generator or tuple of numbers is shown as a list
        f"{code}\nresult = {func}(10)\n"
        "if not isinstance(result, (int, float, str, type(None))):\n    result = list(result)\n"
        "print(repr(result))\n"
    )
    try:
        with tempfile.TemporaryDirectory() as scratch:  # what the code writes is thrown away
            done = subprocess.run(
                [sys.executable, "-I", "-c", _LIMITS + program],
                capture_output=True,
                text=True,
                timeout=10,
                cwd=scratch,
                stdin=subprocess.DEVNULL,
            )
    except subprocess.TimeoutExpired:
        return False, f"{func}(10) ran over 10 s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        return False, f"{func}(10) failed: {last[:120]}"
    try:
        value = ast.literal_eval(done.stdout.strip())
    except (ValueError, SyntaxError):
        return False, f"{func}(10) gave {done.stdout.strip()[:60]!r}"
    last = value[-1] if isinstance(value, list) and value else value
    return last in _FIB_10, f"{func}(10) = {str(value)[:60]}"


_LIMITS = (
    "import resource\n"
    "resource.setrlimit(resource.RLIMIT_CPU, (5, 5))\n"
    "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
)


# -- the judge ---------------------------------------------------------------------------------

JUDGE_SYSTEM = (
    "You are an impartial judge of two AI assistants' answers to a user's question. "
    "Judge helpfulness, correctness, relevance and detail. Neither the order of the "
    "answers nor their length is a reason to prefer one. Explain your reasons in a few "
    'sentences, then end with the verdict on its own line: "[[A]]" if assistant A\'s '
    'answer is better, "[[B]]" if assistant B\'s is better, "[[C]]" for a tie.'
)
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_LOOSE = (  # what small judges write instead: "Verdict: B", "[Assistant A's answer] is better"
    re.compile(r"(?i)verdict\W{0,4}(?:assistant\s+)?\[?\s*(A|B|C|tie)\b"),
    re.compile(r"(?i)\bassistant ([AB])(?:'s answer)?\]? is (?:the )?better\b"),
)


def judge_prompt(question: str, first: str, second: str) -> str:
    """The user message that asks the judge to compare two answers (A shown first)."""
    return (
        f"[Question]\n{question}\n\n"
        f"[The start of assistant A's answer]\n{first}\n[The end of assistant A's answer]\n\n"
        f"[The start of assistant B's answer]\n{second}\n[The end of assistant B's answer]"
    )


def parse_verdict(reply: str) -> str | None:
    """ "A", "B", "C" (tie) from the judge's reply, the last one given; None if it gave none.

    Example: ``parse_verdict("B is more accurate.\\n[[B]]")`` → ``"B"``.
    """
    found = _VERDICT.findall(reply)
    for loose in _LOOSE:
        found = found or loose.findall(reply)
    if not found:
        return None
    last = found[-1].upper()
    return "C" if last == "TIE" else last


@dataclass
class Verdict:
    """A judged pair: each order's verdict and reasoning, and what they add up to."""

    question: str
    a: str  # model names
    b: str
    a_first: str | None  # the verdict with a shown first ("A" means a)
    b_first: str | None  # the verdict with b shown first ("A" means b)
    reasoning: list[str] = field(default_factory=list)
    result: str = ""  # a model name, "tie", "inconsistent" or "unparsed"


def combine(a: str, b: str, a_first: str | None, b_first: str | None) -> str:
    """The pair's result from both orders: a winner only when both orders name it.

    Example: ``combine("x", "y", "A", "B")`` → ``"x"`` (x won shown first and second).
    """
    if a_first is None or b_first is None:
        return "unparsed"
    first = {"A": a, "B": b, "C": "tie"}[a_first]
    second = {"A": b, "B": a, "C": "tie"}[b_first]
    return first if first == second else "inconsistent"


def judge_all(
    judge_ref: str,
    questions: Sequence[Question],
    answers: dict[str, dict[str, Answer]],
    *,
    n_ctx: int = 8192,
    max_tokens: int = 384,
    progress: Callable[[], None] | None = None,
) -> list[Verdict]:
    """Every pair of models judged on every question, in both orders (greedy)."""
    from llm4all.api import Model

    models = list(answers)
    pairs = [(x, y) for i, x in enumerate(models) for y in models[i + 1 :]]
    params = GenerationParams(temperature=0, max_tokens=max_tokens)
    verdicts = []
    with Model(judge_ref, n_ctx=n_ctx, params=params) as judge:
        for question in questions:
            for a, b in pairs:
                replies = []
                for first, second in ((a, b), (b, a)):
                    prompt = judge_prompt(
                        question.text,
                        answers[first][question.id].text,
                        answers[second][question.id].text,
                    )
                    replies.append(judge.generate(prompt, system_prompt=JUDGE_SYSTEM).strip())
                    if progress is not None:
                        progress()
                v1, v2 = parse_verdict(replies[0]), parse_verdict(replies[1])
                verdicts.append(Verdict(question.id, a, b, v1, v2, replies, combine(a, b, v1, v2)))
    return verdicts


def save_jsonl(path: Any, rows: Iterable[Answer | Verdict]) -> None:
    """Answers or verdicts, one JSON object a line."""
    with open(path, "w", encoding="utf-8") as sink:
        for row in rows:
            sink.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
