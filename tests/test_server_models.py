"""Model management (load on demand, LRU cap, keep-alive, RAM check) and security settings."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from server_helpers import ENDLESS, FAST, fast_settings, running

CHAT = "/v1/chat/completions"
HI = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}
EMBED = {"model": FAST, "input": "hello"}


def _loaded(url: str) -> list[tuple[str, str]]:
    models = httpx.get(url + "/health").json()["models"]
    return [(m["model"], m["kind"]) for m in models]


def test_lru_cap_swaps_models_and_refuses_when_all_are_busy(fast_model_path: Path) -> None:
    settings = fast_settings(fast_model_path.parent, max_loaded=1)
    with running(settings) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        assert _loaded(server.url) == [(FAST, "chat")]
        assert client.post("/v1/embeddings", json=EMBED).status_code == 200
        assert _loaded(server.url) == [(FAST, "embedding")]
        assert client.post(CHAT, json=HI).status_code == 200
        assert _loaded(server.url) == [(FAST, "chat")]
        # While a stream holds the chat model, the only place is taken.
        body = {**HI, "max_tokens": 300, "stream": True, "grammar": ENDLESS}
        with client.stream("POST", CHAT, json=body) as stream:
            lines = stream.iter_lines()  # kept: dropping it would close the connection
            next(lines)
            busy = client.post("/v1/embeddings", json=EMBED)
        assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
        assert busy.json()["error"]["code"] == "server_overloaded"


def test_idle_models_unload_after_the_keep_alive(fast_model_path: Path) -> None:
    settings = fast_settings(fast_model_path.parent, keep_alive=0.3)
    with running(settings) as server:
        deadline = time.monotonic() + 10
        while _loaded(server.url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _loaded(server.url) == []
        assert httpx.post(server.url + CHAT, json=HI, timeout=60).status_code == 200  # reloads


def test_a_model_that_does_not_fit_in_ram_is_refused(
    fast_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=50 * 2**20))
    settings = fast_settings(fast_model_path.parent, preload=False)
    with running(settings) as server:
        r = httpx.post(server.url + CHAT, json=HI, timeout=60)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "insufficient_memory"


def test_api_key_cors_and_caps(fast_model_path: Path) -> None:
    settings = fast_settings(
        fast_model_path.parent,
        api_key="secret",
        cors_origins=("http://localhost:3000",),
        max_tokens_cap=5,
        max_n=2,
    )
    auth = {"Authorization": "Bearer secret"}
    with running(settings) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/health").status_code == 200  # health checks need no key
        missing = client.get("/v1/models")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        assert (
            client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        assert client.get("/v1/models", headers=auth).status_code == 200
        preflight = {
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        ok = client.options(CHAT, headers=preflight)
        assert ok.headers["access-control-allow-origin"] == "http://localhost:3000"
        evil = client.options(CHAT, headers={**preflight, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
        body = {"messages": HI["messages"], "temperature": 0}
        capped = client.post(CHAT, json=body, headers=auth).json()
        assert capped["usage"]["completion_tokens"] <= 5  # the cap is also the default
        too_many = client.post(CHAT, json={**body, "max_tokens": 50}, headers=auth)
        assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "max_tokens"
        assert client.post(CHAT, json={**body, "n": 3}, headers=auth).status_code == 400


def test_concurrent_first_requests_load_the_model_once(fast_model_path: Path) -> None:
    settings = fast_settings(fast_model_path.parent, preload=False)
    with running(settings) as server:
        codes: list[int] = []

        def one() -> None:
            codes.append(httpx.post(server.url + CHAT, json=HI, timeout=120).status_code)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [200] * 4
        assert _loaded(server.url) == [(FAST, "chat")]
