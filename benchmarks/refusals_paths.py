"""The seed's story prompt through every path a user can take, at each path's default sampling.

Issue: the default model declined ``write me a story about a lonely computer``
in 4 of 8 runs. The fix is a per-model system prompt chosen in one place
(``Model.system_prompt_for``); this script checks that every front end gets
it, by counting refusals (:mod:`llm4all.data.refusals`) over 24 runs of each
path. No path is given a system prompt: each must find the default itself.

Paths: the Python API (``Model.generate``, ``Model.chat().send``), the compat
API (``chat_session`` + ``generate``, ``open`` + ``prompt``,
``chat_completion``), the CLI (``llm4all run``, ``llm4all chat``), and a real
``llm4all serve`` process (``/v1/chat/completions`` and the web chat's
``/api/chats``). Seeds 0–23 where the path takes a seed; compat ``generate`` and
``chat_completion`` take none (as in the original), so they run unseeded.

Example: ``python benchmarks/refusals_paths.py --runs 24``
"""

from __future__ import annotations

import argparse
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _harness as h
from llm4all.data import is_refusal

STORY = "write me a story about a lonely computer"
CLI = [sys.executable, "-m", "llm4all"]


def python_paths(model_name: str, max_tokens: int) -> dict[str, Callable[[int], str]]:
    import llm4all
    from llm4all.gpt4all import GPT4All

    model = llm4all.Model(model_name, n_ctx=2048)
    compat = GPT4All(model_name, n_ctx=2048)

    def compat_session(seed: int) -> str:
        with compat.chat_session():
            return str(compat.generate(STORY, max_tokens=max_tokens))

    def compat_prompt(seed: int) -> str:
        old = GPT4All(
            model_name, n_ctx=2048, decoder_config={"seed": seed, "n_predict": max_tokens}
        )
        old.open()
        try:
            return old.prompt(STORY)
        finally:
            old.close()

    def compat_chat_completion(seed: int) -> str:
        reply = compat.chat_completion(
            [{"role": "user", "content": STORY}],
            verbose=False,
            streaming=False,
            max_tokens=max_tokens,
        )
        return str(reply["choices"][0]["message"]["content"])

    return {
        "Model.generate": lambda s: model.generate(STORY, seed=s, max_tokens=max_tokens),
        "Model.chat().send": lambda s: (
            model.chat().send(STORY, seed=s, max_tokens=max_tokens).text()
        ),
        "compat chat_session+generate": compat_session,
        "compat open+prompt": compat_prompt,
        "compat chat_completion": compat_chat_completion,
    }


def cli_paths(model_name: str, max_tokens: int) -> dict[str, Callable[[int], str]]:
    from llm4all import paths

    common = ["-m", model_name, "--max-tokens", str(max_tokens)]
    models = paths.models_dir()

    def run(seed: int) -> str:
        cmd = [*CLI, "run", STORY, *common, "--seed", str(seed)]
        return subprocess.run(cmd, capture_output=True, text=True, env=h.child_env()).stdout

    def chat(seed: int) -> str:
        # The answer is read from the chat store (stdout also has the banner and tips).
        with tempfile.TemporaryDirectory() as home:
            env = {**h.child_env(), "LLM4ALL_HOME": home, "LLM4ALL_MODELS": str(models)}
            cmd = [*CLI, "chat", *common, "--seed", str(seed)]
            subprocess.run(cmd, input=STORY + "\n", capture_output=True, text=True, env=env)
            with sqlite3.connect(Path(home) / "llm4all.db") as db:
                row = db.execute(
                    "SELECT content FROM messages WHERE role = 'assistant' ORDER BY seq DESC"
                ).fetchone()
        return str(row[0]) if row else ""

    return {"llm4all run": run, "llm4all chat": chat}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(model_name: str) -> Iterator[str]:
    port = _free_port()
    cmd = [*CLI, "serve", "--model", model_name, "--port", str(port), "--ctx", "2048"]
    proc = subprocess.Popen(
        cmd, env=h.child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def server_paths(base: str, model_name: str, max_tokens: int) -> dict[str, Callable[[int], str]]:
    import httpx

    client = httpx.Client(base_url=base, timeout=600)

    def openai(seed: int) -> str:
        body = {
            "model": model_name,
            "messages": [{"role": "user", "content": STORY}],
            "seed": seed,
            "max_tokens": max_tokens,
        }
        reply = client.post("/v1/chat/completions", json=body).raise_for_status().json()
        return str(reply["choices"][0]["message"]["content"])

    def web_ui(seed: int) -> str:
        params = {"seed": seed, "max_tokens": max_tokens}
        chat = client.post("/api/chats", json={"model": model_name, "params": params})
        chat_id = chat.raise_for_status().json()["id"]
        client.post(f"/api/chats/{chat_id}/messages", json={"content": STORY}).raise_for_status()
        messages = client.get(f"/api/chats/{chat_id}").raise_for_status().json()["messages"]
        return str(messages[-1]["content"])

    return {"/v1/chat/completions": openai, "web chat /api/chats": web_ui}


def measure(
    paths: dict[str, Callable[[int], str]], runs: int, only: list[str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, answer_with in paths.items():
        if only is not None and name not in only:
            continue
        answers = [answer_with(seed) for seed in range(runs)]
        refusals = [a for a in answers if is_refusal(a)]
        out[name] = {"runs": runs, "refusals": len(refusals), "answers": answers}
        h.note(f"{name}: {len(refusals)} refusals in {runs}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=h.DEFAULT_MODEL)
    p.add_argument("--runs", type=int, default=24)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--quick", action="store_true", help="3 runs a path")
    p.add_argument(
        "--paths", help="comma-separated path names to run (default: all nine), e.g. 'llm4all run'"
    )
    p.add_argument("--out", default="refusals_paths", help="results name")
    args = p.parse_args()
    only = args.paths.split(",") if args.paths else None
    runs = 3 if args.quick else args.runs
    load_before = h.load_average()
    results = measure(python_paths(args.model, args.max_tokens), runs, only)
    results |= measure(cli_paths(args.model, args.max_tokens), runs, only)
    if only is None or any(name.startswith(("/v1", "web")) for name in only):
        with server(args.model) as base:
            results |= measure(server_paths(base, args.model, args.max_tokens), runs, only)
    h.print_table(
        f"'{STORY}' through every path ({args.model}, no system prompt given)",
        ["path", "refusals"],
        [[name, f"{r['refusals']}/{r['runs']}"] for name, r in results.items()],
    )
    payload = {
        "benchmark": "refusals_paths",
        "model": args.model,
        "machine": h.machine_info(),
        "settings": {"runs": runs, "max_tokens": args.max_tokens},
        "load_before": load_before,
        "load_after": h.load_average(),
        "results": results,
    }
    h.write_json(args.out, args.quick, payload)


if __name__ == "__main__":
    main()
