"""Reliability of ``llm4all serve``: load with hang-ups, ``kill -9`` mid-load, restart; repeat.

A real server process (the fast model, ``--parallel 8``) on a fresh llm4all
home gets the load test's mix of OpenAI requests (``load_test.py``: streamed
and whole chat completions, text completions, ``n=2``, logprobs, JSON mode)
from most clients, while a few clients chat through the web UI's API (one
stored chat each, answers saved as they stream). About 10 % of the streams are
abandoned mid-way. In each round the server is killed with SIGKILL once a share
of the round's requests has completed; the databases are then checked with
``PRAGMA integrity_check`` and the server is started again on the same home
and port, where every message the clients saw saved must still be there. A last
round runs to the end without a kill and measures memory.

Counted: requests, status codes, 5xx, hangs (a request with no answer for
``--hang-s``), malformed streams, server crashes (an exit nobody asked for),
tracebacks in the server's log, databases intact, chats and messages kept
after each restart, and RSS.

Example: ``python benchmarks/reliability_server.py --quick``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

import _harness as h
from load_test import Outcome, one, plan

NAME = "reliability_server"


# -- the server process ---------------------------------------------------------------------
@dataclass
class Server:
    """One ``llm4all serve`` process on ``home``; restarted on the same port."""

    model: str  # a name in the model store ``models``
    models: Path
    home: Path
    port: int
    threads: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [
            *(sys.executable, "-m", "llm4all", "serve", "--model", self.model),
            *("--models-dir", str(self.models)),
            *("--port", str(self.port), "--threads", str(self.threads), "--parallel", "8"),
            *("--ctx", "1024", "--keep-alive", "-1", "--log-level", "warning"),
        ]
        env = h.child_env() | {"LLM4ALL_HOME": str(self.home), "OMP_WAIT_POLICY": "PASSIVE"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} at start")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not start in 180 s")

    def rss_mb(self) -> float | None:
        try:
            return round(psutil.Process(self.pid).memory_info().rss / 2**20, 1)
        except (psutil.Error, AssertionError):
            return None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(30)

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit code (None: it had to be killed; uvicorn re-raises
        the signal after a graceful shutdown, so a clean exit is -15)."""
        assert self.proc is not None
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


# -- the web chat clients: what they saw saved ------------------------------------------------
@dataclass
class Seen:
    """Everything one web chat client saw the server save, to look for after a restart."""

    chat_id: str
    user: dict[str, str] = field(default_factory=dict)  # message id -> content
    answers: dict[str, str] = field(default_factory=dict)  # finished: id -> content
    partial: list[tuple[str, str]] = field(default_factory=list)  # (user id, text streamed)


async def web_turn(
    client: httpx.AsyncClient, seen: Seen, text: str, abandon: bool, rng: random.Random
) -> Outcome:
    out = Outcome("web-chat")
    t0 = time.perf_counter()
    user_id, streamed, events = None, [], 0
    cut_after = rng.randint(3, 8) if abandon else None
    path = f"/api/chats/{seen.chat_id}/messages"
    try:
        async with client.stream("POST", path, json={"content": text}) as r:
            out.status = r.status_code
            if r.status_code != 200:
                await r.aread()
                return out
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                events += 1
                event = _json(line[6:])
                if event is None:
                    out.problems.append("an event is not JSON")
                    break
                kind = event.get("type")
                if kind == "user":
                    user_id = event["message"]["id"]
                    seen.user[user_id] = event["message"]["content"]
                elif kind == "delta":
                    streamed.append(event["text"])
                elif kind == "done":
                    if event.get("message"):
                        seen.answers[event["message"]["id"]] = event["message"]["content"]
                    user_id = None
                elif kind == "error":
                    out.problems.append(f"error event: {event.get('error')}")
                if cut_after is not None and events >= cut_after:
                    out.abandoned = True
                    break
    finally:
        if user_id is not None and streamed:  # abandoned or cut: part of an answer
            seen.partial.append((user_id, "".join(streamed)))
        out.seconds = time.perf_counter() - t0
    if out.abandoned:  # wait until the server has let the chat go (bounded)
        for _ in range(100):
            chat = (await client.get(f"/api/chats/{seen.chat_id}")).json()
            if not chat.get("generating"):
                break
            await asyncio.sleep(0.1)
    return out


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


# -- one round of load ------------------------------------------------------------------------
@dataclass
class Round:
    outcomes: list[Outcome] = field(default_factory=list)
    cut_by_kill: int = 0
    hangs: int = 0
    killed: bool = False
    crashed: bool = False
    rss_peak_mb: float = 0.0


async def run_round(
    server: Server, model: str, seen: list[Seen], args: argparse.Namespace, seed: int, kill: bool
) -> Round:
    rng = random.Random(seed)
    plans = [plan(i, rng) for i in range(args.requests)]
    for p in plans:
        p["body"]["model"] = model
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for p in plans:
        queue.put_nowait(p)
    result = Round()
    kill_at = int(args.requests * rng.uniform(0.4, 0.7)) if kill else None
    timeout = httpx.Timeout(args.hang_s, connect=10)

    async def api_client(k: int) -> None:
        crng = random.Random(seed * 1000 + k)
        async with httpx.AsyncClient(base_url=server.url, timeout=timeout) as client:
            while not queue.empty() and not result.killed:
                req = queue.get_nowait()
                await guarded(one(client, req, crng), req["kind"])

    async def web_client(k: int, mine: Seen) -> None:
        crng = random.Random(seed * 2000 + k)
        async with httpx.AsyncClient(base_url=server.url, timeout=timeout) as client:
            turn = 0
            while not queue.empty() and not result.killed:
                queue.get_nowait()  # a web turn takes the place of one planned request
                turn += 1
                text = f"Round {seed}, turn {turn}: name a colour."
                abandon = crng.random() < 0.1
                await guarded(web_turn(client, mine, text, abandon, crng), "web-chat")

    async def guarded(work: Any, kind: str) -> None:
        try:
            result.outcomes.append(await work)
        except httpx.TimeoutException:
            result.hangs += 1
            result.outcomes.append(Outcome(kind, 0, ["hang"]))
        except httpx.HTTPError as exc:
            if result.killed:
                result.cut_by_kill += 1
            else:
                result.outcomes.append(Outcome(kind, 0, [f"{type(exc).__name__}: {exc}"]))

    async def watch() -> None:
        while not all(t.done() for t in tasks):
            if not server.alive() and not result.killed:
                result.crashed = True
                return
            result.rss_peak_mb = max(result.rss_peak_mb, server.rss_mb() or 0.0)
            done = sum(o.status == 200 for o in result.outcomes)
            if kill_at is not None and done >= kill_at and not result.killed:
                result.killed = True
                await asyncio.to_thread(server.kill)
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(api_client(k)) for k in range(args.clients - len(seen))]
    tasks += [asyncio.create_task(web_client(k, s)) for k, s in enumerate(seen)]
    await asyncio.gather(watch(), *tasks)
    return result


# -- after a kill ---------------------------------------------------------------------------
def integrity(home: Path) -> dict[str, str]:
    """``PRAGMA integrity_check`` of every database in the home (the server is down)."""
    out = {}
    for db in sorted(home.rglob("*.db")):
        conn = sqlite3.connect(db)
        try:
            out[db.name] = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        except sqlite3.Error as exc:
            out[db.name] = f"error: {exc}"
        finally:
            conn.close()
    return out


def kept(server: Server, seen: list[Seen]) -> dict[str, int]:
    """What the restarted server still has of what the clients saw saved."""
    counts = Counter[str]()
    for s in seen:
        messages = httpx.get(f"{server.url}/api/chats/{s.chat_id}", timeout=30).json()["messages"]
        stored = {m["id"]: m["content"] for m in messages}
        counts["user_messages_seen"] += len(s.user)
        counts["user_messages_lost"] += sum(stored.get(i) != c for i, c in s.user.items())
        counts["answers_seen"] += len(s.answers)
        counts["answers_lost_or_changed"] += sum(stored.get(i) != c for i, c in s.answers.items())
        by_user = {m["id"]: n for n, m in enumerate(messages)}
        for user_id, streamed in s.partial:
            counts["partial_answers"] += 1
            n = by_user.get(user_id)
            after = messages[n + 1] if n is not None and n + 1 < len(messages) else None
            text = after["content"] if after and after["role"] == "assistant" else ""
            counts["partial_chars_streamed"] += len(streamed)
            counts["partial_chars_kept"] += min(len(text), len(streamed))
            counts["partial_kept_not_a_prefix"] += bool(
                text and not (text.startswith(streamed) or streamed.startswith(text))
            )
        s.partial.clear()
    return dict(counts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the run --------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 40 requests, 8 clients")
    p.add_argument("--model", help=f"model (default: {h.FAST_MODEL})")
    p.add_argument("--rounds", type=int, default=3, help="rounds ended by kill -9")
    p.add_argument("--requests", type=int, default=100, help="requests per round")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--web-clients", type=int, default=4, help="of the clients, web chat ones")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hang-s", type=float, default=120, help="no answer for this long: a hang")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.requests, args.clients, args.web_clients = 1, 40, 8, 2
    name = args.model or h.FAST_MODEL
    model = h.resolve_model(name, True)
    machine = h.machine_info() | {"load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="llm4all-reliability-") as tmp:
        tmp_path = Path(tmp)
        server = Server(
            name, model.parent, tmp_path / "home", free_port(), args.threads, tmp_path / "log"
        )
        figures = run(server, args)
        log = server.log.read_text(errors="replace")
    figures["server_log_tracebacks"] = log.count("Traceback (most recent call last)")
    figures["server_log_tail"] = log.strip().splitlines()[-5:]
    machine["load_average_at_end"] = os.getloadavg()
    report(args, machine, model.name, figures)


def run(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    server.start()
    name = server.model
    seen = []
    for k in range(args.web_clients):
        body = {"title": f"client {k}", "params": {"temperature": 0, "max_tokens": 32}}
        seen.append(Seen(httpx.post(server.url + "/api/chats", json=body).json()["id"]))
    rounds: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    for number in range(1, args.rounds + 2):
        last = number == args.rounds + 1
        rss_start = server.rss_mb()
        result = asyncio.run(run_round(server, name, seen, args, number, kill=not last))
        row: dict[str, Any] = {
            "round": number,
            "requests": len(result.outcomes),
            "status_codes": dict(Counter(str(o.status) for o in result.outcomes)),
            "cut_by_kill": result.cut_by_kill,
            "hangs": result.hangs,
            "crashed": result.crashed,
            "killed": result.killed,
            "malformed": sum(
                bool(o.problems) for o in result.outcomes if o.status == 200 and not o.abandoned
            ),
            "problems": [p for o in result.outcomes for p in o.problems][:10],
            "abandoned": sum(o.abandoned for o in result.outcomes),
            "rss_mb": {"start": rss_start, "peak": result.rss_peak_mb},
        }
        if last:
            time.sleep(3)
            row["rss_mb"]["end"] = server.rss_mb()
            row["kept"] = kept(server, seen)
            row["clean_exit_code"] = server.stop()
            row["integrity"] = integrity(server.home)
        else:
            if result.crashed or not result.killed:
                server.kill() if server.alive() else None
            row["integrity"] = integrity(server.home)
            server.start()
            row["kept"] = kept(server, seen)
        rounds.append(row)
        h.note(f"round {number}: {row}")
        totals["requests"] += row["requests"]
        totals["server_errors_5xx"] += sum(
            v for k, v in row["status_codes"].items() if k.isdigit() and int(k) >= 500
        )
        totals["hangs"] += row["hangs"]
        totals["malformed_streams"] += row["malformed"]
        totals["crashes"] += int(row["crashed"])
        totals["kills"] += int(row["killed"])
        totals["cut_by_kill"] += row["cut_by_kill"]
        totals["abandoned_mid_stream"] += row["abandoned"]
        totals["databases_not_ok"] += sum(v != "ok" for v in row["integrity"].values())
        for k, v in row["kept"].items():  # each check covers every message seen so far
            totals[k] = v if k.startswith(("user_", "answers_")) else totals[k] + v
    return {"totals": dict(totals), "rounds": rounds}


def report(
    args: argparse.Namespace, machine: dict[str, Any], model: str, figures: dict[str, Any]
) -> None:
    totals = figures["totals"]
    first, last = figures["rounds"][0], figures["rounds"][-1]
    rows = [[k, str(v)] for k, v in totals.items()]
    rows.append(
        [
            "rss_mb first round start → last round end",
            f"{first['rss_mb']['start']} → {last['rss_mb'].get('end')}",
        ]
    )
    rows.append(["server log tracebacks", str(figures["server_log_tracebacks"])])
    h.print_table(f"Server reliability: {model}", ["figure", "value"], rows)
    targets = {
        "no 5xx": totals.get("server_errors_5xx", 0) == 0,
        "no hang": totals.get("hangs", 0) == 0,
        "no malformed stream": totals.get("malformed_streams", 0) == 0,
        "no crash": totals.get("crashes", 0) == 0,
        "no traceback in the server log": figures["server_log_tracebacks"] == 0,
        "every database intact": totals.get("databases_not_ok", 0) == 0,
        "no saved message lost": totals.get("user_messages_lost", 0) == 0
        and totals.get("answers_lost_or_changed", 0) == 0,
        "clean exit on SIGTERM": last.get("clean_exit_code") in (0, -signal.SIGTERM),
    }
    verdicts = h.print_targets(targets)
    payload = {
        "benchmark": NAME,
        "quick": args.quick,
        "machine": machine,
        "model": model,
        "settings": {
            k: getattr(args, k)
            for k in ("rounds", "requests", "clients", "web_clients", "threads", "hang_s")
        }
        | {"parallel": 8, "ctx": 1024},
        "figures": figures,
        "targets": verdicts,
    }
    h.write_json(NAME, args.quick, payload)


if __name__ == "__main__":
    main()
