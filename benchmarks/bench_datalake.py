"""The datalake service under load: nothing lost, nothing doubled, submissions/s on both backends.

    .venv/bin/python benchmarks/bench_datalake.py            # 2,000 submissions per run
    .venv/bin/python benchmarks/bench_datalake.py --quick    # 200, for CI

Each run starts ``llm4all datalake serve`` as its own process (default limits:
60 submissions/min per submitter, burst 30) on SQLite or on a PostgreSQL
started for the run with fsync on, as deployed. 20 concurrent clients send a
seeded plan: 10 % duplicates (half the same chat re-sent under its ingest id,
half the same content shared again under a new id; always by the same
submitter), 5 % invalid payloads of ten kinds (bad role, no answer, an empty
conversation, no submitter, a control character, a rated user message, a
1.2 MB body, not JSON, a JSON array, an unpaired surrogate), the rest unique
chats from 200 submitters.

The clients are llm4all's own share queue (:class:`llm4all.datalake.queue.ShareQueue`,
one SQLite queue per client, the queue's ``post_payload``): a chat stays
pending until the service answers 2xx (sent) or a 4xx other than 429
(refused), and is retried otherwise. ``--clients plain`` uses bare httpx
clients that retry the same way, to show the service's own rate without the
clients' queue writes.

In a ``kill`` run the service is killed with SIGKILL once 40 % of the plan is
acknowledged and started again on the same database half a second later; the
clients keep retrying. Every run then checks, reading the database directly:
each valid chat stored exactly once (per submitter and content), every invalid
one refused with a 4xx, no 5xx answered.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import _harness as h

sys.path.insert(0, str(h.REPO / "tests"))
from postgres_helpers import free_port, postgres_missing, running_postgres

CLIENTS = 20
WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "question",
    "river",
    "python",
    "list",
    "sort",
    "rain",
    "window",
    "cloud",
    "data",
    "train",
    "token",
    "local",
    "private",
    "chat",
    "share",
    "rate",
    "edit",
    "better",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "cat",
    "paris",
]
INVALID_KINDS = (
    "bad_role",
    "no_answer",
    "empty",
    "no_submitter",
    "control_char",
    "rated_user",
    "too_large",
    "not_json",
    "array",
    "surrogate",
)


@dataclass
class Item:
    """One planned submission."""

    chat_id: str
    body: str
    valid: bool
    key: tuple[str, str] | None = None  # (submitter, content hash) of a valid one
    statuses: list[int | str] = field(default_factory=list)  # every answer (or "transport")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _chat(rng: random.Random, submitter: str, n: int) -> dict[str, Any]:
    turns: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 3)):
        turns.append({"content": _text(rng, rng.randint(5, 40)), "role": "user"})
        answer: dict[str, Any] = {"content": _text(rng, rng.randint(20, 200)), "role": "assistant"}
        roll = rng.random()
        if roll < 0.4:
            answer["rating"] = "positive"
        elif roll < 0.6:
            answer["rating"] = "negative"
            if rng.random() < 0.5:
                answer["edited_content"] = _text(rng, rng.randint(10, 80))
        if rng.random() < 0.05:
            answer["stopped"] = True
        turns.append(answer)
    return {
        "source": "llm4all",
        "submitter_id": submitter,
        "agent_id": "qwen2.5-coder-0.5b-instruct",
        "ingest_id": f"{submitter}-chat-{n}",
        "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
        "conversation": turns,
    }


def _invalid(kind: str, rng: random.Random, n: int) -> str:
    base = _chat(rng, f"bad-{n % 50}", n)
    turns = base["conversation"]
    if kind == "bad_role":
        turns[0]["role"] = "bot"
    elif kind == "no_answer":
        base["conversation"] = turns[:1]
    elif kind == "empty":
        base["conversation"] = []
    elif kind == "no_submitter":
        del base["submitter_id"]
    elif kind == "control_char":
        turns[0]["content"] += "\x07"
    elif kind == "rated_user":
        turns[0]["rating"] = "positive"
    elif kind == "too_large":
        turns[1]["content"] = "x" * 1_200_000
    elif kind == "not_json":
        return "{'conversation': nope"
    elif kind == "array":
        return json.dumps([base])
    elif kind == "surrogate":
        return json.dumps(base).replace(turns[0]["content"][:5], "\\ud800", 1)
    return json.dumps(base)


def plan(total: int, seed: int = 15) -> list[Item]:
    """The seeded submissions, shuffled: 85 % unique, 10 % duplicates, 5 % invalid."""
    from llm4all.datalake.payload import parse_payload

    rng = random.Random(seed)
    n_invalid = total * 5 // 100
    n_dup = total * 10 // 100
    originals: list[dict[str, Any]] = []
    items: list[Item] = []
    for n in range(total - n_invalid - n_dup):
        chat = _chat(rng, f"sub-{n % 200}", n)
        originals.append(chat)
        key = (chat["submitter_id"], parse_payload(chat).content_hash())
        items.append(Item(f"u{n}", json.dumps(chat), True, key))
    for n in range(n_dup):
        chat = dict(rng.choice(originals))
        if n % 2:
            chat["ingest_id"] = f"{chat['ingest_id']}-again-{n}"  # shared again under a new id
        key = (chat["submitter_id"], parse_payload(chat).content_hash())
        items.append(Item(f"d{n}", json.dumps(chat), True, key))
    for n in range(n_invalid):
        items.append(Item(f"x{n}", _invalid(INVALID_KINDS[n % len(INVALID_KINDS)], rng, n), False))
    rng.shuffle(items)
    return items


# -- the service ---------------------------------------------------------------------------
class Service:
    """``llm4all datalake serve`` as a child process on a fixed port."""

    def __init__(self, database: str, port: int) -> None:
        self.database = database
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it; returns the seconds until /v1/health answered."""
        t0 = time.perf_counter()
        command = [sys.executable, "-m", "llm4all", "datalake", "serve", "-d", self.database]
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=h.child_env(),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}")
            time.sleep(0.1)
        raise RuntimeError("the service did not answer /v1/health in 120 s")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


# -- the clients -----------------------------------------------------------------------------
def _final(status: int | str) -> str | None:
    """``sent``/``refused`` when this answer ends the item, None when it is retried."""
    if isinstance(status, int) and 200 <= status < 300:
        return "sent"
    if isinstance(status, int) and 400 <= status < 500 and status != 429:
        return "refused"
    return None


def queue_client(
    items: list[Item], url: str, folder: Path, acked: list[int], ready: threading.Barrier
) -> None:
    """llm4all's share queue: every item queued first (a chat each in the client's own chat
    store), then sent until each is final."""
    from llm4all.datalake.client import post_payload
    from llm4all.datalake.queue import ShareQueue
    from llm4all.store import ChatStore

    path = folder / f"client-{id(items)}.db"
    by_id: dict[str, Item] = {}
    with ChatStore(path) as store, ShareQueue(path) as queue:
        for item in items:
            chat = store.create_chat(title=item.chat_id)
            by_id[chat.id] = item
            digest = hashlib.sha256(item.body.encode("utf-8", "surrogatepass")).hexdigest()
            queue.enqueue(chat.id, item.chat_id, item.body, digest)
        ready.wait()
        with httpx.Client(timeout=30) as http:
            while True:
                queued = queue.claim(force=True)
                if queued is None:
                    return
                item = by_id[queued.chat_id]
                result = post_payload(http, url + "/v1/ingest/chat", queued.payload)
                status: int | str = result.status if result.status is not None else "transport"
                item.statuses.append(status)
                if result.ok:
                    queue.mark_sent(queued)
                    acked.append(1)
                elif _final(status) == "refused":
                    queue.mark_failed(queued, result.message, refused=True)
                    acked.append(1)
                else:
                    queue.mark_failed(queued, result.message, retry_after=result.retry_after)
                    time.sleep(0.05)


def plain_client(
    items: list[Item], url: str, folder: Path, acked: list[int], ready: threading.Barrier
) -> None:
    """Bare httpx: each item re-sent until its answer is final."""
    ready.wait()
    with httpx.Client(timeout=30) as http:
        for item in items:
            while True:
                try:
                    reply = http.post(
                        url + "/v1/ingest/chat",
                        content=item.body.encode("utf-8", "surrogatepass"),
                        headers={"Content-Type": "application/json"},
                    )
                    status: int | str = reply.status_code
                except httpx.TransportError:
                    status = "transport"
                item.statuses.append(status)
                if _final(status):
                    acked.append(1)
                    break
                time.sleep(0.05)


# -- one run ---------------------------------------------------------------------------------
def run(backend: str, database: str, clients: str, kill: bool, total: int) -> dict[str, Any]:
    items = plan(total)
    service = Service(database, free_port())
    startup = service.start()
    acked: list[int] = []
    target = queue_client if clients == "queue" else plain_client
    killed: dict[str, float] = {}
    ready = threading.Barrier(CLIENTS + 1, timeout=600)
    with tempfile.TemporaryDirectory() as tmp:
        threads = [
            threading.Thread(
                target=target, args=(items[i::CLIENTS], service.url, Path(tmp), acked, ready)
            )
            for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        ready.wait()  # every client has queued its chats: the clock starts
        t0 = time.perf_counter()
        if kill:
            while len(acked) < total * 0.4 and any(t.is_alive() for t in threads):
                time.sleep(0.005)
            killed["at_acked"] = len(acked)
            k0 = time.perf_counter()
            service.kill9()
            time.sleep(0.5)
            service.start()
            killed["down_s"] = round(time.perf_counter() - k0, 2)
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t0
    service.stop()
    return {
        "backend": backend,
        "clients": clients,
        "kill": kill,
        "submissions": total,
        "wall_s": round(wall, 2),
        "submissions_per_s": round(total / wall, 1),
        "startup_s": round(startup, 2),
        "load": h.load_average(),
        **killed,
        **check(items, database),
    }


def check(items: list[Item], database: str) -> dict[str, Any]:
    """What the database holds against the plan: lost, doubled, refusals, 5xx."""
    from llm4all.datalake.storage import Storage

    storage = Storage.open(database)
    try:
        stored = Counter((chat.submitter_id, chat.content_hash) for chat in storage.chats())
    finally:
        storage.close()
    expected = {item.key for item in items if item.valid}
    statuses = Counter(s for item in items for s in item.statuses)
    finals = [next((s for s in item.statuses if _final(s)), None) for item in items]
    invalid_refused = sum(
        1
        for item, f in zip(items, finals, strict=True)
        if not item.valid and _final(f) == "refused"
    )
    valid_sent = sum(
        1 for item, f in zip(items, finals, strict=True) if item.valid and _final(f) == "sent"
    )
    return {
        "valid": sum(item.valid for item in items),
        "valid_unique": len(expected),
        "valid_acknowledged": valid_sent,
        "invalid": sum(not item.valid for item in items),
        "invalid_refused_4xx": invalid_refused,
        "stored_rows": sum(stored.values()),
        "lost": len(expected - set(stored)),
        "doubled": sum(n - 1 for n in stored.values() if n > 1),
        "unexpected": len(set(stored) - expected),
        "http_5xx": sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500),
        "transport_errors": statuses.get("transport", 0),
        "statuses": {str(s): n for s, n in sorted(statuses.items(), key=str)},
    }


def ok(result: dict[str, Any]) -> bool:
    return bool(
        result["lost"] == 0
        and result["doubled"] == 0
        and result["unexpected"] == 0
        and result["http_5xx"] == 0
        and result["valid_acknowledged"] == result["valid"]
        and result["invalid_refused_4xx"] == result["invalid"]
    )


def main() -> None:
    p = h.parser(__doc__.splitlines()[0], rounds=1)
    p.add_argument("--submissions", type=int, default=2000)
    p.add_argument("--clients", choices=("queue", "plain", "both"), default="both")
    p.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = p.parse_args()
    total = 200 if args.quick else args.submissions
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if "postgresql" in backends and postgres_missing():
        h.note(f"PostgreSQL left out: {postgres_missing()}")
        backends.remove("postgresql")
    kinds = [("queue", False), ("queue", True)]
    if args.clients in ("plain", "both") and not args.quick:
        kinds.append(("plain", False))
    if args.clients == "plain":
        kinds = [("plain", False), ("plain", True)]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, running_postgres(durable=True) as pg:
        n = 0
        for _ in range(args.rounds):
            for backend in backends:
                for clients, kill in kinds:
                    n += 1
                    database = (
                        str(Path(tmp) / f"run{n}.db")
                        if backend == "sqlite"
                        else pg.database(f"bench{n}")
                    )
                    h.note(f"{backend}, {clients} clients, kill={kill} (load {h.load_average()})")
                    result = run(backend, database, clients, kill, total)
                    result["ok"] = ok(result)
                    h.note(json.dumps(result))
                    results.append(result)
    groups: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["backend"], r["clients"], r["kill"]), []).append(r)
    rows = []
    for (backend, clients, kill), runs in groups.items():
        rate = h.summary([r["submissions_per_s"] for r in runs])
        down = h.summary([r["down_s"] for r in runs if "down_s" in r])
        loads = [r["load"] for r in runs]
        rows.append(
            [
                backend,
                clients,
                "kill -9" if kill else "–",
                str(len(runs)),
                h.fmt(rate, 0),
                f"{sum(r['lost'] for r in runs)}",
                f"{sum(r['doubled'] for r in runs)}",
                f"{sum(r['invalid_refused_4xx'] for r in runs)}/{sum(r['invalid'] for r in runs)}",
                f"{sum(r['http_5xx'] for r in runs)}",
                h.fmt(down, 1) if kill else "–",
                f"{min(loads):.0f}–{max(loads):.0f}",
                "✓" if all(r["ok"] for r in runs) else "✗",
            ]
        )
    h.print_table(
        f"datalake: {total} submissions per run, {CLIENTS} clients; median (min–max)",
        [
            "backend",
            "clients",
            "fault",
            "runs",
            "subm./s",
            "lost",
            "doubled",
            "4xx/invalid",
            "5xx",
            "down s",
            "load",
            "ok",
        ],
        rows,
    )
    h.write_json("datalake", args.quick, {"machine": h.machine_info(), "runs": results})
    if not all(r["ok"] for r in results):
        raise SystemExit("a run lost, doubled or mis-answered submissions")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
