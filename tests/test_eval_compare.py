"""``llm4all eval compare``: answers side by side, the seed checks, the judge's verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llm4all.evaluate.compare import (
    Answer,
    check_answer,
    combine,
    judge_all,
    judge_prompt,
    parse_verdict,
)
from llm4all.evaluate.sets import EvalDataError, Question, load_questions

CLI = [sys.executable, "-m", "llm4all", "eval", "compare"]

FIB = """Here it is:

```python
def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

print(fibonacci(10))
n = int(input())
```
"""


def test_seed_checks() -> None:
    seed = {q.id: q for q in load_questions("seed")}
    assert len(seed) == 3
    jobs = "1. 程序员\n2. 公务员\n3. 教师"
    assert check_answer(seed["seed-q1"].check, jobs) == (True, "3 list items")
    assert check_answer(seed["seed-q1"].check, "程序员。")[0] is False
    assert check_answer(seed["seed-q2"].check, "第三条边小于11厘米,最长为10厘米。")[0] is True
    assert check_answer(seed["seed-q2"].check, "最长为 3 厘米")[0] is False
    ok, note = check_answer(seed["seed-q3"].check, FIB)  # input() is never reached
    assert ok and note == "fibonacci(10) = 55"
    wrong = FIB.replace("a, b = b, a + b", "a, b = b, a * b")
    assert check_answer(seed["seed-q3"].check, wrong) == (False, "fibonacci(10) = 0")
    assert check_answer(seed["seed-q3"].check, "def fib(n): return fib(n-1) +")[0] is False
    nothing = "```python\ndef fib(n):\n    a, b = 0, 1\n```"
    assert check_answer(seed["seed-q3"].check, nothing) == (False, "fib(10) = None")
    broken = "```python\ndef fib(n):\n    return undefined_name\n```"
    ok, note = check_answer(seed["seed-q3"].check, broken)
    assert not ok and "NameError" in note
    assert check_answer({"nonsense": 1}, "x") == (False, "unknown check 'nonsense'")


def test_verdicts_are_parsed_or_reported_unparsed() -> None:
    assert parse_verdict("A is vague; B names the capital.\n[[B]]") == "B"
    assert parse_verdict("Both fine. [[C]]") == "C"
    assert parse_verdict("[[A]] at first, but on reflection [[B]]") == "B"  # the last one
    assert parse_verdict("Verdict: tie") == "C"
    assert parse_verdict("[Assistant A's answer] is better. It is longer.") == "A"
    assert parse_verdict("Both answers have merits.") is None
    assert combine("x", "y", "A", "B") == "x"  # x won in both positions
    assert combine("x", "y", "A", "A") == "inconsistent"  # the first shown won both times
    assert combine("x", "y", "C", "C") == "tie"
    assert combine("x", "y", None, "A") == "unparsed"
    prompt = judge_prompt("Q?", "first answer", "second answer")
    assert prompt.index("first answer") < prompt.index("second answer")


def test_judge_sees_both_orders(fast_model_path: Path) -> None:
    question = Question("q1", "What is the capital of France?")
    answers = {
        "good": {"q1": Answer("good", "q1", "The capital of France is Paris.", 8, 0.1, 80, "stop")},
        "bad": {"q1": Answer("bad", "q1", "Bananas are yellow.", 5, 0.1, 50, "stop")},
    }
    verdicts = judge_all(str(fast_model_path), [question], answers, n_ctx=2048, max_tokens=48)
    (v,) = verdicts
    assert (v.a, v.b) == ("good", "bad")
    assert len(v.reasoning) == 2 and all(v.reasoning)
    assert v.result == combine("good", "bad", v.a_first, v.b_first)
    assert v.result in {"good", "bad", "tie", "inconsistent", "unparsed"}


def test_compare_report_two_models_two_questions(
    fast_model_path: Path, base_model_path: Path, tmp_path: Path
) -> None:
    questions = tmp_path / "q.jsonl"
    rows = [
        {"id": "capital", "text": "What is the capital of France?", "category": "facts"},
        {"id": "sum", "text": "What is 2 + 3?", "check": {"contains_any": ["5"]}},
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    models = [str(fast_model_path), str(base_model_path)]
    res = subprocess.run(
        [*CLI, *models, "--questions", str(questions), "--max-tokens", "16", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "| mean tok/s |" in res.stdout and "checks passed" in res.stdout
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 4
    assert {(a["model"], a["question"]) for a in answers} == {
        (m, q) for m in models for q in ("capital", "sum")
    }
    assert all(a["completion_tokens"] <= 16 and a["text"] for a in answers)
    assert [a["check"] is None for a in answers] == [True, False, True, False]
    md = (out / "report.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("### ")]
    assert md.count("## capital (facts)") == 1 and len(headings) == 4
    page = (out / "report.html").read_text()
    assert page.count("class='answers' style='--n:2'") == 2
    assert page.count('<div class="answer">') == 4


def test_compare_bad_input(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="no such file"):
        load_questions(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "no question"}\n')
    with pytest.raises(EvalDataError, match=r"bad\.jsonl:2: the row has no question"):
        load_questions(bad)
    bad.write_text('{"text": "fine"}\nnot json\n')
    res = subprocess.run(
        [*CLI, "smollm2-135m-instruct", "--questions", str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1
    assert res.stderr.startswith(f"error: {bad}:2: not JSON") and res.stderr.count("\n") == 1
    assert len(load_questions("vicuna80")) == 80
