"""The server over raw HTTP (httpx): shapes, streaming, limits and every error path."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
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
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
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
