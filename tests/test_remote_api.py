"""A registered remote is a model name: the Python API, the CLI and the server take it.

The remote is a real ``llm4all serve`` on 127.0.0.1 with SmolLM2. Its key is in
an environment variable; no file under the llm4all home (chat store, registry,
logs) and no output may contain it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm4all.models import remotes
from llm4all.models.remotes import Remote
from misbehaving_server import refused_url
from server_helpers import FAST, LiveServer, fast_settings, running

KEY = "sk-remote-api-0123456789"
EMBED = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def server(fast_model_path: Path) -> Iterator[LiveServer]:
    with running(fast_settings(fast_model_path.parent, api_key=KEY, ctx=1024)) as live:
        yield live


@pytest.fixture
def far(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("REMOTE_API_KEY", KEY)
    remotes.add(Remote("far", server.base_url, FAST, "REMOTE_API_KEY"))
    return "far"


def _leaks(home: Path, *outputs: str) -> bool:
    written = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    return KEY.encode() in written or any(KEY in o for o in outputs)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run(
        [sys.executable, "-m", "llm4all", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_python_api(far: str, isolated_home: Path) -> None:
    import llm4all
    from llm4all.store import ChatStore

    with llm4all.Model(far) as model:
        assert model.info.backend == "remote" and model.kind == "chat"
        assert model.has_chat_template and model.chat_stops == ()  # the remote's template
        text = model.generate("What is the capital of France?", temperature=0, max_tokens=12)
        assert text
        with ChatStore() as store:
            chat = model.chat(temperature=0, max_tokens=12)
            chat.store = store
            chat.send("My name is Ada.").text()
            second = chat.send("What is my name?")
            second.text()
            stored = store.messages(chat.chat_id) if chat.chat_id else []
    assert second.completion is not None and second.completion.usage.prompt_tokens > 0
    assert [m.role for m in stored][-4:] == ["user", "assistant", "user", "assistant"]
    assert not _leaks(isolated_home)


def test_cli_run_with_stats(far: str, isolated_home: Path) -> None:
    # --debug: every logger at DEBUG (httpx's and httpcore's too) must still not print the key
    proc = _cli("--debug", "run", "-m", far, "--temp", "0", "-n", "8", "--stats", "Hi!")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "on remote http://127.0.0.1" in proc.stderr
    assert not _leaks(isolated_home, proc.stdout, proc.stderr)


def test_cli_run_on_a_dead_remote_is_one_line(isolated_home: Path) -> None:
    url = refused_url()
    remotes.add(Remote("gone", url, "m"))
    proc = _cli("run", "-m", "gone", "Hi!")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "cannot connect" in lines[0]


# -- llm4all serve as a gateway to the remote ---------------------------------------------------
def test_gateway_serves_the_remote(far: str, isolated_home: Path, fast_model_path: Path) -> None:
    import httpx

    gateway_key = "gw-key-local-only"
    settings = fast_settings(fast_model_path.parent, model=far, api_key=gateway_key)
    with running(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=120) as http:
        http.headers["Authorization"] = f"Bearer {gateway_key}"
        cards = {c["id"]: c for c in http.get("/v1/models").json()["data"]}
        assert cards[far]["owned_by"] == "remote" and cards[far]["kind"] == "chat"
        ask = {"model": far, "messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 8}
        done = http.post("/v1/chat/completions", json=ask | {"temperature": 0})
        assert done.status_code == 200, done.text
        assert done.json()["choices"][0]["message"]["content"]
        tool = {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
        ask_weather = {
            "model": far,
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [tool],
            "tool_choice": "required",
            "temperature": 0,
        }
        called = http.post("/v1/chat/completions", json=ask_weather).json()["choices"][0]
        assert called["finish_reason"] == "tool_calls", called
        assert called["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
        listed = http.get("/api/models").json()["installed"]
        assert any(m["name"] == far and m["quantization"] == "remote" for m in listed)
        chat = http.post(
            "/api/chats", json={"model": far, "params": {"temperature": 0, "max_tokens": 8}}
        )
        assert chat.status_code == 201, chat.text
        path = f"/api/chats/{chat.json()['id']}/messages"
        with http.stream("POST", path, json={"content": "Name a colour."}) as r:
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert '"type": "done"' in events[-1] or '"type":"done"' in events[-1]
        stored = http.get(f"/api/chats/{chat.json()['id']}").json()["messages"]
        assert [m["role"] for m in stored] == ["user", "assistant"] and stored[1]["content"]
        health = {m["model"]: m for m in http.get("/health").json()["models"]}
        assert health[far]["backend"] == "remote"
        assert health[far]["device"] == f"remote {remotes.get(far).base_url}"  # type: ignore[union-attr]
        remotes.add(
            Remote("emb", remotes.get(far).base_url, EMBED, "REMOTE_API_KEY", kind="embedding")
        )  # type: ignore[union-attr]
        vectors = http.post("/v1/embeddings", json={"model": "emb", "input": ["a cat", "a dog"]})
        assert vectors.status_code == 200, vectors.text
        assert [len(d["embedding"]) for d in vectors.json()["data"]] == [384, 384]
        remotes.add(Remote("gone", refused_url(), "m"))
        dead = http.post("/v1/chat/completions", json=ask | {"model": "gone"})
        assert dead.status_code == 502 and "cannot connect" in dead.json()["error"]["message"]
        wrong = httpx.post(
            gateway.base_url + "/chat/completions",
            json=ask,
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert wrong.status_code == 401  # the remote's key is no key of the gateway
    assert not _leaks(isolated_home, done.text, json.dumps(stored))
