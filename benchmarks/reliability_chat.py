"""Reliability of the terminal chat: killed mid-answer again and again, is every answer kept?

Each run starts ``llm4all chat --plain`` in a real pseudo-terminal (one
database for all runs, as a user has), asks for a long text, lets the answer
stream for a random 1–5 s, then ends the program one of three ways, in turn:

- ``kill -9``: nothing can run. The answer is saved while it streams (every
  0.5 s), so the database must hold at least what was on screen one second
  before the kill;
- SIGTERM: the chat stops the answer, saves it whole and exits with 143;
- SIGHUP by closing the terminal (the pty's master side is closed, as when a
  terminal window is closed): saved whole, exit status 129.

After each run the newest chat's answer is compared with the screen, the exit
status classified (a death by any signal but our ``kill -9`` is a crash), the
output searched for tracebacks and ``PRAGMA integrity_check`` run on the
database. A second part measures what saving costs the decode loop: the same
greedy answers with and without a chat store, interleaved, and the time spent
in the store's writes.

Example: ``python benchmarks/reliability_chat.py --quick``
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pexpect

import _harness as h

NAME = "reliability_chat"
MODES = ("SIGKILL", "SIGTERM", "SIGHUP (terminal closed)")
PROMPTS = [
    "Write a very long story about a brave knight and a dragon.",
    "Explain in great detail how a car engine works, part by part.",
    "Write a long essay about the history of the Roman Empire.",
    "Describe twenty famous paintings, one paragraph each.",
    "Write a detailed guide to growing tomatoes, from seed to harvest.",
]
ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>])")


@dataclass
class Run:
    number: int
    mode: str
    prompt: str
    streamed_s: float  # how long the answer streamed before the signal
    finished_first: bool = False  # the answer ended before the signal (not counted)
    on_screen: int = 0  # characters of the answer on screen at the signal
    on_screen_1s_before: int = 0
    saved: int = 0
    lost_beyond_1s: int = 0  # characters on screen a second before the signal, not saved
    behind: int = 0  # characters on screen at the signal, not saved
    finish_reason: str | None = None
    tokens_per_second: float | None = None
    exit: str = ""
    crash: bool = False
    traceback: bool = False
    exit_s: float | None = None  # signal to process gone
    integrity: str = ""
    problems: list[str] = field(default_factory=list)


# -- one run ----------------------------------------------------------------------------
class Screen:
    """What the chat printed, with the time each piece arrived (every read, ``expect``'s too)."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.pieces: list[tuple[float, str]] = []
        child.logfile_read = self

    def write(self, text: str) -> None:
        self.pieces.append((time.monotonic(), text))

    def flush(self) -> None:
        pass

    def pump(self, seconds: float) -> None:
        """Read for ``seconds`` (or until the chat ends)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self.child.read_nonblocking(65536, timeout=0.05)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                return

    def text(self, until: float = float("inf")) -> str:
        return "".join(t for at, t in self.pieces if at <= until)


def answer_on_screen(raw: str, prompt: str) -> str:
    """The answer's text: what follows the echoed question, without escapes or ``\\r``."""
    clean = ANSI.sub("", raw).replace("\r", "")
    start = clean.rfind(prompt)
    if start < 0:
        return ""
    rest = clean[start + len(prompt) :]
    return rest[rest.find("\n") + 1 :] if "\n" in rest else ""


def common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def one_run(number: int, mode: str, args: Any, env: dict[str, str], db: Path) -> Run:
    rng = random.Random(number)
    prompt = PROMPTS[number % len(PROMPTS)]
    run = Run(number, mode, prompt, round(rng.uniform(1.0, 5.0), 2))
    cmd = ["-m", "llm4all", "chat", "--plain", "-m", str(args.model_path), "--temp", "0"]
    child = pexpect.spawn(
        sys.executable,
        [*cmd, "-n", "2000", "--ctx", "4096"],
        env=env,
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
    )
    screen = Screen(child)
    child.expect("Ctrl-D to leave")
    child.expect(">")
    child.sendline(prompt)
    child.expect_exact(prompt[-12:])
    start = time.monotonic()
    while not answer_on_screen(screen.text(), prompt).strip():  # the answer started
        screen.pump(0.1)
        if not child.isalive() or time.monotonic() - start > 300:
            run.problems.append(f"no answer: {screen.text()[-300:]!r}")
            return run
    screen.pump(run.streamed_s)
    run.finished_first = _saved(db).get("finish_reason") in ("stop", "length")
    sent = time.monotonic()
    if mode == "SIGKILL":
        child.kill(signal.SIGKILL)
    elif mode == "SIGTERM":
        child.kill(signal.SIGTERM)
    else:
        hang_up(child)
    if mode != "SIGHUP (terminal closed)":
        screen.pump(60 if mode == "SIGTERM" else 2)
    _wait(child, run, sent)
    raw = screen.text()
    shown = answer_on_screen(screen.text(sent), prompt)
    before = answer_on_screen(screen.text(sent - 1.0), prompt)
    saved = _saved(db)
    content = saved.get("content", "")
    run.on_screen, run.on_screen_1s_before, run.saved = len(shown), len(before), len(content)
    run.lost_beyond_1s = len(before) - common_prefix(content, before)
    run.behind = len(shown) - common_prefix(content, shown)
    run.finish_reason = saved.get("finish_reason")
    run.tokens_per_second = saved.get("tokens_per_second")
    run.traceback = "Traceback" in raw
    run.integrity = _integrity(db)
    return run


def hang_up(child: pexpect.spawn) -> None:
    """Close the terminal under the chat (the kernel sends it SIGHUP), and nothing else.

    pexpect's ``close()`` would follow up with SIGHUP, SIGCONT and SIGINT of its own.
    """
    child.ptyproc.fileobj.close()
    child.ptyproc.closed, child.ptyproc.fd = True, -1
    child.child_fd, child.closed = -1, True


def _wait(child: pexpect.spawn, run: Run, sent: float) -> None:
    """Reap the child; its exit status, or the signal that ended it."""
    pid = child.pid
    _, status = os.waitpid(pid, 0)
    run.exit_s = round(time.monotonic() - sent, 3)
    child.terminated = True
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        run.exit = f"killed by {sig}"
        run.crash = not (run.mode == "SIGKILL" and sig == "SIGKILL")
    else:
        run.exit = f"exit {os.WEXITSTATUS(status)}"


def _saved(db: Path) -> dict[str, Any]:
    """The newest chat's answer as stored (empty when there is none)."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute(
            "SELECT m.* FROM messages m JOIN chats c ON c.id = m.chat_id"
            " WHERE m.role = 'assistant' ORDER BY c.created_at DESC, m.position DESC LIMIT 1"
        ).fetchone()
    return dict(row) if row is not None else {}


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


# -- what saving costs ------------------------------------------------------------------
def save_cost(model_path: Path, rounds: int, tokens: int) -> dict[str, Any]:
    """Decode speed of the same greedy answer with and without a chat store, interleaved.

    Also timed: what saving takes in the token loop (``AnswerRecorder.add``) and
    the store's writes themselves (on the recorder's thread).
    """
    import llm4all
    from llm4all.store import ChatStore, answers

    timed = {"loop_s": 0.0, "write_s": 0.0, "writes": 0}

    class TimedRecorder(answers.AnswerRecorder):
        def add(self, text: str, n_tokens: int = 0) -> None:
            t = time.perf_counter()
            super().add(text, n_tokens)
            timed["loop_s"] += time.perf_counter() - t

        def _save(self, text: str, **stats: Any) -> Any:
            t = time.perf_counter()
            try:
                return super()._save(text, **stats)
            finally:
                timed["write_s"] += time.perf_counter() - t
                timed["writes"] += 1

    answers.AnswerRecorder = TimedRecorder  # type: ignore[misc]  # ChatSession looks it up here
    speeds: dict[str, list[float]] = {"no store": [], "store": []}
    answer_s = 0.0
    with tempfile.TemporaryDirectory() as tmp, llm4all.Model(model_path, n_ctx=2048) as model:
        store = ChatStore(Path(tmp) / "llm4all.db")
        for r in range(rounds):
            for kind in ("no store", "store") if r % 2 == 0 else ("store", "no store"):
                chat = llm4all.ChatSession(model, store=store if kind == "store" else None)
                response = chat.send(PROMPTS[0], temperature=0, max_tokens=tokens)
                response.text()
                assert response.completion is not None
                speeds[kind].append(response.completion.timings.tokens_per_second)
                if kind == "store":
                    answer_s += response.completion.timings.generation_seconds
    return {
        "rounds": rounds,
        "tokens": tokens,
        "tok_s_no_store": _spread(speeds["no store"]),
        "tok_s_store": _spread(speeds["store"]),
        "ratio": round(
            statistics.median(speeds["store"]) / statistics.median(speeds["no store"]), 3
        ),
        "writes": timed["writes"],
        "write_ms_mean": round(1000 * timed["write_s"] / max(timed["writes"], 1), 2),
        "token_loop_ms_per_answer": round(1000 * timed["loop_s"] / rounds, 2),
        "token_loop_share_of_answer_time": round(timed["loop_s"] / answer_s, 5),
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


# -- report -----------------------------------------------------------------------------
def summary(runs: list[Run]) -> dict[str, Any]:
    counted = [r for r in runs if not r.finished_first and not r.problems]
    by_mode: dict[str, Any] = {}
    for mode in MODES:
        rs = [r for r in counted if r.mode == mode]
        if not rs:
            continue
        by_mode[mode] = {
            "runs": len(rs),
            "answers_kept": sum(r.saved > 0 for r in rs),
            "lost_beyond_1s": sum(r.lost_beyond_1s > 0 for r in rs),
            "chars_on_screen_median": statistics.median(r.on_screen for r in rs),
            "chars_saved_median": statistics.median(r.saved for r in rs),
            "chars_behind_max": max(r.behind for r in rs),
            "finish_reasons": dict(Counter(str(r.finish_reason) for r in rs)),
            "exits": dict(Counter(r.exit for r in rs)),
            "exit_s_max": max(r.exit_s or 0 for r in rs),
            "crashes": sum(r.crash for r in rs),
            "tracebacks": sum(r.traceback for r in rs),
            "databases_intact": sum(r.integrity == "ok" for r in rs),
        }
    return {
        "runs": len(runs),
        "counted": len(counted),
        "finished_before_signal": sum(r.finished_first for r in runs),
        "problems": [f"run {r.number}: {p}" for r in runs for p in r.problems],
        "by_signal": by_mode,
    }


def main() -> None:
    p = h.parser(__doc__.splitlines()[0], rounds=3)
    p.add_argument("--runs", type=int, default=20, help="kills (default: %(default)s)")
    p.add_argument("--cost-tokens", type=int, default=200, help="answer length, save-cost part")
    args = p.parse_args()
    runs_wanted = 6 if args.quick else args.runs
    args.model_path = h.resolve_model(args.model, args.quick)
    load_before = h.load_average()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "LLM4ALL_HOME": home,
            "PROMPT_TOOLKIT_NO_CPR": "1",
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        }
        db = Path(home) / "llm4all.db"
        for i in range(runs_wanted):
            run = one_run(i, MODES[i % len(MODES)], args, env, db)
            runs.append(run)
            h.note(
                f"run {i:2d} {run.mode:<25} streamed {run.streamed_s:4.1f}s  screen {run.on_screen:5d}"
                f"  saved {run.saved:5d}  lost>1s {run.lost_beyond_1s}  {run.exit}"
                f"  {run.finish_reason}  {run.integrity}{'  TRACEBACK' if run.traceback else ''}"
            )
    cost = save_cost(args.model_path, 2 if args.quick else args.rounds * 2, args.cost_tokens)
    result = {
        "model": args.model_path.name,
        "load_average": {"before": load_before, "after": h.load_average()},
        "summary": summary(runs),
        "save_cost": cost,
        "runs": [asdict(r) for r in runs],
    }
    h.note(str(result["summary"]))
    h.note(str(cost))
    h.write_json(NAME, args.quick, result)


if __name__ == "__main__":
    main()
