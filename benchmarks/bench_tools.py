"""Tool calls through the real ``openai`` client against ``llm4all serve`` (issue 22).

Tasks in the spirit of the Berkeley function-calling leaderboard: *simple*
(one tool offered, one call), *multiple* (several tools, the right one
chosen), *irrelevance* (no tool fits: an answer, not a call), *multi-call*
(two calls in one answer: weather in two cities, a sum and a product), and
an agent loop (call → result → answer). A call counts as valid when it names
the right tool, its arguments parse and follow the schema, and they hold the
expected values (strings compared case-insensitively); a multi-call task
needs every expected call, valid, and no other. Temperature 0.

``--llm-cli`` also runs simonw's ``llm`` CLI (``llm -m … --functions``, when
it is installed) against the same server: the agent loop as that client runs
it.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_tools.py \\
        --model qwen2.5-coder-0.5b-instruct [--llm4all PATH/TO/llm4all] [--json OUT]

``--llm4all`` runs another checkout's CLI (a ``git worktree`` of the commit
before the change: the "before" column).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any


def _fn(name: str, description: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


S = {"type": "string"}
N = {"type": "number"}
WEATHER = _fn("get_weather", "Current weather in a city", {"city": S}, ["city"])
ADD = _fn("add", "Add two numbers", {"a": N, "b": N}, ["a", "b"])
MULTIPLY = _fn("multiply", "Multiply two numbers", {"a": N, "b": N}, ["a", "b"])
EMAIL = _fn(
    "send_email", "Send an e-mail", {"to": S, "subject": S, "body": S}, ["to", "subject", "body"]
)
CONVERT = _fn(
    "convert_currency",
    "Convert an amount between currencies (ISO codes)",
    {"amount": N, "from_currency": S, "to_currency": S},
    ["amount", "from_currency", "to_currency"],
)
NOW = _fn("now", "The current date and time", {}, [])
TIMER = _fn("set_timer", "Set a timer", {"minutes": {"type": "integer"}}, ["minutes"])
ALL = [WEATHER, ADD, MULTIPLY, EMAIL, CONVERT, NOW, TIMER]

# (category, question, tools, expected tool or None, expected argument values)
TASKS: list[tuple[str, str, list[dict[str, Any]], str | None, dict[str, Any]]] = [
    # the kind: 12 single-call tasks, each with its own tool offered
    ("simple", "What's the weather in Paris?", [WEATHER], "get_weather", {"city": "paris"}),
    (
        "simple",
        "How is the weather in Tokyo right now?",
        [WEATHER],
        "get_weather",
        {"city": "tokyo"},
    ),
    ("simple", "What is 17 plus 25?", [ADD], "add", {"a": 17, "b": 25}),
    ("simple", "Add 3.5 and 4.", [ADD], "add", {"a": 3.5, "b": 4}),
    ("simple", "What is 12 times 9?", [MULTIPLY], "multiply", {"a": 12, "b": 9}),
    (
        "simple",
        "Send an e-mail to bob@example.com with subject Lunch and body 'See you at noon'.",
        [EMAIL],
        "send_email",
        {"to": "bob@example.com", "subject": "lunch"},
    ),
    (
        "simple",
        "Email alice@example.org, subject Report, body 'The report is done'.",
        [EMAIL],
        "send_email",
        {"to": "alice@example.org", "subject": "report"},
    ),
    (
        "simple",
        "Convert 100 USD to EUR.",
        [CONVERT],
        "convert_currency",
        {"amount": 100, "from_currency": "usd", "to_currency": "eur"},
    ),
    (
        "simple",
        "How many yen is 50 British pounds?",
        [CONVERT],
        "convert_currency",
        {"amount": 50, "from_currency": "gbp", "to_currency": "jpy"},
    ),
    ("simple", "What time is it?", [NOW], "now", {}),
    ("simple", "What's today's date?", [NOW], "now", {}),
    ("simple", "Set a timer for 10 minutes.", [TIMER], "set_timer", {"minutes": 10}),
    # multiple: every tool offered, the right one chosen
    ("multiple", "What's the weather in Berlin?", ALL, "get_weather", {"city": "berlin"}),
    ("multiple", "What is 6 times 7?", ALL, "multiply", {"a": 6, "b": 7}),
    ("multiple", "What is 40 plus 2?", ALL, "add", {"a": 40, "b": 2}),
    ("multiple", "Convert 20 EUR to USD.", ALL, "convert_currency", {"amount": 20}),
    ("multiple", "What time is it now?", ALL, "now", {}),
    ("multiple", "Set a timer for 5 minutes.", ALL, "set_timer", {"minutes": 5}),
    (
        "multiple",
        "Send an e-mail to carol@example.com with subject Hi and body 'Hello'.",
        ALL,
        "send_email",
        {"to": "carol@example.com"},
    ),
    # irrelevance: no tool fits, the answer must be text
    ("irrelevance", "Write a haiku about the sea.", [WEATHER], None, {}),
    ("irrelevance", "Who wrote Hamlet?", [ADD, MULTIPLY], None, {}),
    ("irrelevance", "Explain what a Python list is in one sentence.", [EMAIL, TIMER], None, {}),
    ("irrelevance", "Say hello.", [CONVERT], None, {}),
]


# multi-call: two calls in one answer (every expected call, in any order, and no other)
MULTI: list[tuple[str, list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]] = [
    (
        "What's the weather in Paris and in London?",
        [WEATHER],
        [("get_weather", {"city": "paris"}), ("get_weather", {"city": "london"})],
    ),
    (
        "What is the weather like in Tokyo and in Madrid right now?",
        [WEATHER],
        [("get_weather", {"city": "tokyo"}), ("get_weather", {"city": "madrid"})],
    ),
    (
        "What is 3 plus 4, and what is 5 times 6?",
        [ADD, MULTIPLY],
        [("add", {"a": 3, "b": 4}), ("multiply", {"a": 5, "b": 6})],
    ),
    (
        "Set a timer for 5 minutes and another one for 10 minutes.",
        [TIMER],
        [("set_timer", {"minutes": 5}), ("set_timer", {"minutes": 10})],
    ),
]


def _schema_ok(args: Any, schema: dict[str, Any]) -> bool:
    from llm4all.chat.tools import valid_arguments

    return valid_arguments(args, schema)


def _values_ok(args: dict[str, Any], want: dict[str, Any]) -> bool:
    for key, value in want.items():
        got = args.get(key)
        if isinstance(value, str):
            if not isinstance(got, str) or value not in got.lower():
                return False
        elif not isinstance(got, (int, float)) or isinstance(got, bool) or got != value:
            return False
    return True


def _invalid(calls: list[Any], tools: list[dict[str, Any]]) -> int:
    """How many calls carry arguments that do not parse or follow their tool's schema."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    invalid = 0
    for c in calls:
        try:
            args = json.loads(c.function.arguments)
        except ValueError:
            args = None
        if not _schema_ok(args, schemas.get(c.function.name, {})):
            invalid += 1
    return invalid


def _multi_row(
    client: Any, model: str, question: str, tools: list[dict[str, Any]], want: Any
) -> dict[str, Any]:
    resp = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        tools=tools,
        temperature=0,
        max_tokens=200,
    )
    msg = resp.choices[0].message
    calls = msg.tool_calls or []
    invalid = _invalid(calls, tools)
    left = list(want)
    for c in calls:
        try:
            args = json.loads(c.function.arguments)
        except ValueError:
            continue
        hit = next(
            (
                w
                for w in left
                if w[0] == c.function.name and isinstance(args, dict) and _values_ok(args, w[1])
            ),
            None,
        )
        if hit is not None:
            left.remove(hit)
    ok = not left and len(calls) == len(want) and not invalid
    got = "; ".join(f"{c.function.name}({c.function.arguments})" for c in calls)
    return {
        "category": "multi-call",
        "question": question,
        "ok": ok,
        "invalid": invalid,
        "calls": len(calls),
        "got": got or f"no call: {(msg.content or '')[:60]!r}",
    }


def score(client: Any, model: str) -> dict[str, Any]:
    rows = []
    for category, question, tools, want_tool, want_args in TASKS:
        resp = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            tools=tools,
            temperature=0,
            max_tokens=150,
        )
        msg = resp.choices[0].message
        calls = msg.tool_calls or []
        invalid = _invalid(calls, tools)
        if want_tool is None:
            ok = not calls and bool((msg.content or "").strip())
            what = "answer" if ok else f"call {calls[0].function.name}"
        elif not calls:
            ok, what = False, f"no call: {(msg.content or '')[:60]!r}"
        else:
            c = calls[0]
            args = json.loads(c.function.arguments) if not invalid else {}
            ok = c.function.name == want_tool and not invalid and _values_ok(args, want_args)
            what = f"{c.function.name}({c.function.arguments})"
        rows.append(
            {"category": category, "question": question, "ok": ok, "invalid": invalid, "got": what}
        )
    rows += [_multi_row(client, model, q, tools, want) for q, tools, want in MULTI]
    agent, transcript = agent_loop(client, model)
    by: dict[str, list[int]] = {}
    for r in rows:
        by.setdefault(r["category"], [0, 0])
        by[r["category"]][0] += int(r["ok"])
        by[r["category"]][1] += 1
    return {
        "model": model,
        "by_category": {k: f"{a}/{b}" for k, (a, b) in by.items()},
        "schema_invalid_calls": sum(r["invalid"] for r in rows),
        "agent_loop": agent,
        "agent_transcript": transcript,
        "rows": rows,
    }


def agent_loop(client: Any, model: str) -> tuple[str, list[dict[str, Any]]]:
    """Ask, run the called tool here, send the result back, expect an answer mentioning it.

    Returns the outcome and the conversation (what the model said at each turn).
    """
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What's the weather in Oslo?"}]
    for _ in range(3):
        resp = client.chat.completions.create(
            model=model, messages=messages, tools=[WEATHER], temperature=0, max_tokens=120
        )
        msg = resp.choices[0].message
        if not msg.tool_calls:
            text = msg.content or ""
            messages.append({"role": "assistant", "content": text})
            done = "12" in text or "rain" in text.lower()
            return ("completed" if done else f"answer: {text[:60]!r}"), messages
        messages.append(msg.model_dump(exclude_none=True))
        for c in msg.tool_calls:
            result = {"city": "Oslo", "temperature_c": 12, "sky": "rain"}
            messages.append({"role": "tool", "tool_call_id": c.id, "content": json.dumps(result)})
    return "did not finish in 3 turns", messages


LLM_FUNCTIONS = """
def get_weather(city: str) -> str:
    "Current weather in a city"
    return f"{city}: 12 C, rain"
"""


def llm_cli_loop(port: int, model: str) -> dict[str, Any]:
    """simonw's ``llm`` with ``--functions`` against the server: does its tool loop finish?

    ``llm`` reaches the server through an ``extra-openai-models.yaml`` in a
    temporary ``LLM_USER_PATH``; ``--td`` prints each call and its result.
    """
    import shutil
    import tempfile

    exe = shutil.which("llm", path=os.path.dirname(sys.executable)) or shutil.which("llm")
    if exe is None:
        return {"outcome": "llm is not installed"}
    with tempfile.TemporaryDirectory() as home:
        with open(os.path.join(home, "extra-openai-models.yaml"), "w") as f:
            f.write(
                f"- model_id: local\n  model_name: {model}\n"
                f"  api_base: http://127.0.0.1:{port}/v1\n  supports_tools: true\n"
            )
        env = {**os.environ, "LLM_USER_PATH": home, "OPENAI_API_KEY": "x"}
        run = subprocess.run(
            [
                exe,
                "-m",
                "local",
                "-n",
                "--td",
                "--functions",
                LLM_FUNCTIONS,
                "-o",
                "temperature",
                "0",
                "What's the weather in Oslo?",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    calls = run.stderr.count("Tool call: get_weather")  # --td: calls and results on stderr
    answer = run.stdout.strip()
    done = run.returncode == 0 and calls >= 1 and ("12" in answer or "rain" in answer.lower())
    outcome = "completed" if done else f"did not complete (rc {run.returncode}, {calls} calls)"
    return {
        "outcome": outcome,
        "calls": calls,
        "answer": answer[-500:],
        "calls_shown": run.stderr[-1500:],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--llm4all", default=os.path.join(os.path.dirname(sys.executable), "llm4all"))
    ap.add_argument("--src", help="run the server from this src/ (a worktree's: 'before')")
    ap.add_argument("--json")
    ap.add_argument("--llm-cli", action="store_true", help="also run simonw's llm --functions")
    args = ap.parse_args()
    import openai

    port = _free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    if args.src:
        env["PYTHONPATH"] = args.src
    server = subprocess.Popen(
        [args.llm4all, "serve", "--port", str(port), "-m", args.model, "--parallel", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", timeout=600)
        for _ in range(600):
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(1)
        started = time.time()
        result = score(client, args.model)
        if args.llm_cli:
            result["llm_cli"] = llm_cli_loop(port, args.model)
        result["seconds"] = round(time.time() - started, 1)
        result["load"] = os.getloadavg()[0]
        result["src"] = args.src or "this checkout"
    finally:
        server.terminate()
        server.wait(30)
    print(
        json.dumps(
            {k: v for k, v in result.items() if k not in ("rows", "agent_transcript")}, indent=1
        )
    )
    for r in result["rows"]:
        print(
            ("ok " if r["ok"] else "-- ")
            + f"{r['category']:<11} {r['question'][:40]:<40} {r['got'][:70]}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
