"""The one answer pipeline (``llm4all.answer``): every front end builds the same prompt.

The same request through the Python API (``ChatSession``), the OpenAI route
and the web UI's route must reach the engine as the same prompt tokens; bad
parameters fail before any model is loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import EMBEDDING_MODEL
from llm4all.api import ChatSession
from llm4all.embeddings import Embedder
from llm4all.engine.llamacpp import LlamaCppEngine
from llm4all.store import ChatStore
from server_helpers import FAST, LiveServer, fast_settings, running


def test_chat_rejects_bad_params_before_loading_the_model() -> None:
    # A model that does not exist: reaching the loader would be a different error.
    for flag, value, field in (("--temp", "9", "temperature"), ("--ctx", "-5", "n_ctx")):
        res = subprocess.run(
            [sys.executable, "-m", "llm4all", "chat", "-m", "no-such-model-xyz", flag, value],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 1
        assert field in res.stderr and "no-such-model" not in res.stderr, res.stderr


# -- one prompt, whichever front end asks -------------------------------------------------------
@pytest.fixture(scope="module")
def live(fast_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # One slot: every request runs on slot 0, whose KV cache then starts with its prompt.
    with running(fast_settings(fast_model_path.parent, parallel=1)) as server:
        server.app.state.chat_store = ChatStore(tmp_path_factory.mktemp("home") / "llm4all.db")
        yield server


def _engine(live: LiveServer) -> LlamaCppEngine:
    loaded = live.app.state.manager.loaded()[0]
    engine = loaded.model.engine
    assert isinstance(engine, LlamaCppEngine)
    return engine


def _evaluated_prompt(live: LiveServer, prompt_tokens: int) -> list[int]:
    """The prompt tokens the engine evaluated last: the start of slot 0's KV cache."""
    live.wait_idle()
    return _engine(live).slots[0][:prompt_tokens]


def test_api_openai_and_ui_routes_give_the_same_prompt_tokens(live: LiveServer) -> None:
    question = "What is the boiling point of water?"
    with httpx.Client(base_url=live.url, timeout=120) as http:
        # The OpenAI route.
        body = {
            "model": FAST,
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            "max_tokens": 2,
        }
        done = http.post("/v1/chat/completions", json=body).json()
        by_openai = _evaluated_prompt(live, done["usage"]["prompt_tokens"])
        # The web UI's route, on a stored chat.
        chat_id = http.post("/api/chats", json={"params": {"temperature": 0, "max_tokens": 2}})
        path = f"/api/chats/{chat_id.json()['id']}/messages"
        with http.stream("POST", path, json={"content": question}) as sse:
            lines = [json.loads(x[6:]) for x in sse.iter_lines() if x.startswith("data: ")]
        stored = lines[-1]["message"]
        by_ui = _evaluated_prompt(live, stored["prompt_tokens"])
    # The Python API, on the server's own model.
    model = live.app.state.manager.loaded()[0].model
    reply = ChatSession(model).send(question, temperature=0, max_tokens=2)
    by_api = _evaluated_prompt(live, reply.usage.prompt_tokens)
    assert len(by_openai) > 10
    assert by_api == by_openai == by_ui
    # And it is the model's chat format with its default system prompt first.
    text = _engine(live).detokenize(by_api)
    assert text.rstrip().endswith("assistant") and question in text
    system = model.system_prompt_for(None)
    assert system is None or text.find(system) < text.find(question)


def test_http_embeddings_are_the_embedders_vectors(live: LiveServer, embedder: Embedder) -> None:
    """/v1/embeddings goes through the same Embedder: task prefixes and long texts alike."""
    long = " ".join(f"river {i} runs past the hill and the old mill" for i in range(120))
    assert embedder.count_tokens(long) > embedder.max_tokens  # split into windows, then averaged
    texts = ["The cat sat on the mat.", long]
    for task in ("document", "query"):
        body = {"model": EMBEDDING_MODEL, "input": texts, "task": task, "encoding_format": "float"}
        got = httpx.post(live.url + "/v1/embeddings", json=body, timeout=120)
        assert got.status_code == 200, got.text
        vectors = [d["embedding"] for d in got.json()["data"]]
        for http_vector, python_vector in zip(
            vectors, embedder.embed(texts, task=task), strict=True
        ):
            # Equal up to float rounding (thread counts and batch shapes differ).
            assert sum(a * b for a, b in zip(http_vector, python_vector, strict=True)) > 0.99999
