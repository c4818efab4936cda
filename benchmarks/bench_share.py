"""The share client's own costs: building a chat's payload, scrubbing it, and one sender's flush.

    .venv/bin/python benchmarks/bench_share.py            # 200 chats of 10 turns
    .venv/bin/python benchmarks/bench_share.py --quick    # 20, for CI

Everything runs in a temporary llm4all home: chats are written to a real chat
store, previewed (unscrubbed and scrubbed), queued, and flushed by one sender
(:func:`llm4all.datalake.client.flush`) into a real ``llm4all datalake serve``
on SQLite started as its own process (rate limit raised so that it does not
throttle). The flush is then run again to show that an unchanged queue sends
nothing. Prints one JSON object; the load average comes with it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from llm4all.datalake import client  # noqa: E402
from llm4all.store import ChatStore  # noqa: E402

TEXT = (
    "Write to ada.lovelace@example.org or call +44 20 7946 0958 about /home/ada/notes/pay.txt. "
    "Here is some ordinary prose that has nothing private in it, repeated to a typical length. "
) * 4


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_chats(store: ChatStore, n: int, turns: int) -> list[str]:
    ids = []
    for i in range(n):
        chat = store.create_chat(model="smollm2-135m-instruct")
        for t in range(turns // 2):
            store.add_message(chat.id, "user", f"Question {i}.{t}: {TEXT}")
            answer = store.add_message(chat.id, "assistant", f"Answer {i}.{t}: {TEXT}")
            store.rate_message(answer.id, 1 if t % 2 else -1)
        ids.append(chat.id)
    return ids


def timed(fn: object, ids: list[str]) -> dict[str, float]:
    times = []
    for chat_id in ids:
        start = time.perf_counter()
        fn(chat_id)  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


def main() -> None:
    quick = "--quick" in sys.argv
    n = 20 if quick else 200
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LLM4ALL_HOME"] = tmp
        port = free_port()
        service = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llm4all",
                "datalake",
                "serve",
                "--port",
                str(port),
                "--database",
                str(Path(tmp) / "lake.db"),
                "--rate",
                "100000",
                "--burst",
                "100000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(url + "/v1/health", timeout=1)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "the datalake did not start"
                    time.sleep(0.1)
            with ChatStore() as store:
                ids = make_chats(store, n, 10)
                client.update_settings(store, enabled=True, endpoint=url)
                preview = timed(lambda c: client.build_preview(store, c), ids)
                scrubbed = timed(lambda c: client.build_preview(store, c, scrub=True), ids)
                queue = timed(lambda c: client.share_chat(store, c, send=False), ids)
                start = time.perf_counter()
                report = client.flush(store, force=True)
                flush_s = time.perf_counter() - start
                start = time.perf_counter()
                again = client.flush(store, force=True)
                idle_ms = (time.perf_counter() - start) * 1000
                body = len(client.build_preview(store, ids[0]).body.encode())
        finally:
            service.terminate()
            service.wait(30)
    print(
        json.dumps(
            {
                "chats": n,
                "turns": 10,
                "body_bytes": body,
                "preview": preview,
                "preview_scrubbed": scrubbed,
                "queue": queue,
                "flush": {
                    "sent": len(report.sent),
                    "seconds": round(flush_s, 2),
                    "chats_per_s": round(len(report.sent) / flush_s, 1),
                },
                "flush_again": {"sent": len(again.sent), "ms": round(idle_ms, 1)},
                "load": {"before": load_before, "after": os.getloadavg()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
