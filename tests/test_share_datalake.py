"""Sharing into a real ``llm4all datalake`` service, and a sender killed with SIGKILL mid-flush.

The service is the real one (:mod:`llm4all.datalake.service` on SQLite, uvicorn on
127.0.0.1); the sender is a real ``python -m llm4all share flush`` process, killed
with ``kill -9`` and run again: the queue in the chat store drains, nothing is lost
and nothing is stored twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from datalake_helpers import TOKEN, running_datalake
from llm4all.datalake import client
from llm4all.datalake.queue import ShareQueue
from llm4all.datalake.service import ServiceSettings
from llm4all.store import ChatStore
from share_helpers import rated_chat, recording

pytestmark = pytest.mark.slow  # real processes: about 10 s together

CHATS = 30


def flush_process(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "llm4all", "share", "flush"],
        env=os.environ | {"LLM4ALL_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill9(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL


def queue_chats(store: ChatStore, n: int) -> list[str]:
    ids = []
    for i in range(n):
        chat = rated_chat(store, f"chat {i}")
        assert client.share_chat(store, chat.id, send=False).state == "queued"
        ids.append(chat.id)
    return ids


def test_a_shared_chat_arrives_in_the_datalake_with_its_ratings_and_edits(
    isolated_home: Path, tmp_path: Path
) -> None:
    settings = ServiceSettings(database=str(tmp_path / "lake.db"), admin_token=TOKEN)
    with running_datalake(settings) as lake, ChatStore() as store:
        chat = rated_chat(store)
        client.update_settings(store, enabled=True, endpoint=lake.url, attribution="Ada")
        assert client.share_chat(store, chat.id, scrub=True).state == "sent"
        assert client.share_chat(store, chat.id, scrub=True).state == "unchanged"
        store.suggest_answer(store.messages(chat.id)[3].id, "Next year, ask again.")
        assert client.share_chat(store, chat.id, scrub=True).state == "sent"  # replaces it
        stats = httpx.get(lake.url + "/v1/admin/stats", headers=lake.admin).json()
        assert (stats["chats"], stats["submitters"]) == (1, 1)
        assert (stats["positive"], stats["negative"], stats["stopped"]) == (1, 1, 1)
        assert stats["edited"] == 2


def test_kill_9_mid_request_then_restart_sends_each_chat(isolated_home: Path) -> None:
    """The request in flight when the sender dies is sent again, with the same ingest id and
    body (the service keeps one); every other chat goes exactly once."""
    with recording(delay=0.3) as recorder, ChatStore() as store:
        client.update_settings(store, enabled=True, endpoint=recorder.url)
        ids = queue_chats(store, 4)
        sender = flush_process(isolated_home)
        recorder.wait_for(2)  # the second request is being answered (slowly) right now
        kill9(sender)
        recorder.delay = 0
        done = flush_process(isolated_home)
        assert done.wait(60) == 0, done.stderr.read() if done.stderr else ""
        bodies = recorder.bodies()
        assert sorted({b["ingest_id"] for b in bodies}) == sorted(
            client.ingest_id_for(client.submitter_id(store), c) for c in ids
        )
        assert len(bodies) in (4, 5)  # at most the one request in flight, once more
        with ShareQueue(store.path) as queue:
            assert queue.counts()["sent"] == 4 and queue.counts()["pending"] == 0


def test_kill_9_during_a_flush_into_the_real_service_loses_and_doubles_nothing(
    isolated_home: Path, tmp_path: Path
) -> None:
    settings = ServiceSettings(
        database=str(tmp_path / "lake.db"), admin_token=TOKEN, rate_per_minute=6000, burst=100
    )
    with running_datalake(settings) as lake, ChatStore() as store:
        client.update_settings(store, enabled=True, endpoint=lake.url)
        queue_chats(store, CHATS)
        sender = flush_process(isolated_home)

        def stored() -> int:
            stats = httpx.get(lake.url + "/v1/admin/stats", headers=lake.admin, timeout=10)
            return int(stats.json()["chats"])

        deadline = time.monotonic() + 60
        while stored() < 3:
            assert time.monotonic() < deadline and sender.poll() is None
            time.sleep(0.005)
        kill9(sender)  # mid-flush: some chats are in the service, the rest still queued
        assert stored() < CHATS
        for _ in range(2):  # a restart, then one more: the second finds nothing to send
            done = flush_process(isolated_home)
            assert done.wait(60) == 0, done.stderr.read() if done.stderr else ""
        stats = httpx.get(lake.url + "/v1/admin/stats", headers=lake.admin).json()
        assert stats["chats"] == CHATS and stats["submitters"] == 1
        with ShareQueue(store.path) as queue:
            assert queue.counts()["sent"] == CHATS


def test_withdraw_deletes_what_this_machine_shared(isolated_home: Path, tmp_path: Path) -> None:
    settings = ServiceSettings(database=str(tmp_path / "lake.db"), admin_token=TOKEN)
    store = ChatStore()
    with running_datalake(settings) as lake:
        client.update_settings(store, enabled=True, endpoint=lake.url + "/v1/ingest/chat")
        ids = [rated_chat(store, f"chat {i}").id for i in range(2)]
        assert all(client.share_chat(store, c).state == "sent" for c in ids)
        client.update_settings(store, enabled=False)  # withdrawing needs no opt-in
        assert client.withdraw(store) == 2
        stats = httpx.get(lake.url + "/v1/admin/stats", headers=lake.admin).json()
        assert stats["chats"] == 0 and stats["withdrawals"]["count"] == 1
        with ShareQueue(store.path) as queue:
            assert queue.counts()["withdrawn"] == 2
        client.update_settings(store, enabled=True)
        assert client.share_chat(store, ids[0]).state == "sent"  # shared again: sent again
    with pytest.raises(client.DatalakeError, match="cannot reach"):
        client.withdraw(store)  # the service is gone now
    store.close()
