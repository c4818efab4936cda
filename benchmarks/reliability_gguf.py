"""Reliability with corrupt models: every broken copy of SmolLM2 through ``models add``, ``run``, ``serve``.

Each corruption of ``tests/gguf_corruptions.py`` (header, hyper-parameters,
tensor table, vocabulary, weights; 27 in all) is made from SmolLM2 in a
temporary folder and given to three real front ends, each with its own fresh
model store (so each proves the file itself):

- ``llm4all models add FILE``;
- ``llm4all run -m FILE "The capital of France is" -n 12 --temp 0``;
- one ``llm4all serve`` whose store holds SmolLM2 and every broken file: each
  is asked for a chat completion by name, then SmolLM2 is asked, to see that
  the server still serves. A server that died is counted and started again.

Counted per front end: refused with one line (rc 1, one line on stderr, or an
HTTP error status with a message), crashes by signal, tracebacks, answers
with rc 0 / HTTP 200 (for most corruptions that means garbage), and for the
server whether it was alive after every request.

Example: ``python benchmarks/reliability_gguf.py`` (about 5 minutes); with
``PYTHONPATH=OLD_CHECKOUT/src`` it measures an older llm4all the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "tests"))  # the corruptions are shared with the tests

import gguf_corruptions  # noqa: E402

PROMPT = "The capital of France is"
FAST = "smollm2-135m-instruct"


def _env(root: Path, name: str) -> dict[str, str]:
    env = os.environ | {
        "LLM4ALL_HOME": str(root / name / "home"),
        "LLM4ALL_MODELS": str(root / name / "models"),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    if "PYTHONPATH" not in os.environ:
        env["PYTHONPATH"] = str(REPO / "src")
    return env


def classify(rc: int, stderr: str) -> str:
    """One word for how a command ended."""
    if rc < 0:
        return "crash"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if rc == 0:
        return "answered"
    lines = [line for line in stderr.splitlines() if line.strip()]
    return "refused" if len(lines) == 1 else f"refused in {len(lines)} lines"


def run_cli(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "llm4all", *args],
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
        timeout=600,
    )
    outcome = classify(done.returncode, done.stderr)
    return {
        "outcome": outcome,
        "rc": done.returncode,
        "stderr_lines": len(done.stderr.splitlines()),
        "message": done.stderr.strip().splitlines()[-1][:300] if done.stderr.strip() else "",
        "stdout": done.stdout[:200],
        "seconds": round(time.perf_counter() - t0, 2),
    }


class Server:
    """A real ``llm4all serve`` on a free port; started again when it dies."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log, self.starts = env, log, 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            *(sys.executable, "-m", "llm4all", "serve", "--model", FAST, "--port", str(port)),
            *("--threads", "1", "--parallel", "1", "--ctx", "512", "--max-loaded", "2"),
            *("--log-level", "warning"),
        ]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log.open("ab")
        )
        self.url = f"http://127.0.0.1:{port}"
        self.starts += 1
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start (see {self.log})")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ask(self, model: str) -> dict[str, Any]:
        if not self.alive():
            self.start()
        body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 12}
        body["temperature"] = 0
        try:
            r = httpx.post(self.url + "/v1/chat/completions", json=body, timeout=600)
            status, text = r.status_code, r.text
        except httpx.HTTPError as exc:
            status, text = 0, f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)  # a crash takes a moment to be reaped
        alive = self.alive()
        signal_name = None
        if not alive and self.proc is not None and (self.proc.returncode or 0) < 0:
            signal_name = signal.Signals(-self.proc.returncode).name
        if status == 200:
            outcome = "answered"
        elif status == 0 or not alive:
            outcome = "crash"
        else:
            outcome = "refused"
        return {"outcome": outcome, "status": status, "alive": alive, "signal": signal_name,
                "body": text[:300]}  # fmt: skip

    def stop(self) -> str:
        if self.proc is not None and self.alive():
            self.proc.terminate()
            self.proc.wait(timeout=60)
        tail = self.log.read_text("utf-8", "replace")
        return tail


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="the GGUF to corrupt (default: SmolLM2 in the store)")
    p.add_argument("--only", nargs="*", help="corruption names (default: all)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "reliability_gguf.json")
    args = p.parse_args()
    if args.model is None:
        from llm4all.models import ModelStore

        args.model = ModelStore().resolve(FAST, allow_download=False).path
    names = args.only or list(gguf_corruptions.CORRUPTIONS)
    root = Path(tempfile.mkdtemp(prefix="reliability-gguf-"))
    broken = root / "broken"
    broken.mkdir()
    serve_env = _env(root, "serve")
    store = Path(serve_env["LLM4ALL_MODELS"])
    store.mkdir(parents=True)
    os.link(args.model, store / args.model.name)
    files = {}
    for name in names:
        files[name] = gguf_corruptions.make(args.model, broken, name)
        os.link(files[name], store / files[name].name)
    server = Server(serve_env, root / "serve.log")
    server.start()
    rows = []
    for name in names:
        path = files[name]
        row = {
            "name": name,
            "group": gguf_corruptions.CORRUPTIONS[name][0],
            "add": run_cli(["models", "add", str(path)], _env(root, f"add-{name}")),
            "run": run_cli(
                ["run", "-m", str(path), PROMPT, "-n", "12", "--temp", "0"],
                _env(root, f"run-{name}"),
            ),
            "serve": server.ask(path.stem),
        }
        row["serve_after"] = server.ask(FAST)
        rows.append(row)
        print(
            f"{name:28} add={row['add']['outcome']:10} run={row['run']['outcome']:10} "
            f"serve={row['serve']['outcome']:9} alive={row['serve']['alive']} "
            f"| {row['run']['message'][:90]}",
            flush=True,
        )
    log = server.stop()
    report = summarise(rows, server.starts, log)
    report["rows"] = rows
    report["llm4all"] = _version_path()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))


def summarise(rows: list[dict[str, Any]], starts: int, log: str) -> dict[str, Any]:
    counts = {
        front: Counter(r[front]["outcome"] for r in rows) for front in ("add", "run", "serve")
    }
    return {
        "corruptions": len(rows),
        "counts": {front: dict(c) for front, c in counts.items()},
        "server_alive_after_every_request": all(
            r["serve"]["alive"] and r["serve_after"]["alive"] for r in rows
        ),
        "server_starts": starts,
        "good_model_answered_after_each": sum(r["serve_after"]["status"] == 200 for r in rows),
        "tracebacks_in_server_log": log.count("Traceback (most recent call last)"),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
    }


def _version_path() -> str:
    done = subprocess.run(
        [sys.executable, "-c", "import llm4all; print(llm4all.__file__)"],
        capture_output=True,
        text=True,
        env=os.environ | ({} if "PYTHONPATH" in os.environ else {"PYTHONPATH": str(REPO / "src")}),
    )
    return done.stdout.strip()


if __name__ == "__main__":
    main()
