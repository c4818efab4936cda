"""The server over raw HTTP (httpx): shapes, streaming, limits and every error path.

Also who it answers (the ``Host`` check on every route) and the statuses of the
web chat's failures that happen before an answer streams: a busy chat (409), a
database locked by another writer or on a full disk (503 with ``Retry-After``).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from server_helpers import ENDLESS, FAST, LiveServer, fast_settings, running

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def server(fast_model_path: Path) -> Iterator[LiveServer]:
    settings = fast_settings(fast_model_path.parent, max_queue=2, max_body=64 * 1024)
    with running(settings) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


def _events(response: httpx.Response) -> list[Any]:
    """The data of each server-sent event; ``[DONE]`` as the string."""
    out: list[Any] = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- the happy paths ---------------------------------------------------------------------
def test_models_health_and_openapi(client: httpx.Client) -> None:
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    ids = [m["id"] for m in models["data"]]
    assert FAST in ids
    one = client.get(f"/v1/models/{FAST}").json()
    assert one["id"] == FAST and one["object"] == "model" and one["loaded"] is True
    assert client.get("/health").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    chat = spec["paths"][CHAT]["post"]
    assert chat["requestBody"]
    # The sampling knobs come from GenerationParams, with its ranges.
    schema = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    temperature = schema["temperature"]["anyOf"][0]
    assert temperature["maximum"] == 5.0 and temperature["minimum"] == 0.0
    assert {"top_k", "min_p", "repeat_penalty", "seed", "stop"} <= set(schema)


def test_default_max_tokens_is_not_16(client: httpx.Client) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Explain how a bicycle works in three paragraphs."}
        ],
        "temperature": 0,
    }
    answer = client.post(CHAT, json=body).json()  # no max_tokens: until the end of the text
    assert answer["usage"]["completion_tokens"] > 16
    assert answer["choices"][0]["finish_reason"] == "stop"


def test_stream_is_shaped_like_openais(client: httpx.Client) -> None:
    body = {
        "messages": HI,
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = client.post(CHAT, json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish and finish[0]["choices"][0]["finish_reason"] == "length"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 12
    assert all(c["usage"] is None for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    whole = client.post(CHAT, json={**body, "stream": False}).json()
    assert whole["choices"][0]["message"]["content"] == text


def test_four_concurrent_streams_share_the_batched_steps(fast_model_path: Path) -> None:
    """Four streams sent at once reach the scheduler together and share its decode steps.

    Issue 10's 4-stream check: if the route serialized requests (a lock, a blocking
    call on the event loop, a one-at-a-time runner) each token would cost its own
    decode step; batched, four streams need far fewer steps than tokens. No clock.
    """
    settings = fast_settings(fast_model_path.parent, parallel=4)
    with running(settings) as live, httpx.Client(base_url=live.url, timeout=300) as c:
        c.post(CHAT, json={"messages": HI, "max_tokens": 1, "temperature": 0})  # loaded

        def steps() -> int:
            return int(c.get("/health").json()["models"][0]["steps"])

        def one(topic: str) -> int:
            body = {
                "messages": [{"role": "user", "content": f"Write a long essay about {topic}."}],
                "max_tokens": 32,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            with httpx.Client(base_url=live.url, timeout=300) as own:
                events = _events(own.post(CHAT, json=body))
            return int(events[-2]["usage"]["completion_tokens"])

        before = steps()
        with ThreadPoolExecutor(4) as pool:
            tokens = list(pool.map(one, ["the ocean", "trains", "bread", "the moon"]))
        taken = steps() - before
    assert sum(tokens) >= 64, tokens
    # One at a time would take at least sum(tokens) steps; four in one batch about a quarter.
    assert taken < 0.75 * sum(tokens), (taken, tokens)


def test_stop_seed_n_and_penalties(client: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "Count: 1, 2, 3,"}], "max_tokens": 30}
    stopped = client.post(CHAT, json={**body, "temperature": 0, "stop": ["5"]}).json()
    assert "5" not in stopped["choices"][0]["message"]["content"]
    sampled = {**body, "temperature": 1.0, "seed": 1234, "n": 3, "presence_penalty": 0.5}
    a = client.post(CHAT, json=sampled).json()
    assert "choices" in a, a
    b = client.post(CHAT, json=sampled).json()
    texts = [c["message"]["content"] for c in a["choices"]]
    assert texts == [c["message"]["content"] for c in b["choices"]]  # seeded: reproducible
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    assert a["usage"]["completion_tokens"] >= 3


def test_streamed_n_choices_are_interleaved_and_complete(client: httpx.Client) -> None:
    body = {"messages": HI, "max_tokens": 6, "temperature": 0, "n": 2, "stream": True}
    events = _events(client.post(CHAT, json=body))
    finished = [c["choices"][0]["index"] for c in events[:-1] if c["choices"][0]["finish_reason"]]
    assert sorted(finished) == [0, 1]


def test_logprobs(client: httpx.Client) -> None:
    body = {"messages": HI, "max_tokens": 5, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    choice = client.post(CHAT, json=body).json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == 5
    assert all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in content)
    assert "".join(t["token"] for t in content) == choice["message"]["content"]


def test_text_completions(client: httpx.Client) -> None:
    body = {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
    answer = client.post("/v1/completions", json={**body, "echo": True, "logprobs": None}).json()
    assert answer["object"] == "text_completion"
    assert answer["choices"][0]["text"].startswith("The capital of France is")
    many = client.post("/v1/completions", json={**body, "prompt": ["One", "Two"], "n": 2}).json()
    assert [c["index"] for c in many["choices"]] == [0, 1, 2, 3]
    events = _events(client.post("/v1/completions", json={**body, "stream": True, "logprobs": 1}))
    assert events[-1] == "[DONE]" and events[0]["object"] == "text_completion"
    assert all(len(e["choices"][0]["logprobs"]["tokens"]) <= 2 for e in events[:-1])


def test_json_object_mode_returns_json(client: httpx.Client) -> None:
    body = {
        "messages": [{"role": "user", "content": "Describe a cat as JSON."}],
        "max_tokens": 60,
        "temperature": 0,
        "response_format": {"type": "json_object"},
    }
    content = client.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    assert isinstance(json.loads(content), (dict, list, str, int, float))


def test_a_second_turn_reuses_the_first(client: httpx.Client) -> None:
    system = {"role": "system", "content": "You are a terse assistant. " * 20}
    turn1 = [system, {"role": "user", "content": "Name a colour."}]
    first = client.post(CHAT, json={"messages": turn1, "max_tokens": 8, "temperature": 0}).json()
    answer = first["choices"][0]["message"]
    turn2 = [*turn1, answer, {"role": "user", "content": "Another one."}]
    second = client.post(CHAT, json={"messages": turn2, "max_tokens": 8, "temperature": 0}).json()
    assert (
        second["usage"]["prompt_tokens_details"]["cached_tokens"]
        >= first["usage"]["prompt_tokens"] - 1
    )


# -- errors ---------------------------------------------------------------------------------
def test_malformed_json_is_400(client: httpx.Client) -> None:
    r = client.post(CHAT, content=b'{"messages": [', headers={"content-type": "application/json"})
    assert _error(r, 400)["code"] == "invalid_json"


def test_an_unsupported_field_is_400_naming_it(client: httpx.Client) -> None:
    error = _error(client.post(CHAT, json={"messages": HI, "logit_bias": {"1": 5}}), 400)
    assert error["param"] == "logit_bias" and "logit_bias" in error["message"]
    error = _error(client.post(CHAT, json={"messages": HI, "temperature": 9}), 400)
    assert error["param"] == "temperature"
    error = _error(client.post(CHAT, json={"messages": []}), 400)
    assert error["param"] == "messages"


def test_unknown_model_is_404_with_the_installed_names(client: httpx.Client) -> None:
    error = _error(client.post(CHAT, json={"model": "gpt-4o", "messages": HI}), 404)
    assert error["code"] == "model_not_found" and FAST in error["message"]
    assert _error(client.get("/v1/models/gpt-4o"), 404)["code"] == "model_not_found"
    for path in ("/etc/passwd", "../models/x.gguf", "~/secret.gguf"):  # names, never paths
        error = _error(client.post(CHAT, json={"model": path, "messages": HI}), 404)
        assert error["code"] == "model_not_found"


def test_context_overflow_is_400_with_counts(client: httpx.Client) -> None:
    long = [{"role": "user", "content": "word " * 3000}]
    error = _error(client.post(CHAT, json={"messages": long}), 400)
    assert error["code"] == "context_length_exceeded" and "1024" in error["message"]
    error = _error(client.post(CHAT, json={"messages": HI, "max_tokens": 5000}), 400)
    assert (
        error["code"] == "context_length_exceeded" and "5000 in the completion" in error["message"]
    )


def test_body_too_large_is_413(client: httpx.Client) -> None:
    big = [{"role": "user", "content": "x" * (70 * 1024)}]
    assert _error(client.post(CHAT, json={"messages": big}), 413)["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the bytes are counted
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(80):
            yield b"y" * 1024
        yield b'"}]}'

    r = client.post(CHAT, content=chunked(), headers={"content-type": "application/json"})
    assert _error(r, 413)["code"] == "request_too_large"


def test_overload_is_429_with_retry_after(server: LiveServer, client: httpx.Client) -> None:
    slow = {"messages": HI, "max_tokens": 40, "temperature": 0, "grammar": ENDLESS}
    results: list[int] = []

    def one() -> None:
        results.append(httpx.post(server.url + CHAT, json=slow, timeout=120).status_code)

    threads = [threading.Thread(target=one) for _ in range(4 + 2)]  # fill 4 slots + a queue of 2
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until all six are in: four running, two waiting
        model = server.health()["models"][0]
        if (model["running"], model["waiting"]) == (4, 2):
            break
        time.sleep(0.01)
    r = client.post(CHAT, json=slow)
    for t in threads:
        t.join()
    assert _error(r, 429)["code"] == "server_overloaded"
    assert int(r.headers["retry-after"]) >= 1
    assert results and all(code == 200 for code in results)


def test_a_disconnected_stream_frees_its_slot(server: LiveServer) -> None:
    body = json.dumps({"messages": HI, "stream": True, "grammar": ENDLESS}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b"data:" not in received:
            received += sock.recv(4096)
        running = [m["running"] for m in server.health()["models"]]
        assert running == [1]
    state = server.wait_idle(timeout=15)
    assert [m["running"] for m in state["models"]] == [0]
    assert [m["leases"] for m in state["models"]] == [0]


# -- who the server answers: one Host check for every route ------------------------------------
ROUTES = [
    ("GET", "/v1/models"),
    ("GET", f"/v1/models/{FAST}"),
    ("POST", CHAT),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/api/chats"),
    ("POST", "/api/chats"),
    ("GET", "/api/models"),
    ("GET", "/"),
    ("GET", "/assets/app.js"),
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("OPTIONS", CHAT),
]
FOREIGN = ["evil.example", "evil.example:4891", "localhost.evil.example", "127.0.0.1.nip.io"]


@pytest.mark.parametrize("host", FOREIGN)
def test_a_foreign_host_is_refused_on_every_route(client: httpx.Client, host: str) -> None:
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 sends its own name."""
    body = {"model": FAST, "messages": HI, "prompt": "Hi", "input": "Hi", "max_tokens": 2}
    for method, path in ROUTES:
        response = client.request(method, path, json=body, headers={"Host": host})
        error = _error(response, 403)
        assert error["code"] == "host_not_allowed" and "--allowed-host" in error["message"]
        assert "references" not in response.text and FAST not in response.text, path


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", "app.localhost"]
)
def test_loopback_names_and_addresses_are_answered(server: LiveServer, host: str) -> None:
    port = server.url.rsplit(":", 1)[1]
    headers = {"Host": host.format(port=port)}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as c:
        assert c.get("/health").json()["status"] == "ok"
        assert c.get("/v1/models").status_code == 200
        assert c.get("/api/chats").status_code == 200


def test_allowed_hosts_and_a_key_on_an_all_interfaces_server(fast_model_path: Path) -> None:
    """0.0.0.0 with a key: names beyond IPs and localhost only when the operator allows them."""
    settings = fast_settings(
        fast_model_path.parent,
        host="0.0.0.0",
        api_key="s3cret",
        allowed_hosts=("LLM.lan.", ".home.arpa"),
        preload=False,
    )
    key = {"Authorization": "Bearer s3cret"}
    with running(settings) as live, httpx.Client(base_url=live.url, timeout=30) as c:
        for host in ("llm.lan", "llm.lan:4891", "box.home.arpa", "home.arpa", "192.168.1.20:4891"):
            assert c.get("/v1/models", headers={"Host": host, **key}).status_code == 200, host
            # the name is allowed, the key still needed
            assert _error(c.get("/v1/models", headers={"Host": host}), 401)
        for host in ("evil.example", "llm.lan.evil.example", "xhome.arpa"):
            response = c.get("/v1/models", headers={"Host": host, **key})
            assert _error(response, 403)["code"] == "host_not_allowed", host


# -- the web chat: statuses before the stream starts --------------------------------------------
def _new_chat(client: httpx.Client, **params: Any) -> str:
    response = client.post("/api/chats", json={"params": {"temperature": 0, **params}})
    assert response.status_code == 201, response.text
    chat_id: str = response.json()["id"]
    return chat_id


def _send_pair(server: LiveServer, chat_id: str) -> list[tuple[int, Any]]:
    """Two sends to one chat at the same instant; each returns (status, first event or error)."""
    start, statuses_known = threading.Barrier(2), threading.Barrier(2)
    out: list[tuple[int, Any]] = []

    def send(text: str) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            start.wait()
            path = f"/api/chats/{chat_id}/messages"
            with c.stream("POST", path, json={"content": text}) as r:
                statuses_known.wait()  # the other one has its status too: nothing ends early
                if r.status_code != 200:
                    out.append((r.status_code, json.loads(r.read())))
                    return
                lines = r.iter_lines()
                first = next(line for line in lines if line.startswith("data: "))
                out.append((200, json.loads(first[len("data: ") :])))
                c.post(f"/api/chats/{chat_id}/stop")
                for _ in lines:  # to its end: the stop is heard
                    pass

    threads = [threading.Thread(target=send, args=(t,)) for t in ("Count.", "Count again.")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


@pytest.mark.slow
def test_two_sends_to_one_chat_at_once_the_second_is_409_before_any_stream(
    server: LiveServer, client: httpx.Client
) -> None:
    for _ in range(8):
        chat_id = _new_chat(client, grammar=ENDLESS, max_tokens=64)
        results = sorted(_send_pair(server, chat_id), key=lambda r: r[0])
        assert [status for status, _ in results] == [200, 409], results
        (_, first_event), (_, refused) = results
        assert first_event["type"] == "user"  # a real answer, not an error event
        assert refused["error"]["code"] == "chat_busy"
        messages = client.get(f"/api/chats/{chat_id}").json()["messages"]
        assert [m["role"] for m in messages] in (["user"], ["user", "assistant"])  # one question
    server.wait_idle()


@pytest.mark.slow
def test_a_database_locked_by_another_writer_is_503_with_retry_after(
    server: LiveServer, client: httpx.Client
) -> None:
    chat_id = _new_chat(client, max_tokens=2)
    path = server.app.state.chat_store.path
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process writing, for longer than the wait
        response = client.post(f"/api/chats/{chat_id}/messages", json={"content": "Hi."})
        error = _error(response, 503)
        assert error["code"] == "storage_busy" and error["type"] == "server_error"
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["content-type"].startswith("application/json")
    finally:
        other.rollback()
        other.close()
    assert client.get(f"/api/chats/{chat_id}").json()["messages"] == []  # nothing half-saved
    with client.stream("POST", f"/api/chats/{chat_id}/messages", json={"content": "Hi."}) as r:
        assert r.status_code == 200  # the chat was let go: it answers again
        r.read()
    assert [m["role"] for m in client.get(f"/api/chats/{chat_id}").json()["messages"]] == [
        "user",
        "assistant",
    ]


def _fill(folder: Path) -> Path:
    """Write a file until the disk is full; the file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_a_full_disk_is_503_and_loses_nothing(
    fast_model_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM4ALL_HOME", str(small_disk / "home"))
    settings = fast_settings(fast_model_path.parent, preload=False)
    with running(settings) as live, httpx.Client(base_url=live.url, timeout=120) as c:
        chat_id = _new_chat(c, max_tokens=2)
        filler = _fill(small_disk)
        big = "many words " * 13_000  # more than the WAL has room for: new pages are needed
        response = c.post(f"/api/chats/{chat_id}/messages", json={"content": big})
        error = _error(response, 503)
        assert error["code"] == "storage_full" and int(response.headers["retry-after"]) >= 1
        filler.unlink()
        with c.stream("POST", f"/api/chats/{chat_id}/messages", json={"content": "Hi."}) as r:
            assert r.status_code == 200
            r.read()
        messages = c.get(f"/api/chats/{chat_id}").json()["messages"]
        assert messages[0]["content"] == "Hi."
        assert [m["role"] for m in messages] == ["user", "assistant"]  # the big one never was
    check = sqlite3.connect(small_disk / "home" / "llm4all.db")
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()


def test_a_model_served_from_outside_the_store_answers_to_its_listed_name(
    fast_model_path: Path, tmp_path: Path
) -> None:
    settings = fast_settings(tmp_path / "empty-store", model=str(fast_model_path))
    with running(settings) as live, httpx.Client(base_url=live.url, timeout=120) as c:
        listed = [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert listed == [fast_model_path.stem]
        body = {"model": listed[0], "messages": HI, "max_tokens": 2, "temperature": 0}
        assert c.post(CHAT, json=body).status_code == 200
        body["model"] = "not-" + listed[0]
        assert _error(c.post(CHAT, json=body), 404)["code"] == "model_not_found"
