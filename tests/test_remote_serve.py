"""The remote backend against a real ``llm4all serve`` on 127.0.0.1 (SmolLM2) as the remote.

The same greedy request goes to the server directly and through the remote
backend, so the answers can be compared; JSON-schema output, stop strings,
cancellation and embeddings go through the real server too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm4all.engine.base import ChatInput, collect
from llm4all.engine.remote.client import Endpoint
from llm4all.engine.remote.engine import RemoteEngine
from llm4all.params import GenerationParams
from server_helpers import FAST, LiveServer, fast_settings, running

KEY = "sk-remote-serve-0123456789"
EMBED = "all-minilm-l6-v2"
QUESTION = ChatInput(({"role": "user", "content": "What is the capital of France?"},))


@pytest.fixture(scope="module")
def server(fast_model_path: Path) -> Iterator[LiveServer]:
    settings = fast_settings(fast_model_path.parent, api_key=KEY, ctx=1024, max_loaded=2)
    with running(settings) as live:
        yield live


@pytest.fixture(autouse=True)
def key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTE_SERVE_KEY", KEY)


@pytest.fixture
def engine(server: LiveServer) -> Iterator[RemoteEngine]:
    with RemoteEngine("far", Endpoint(server.base_url, FAST, "REMOTE_SERVE_KEY")) as e:
        yield e


def test_stream_matches_the_server(engine: RemoteEngine, server: LiveServer) -> None:
    import httpx

    params = GenerationParams(temperature=0, max_tokens=16)
    pieces = list(engine.generate(QUESTION, params))
    text = "".join(p.text for p in pieces)
    direct = httpx.post(
        server.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "model": FAST,
            "messages": list(QUESTION.messages),
            "temperature": 0,
            "max_tokens": 16,
        },
        timeout=120,
    ).json()
    assert text == direct["choices"][0]["message"]["content"]
    final = pieces[-1]
    assert final.finish_reason == direct["choices"][0]["finish_reason"]
    assert final.usage is not None
    assert final.usage.prompt_tokens == direct["usage"]["prompt_tokens"]
    assert final.usage.completion_tokens == direct["usage"]["completion_tokens"]
    assert len(pieces) > 2  # it streamed


def test_json_schema_output(engine: RemoteEngine) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    params = GenerationParams(temperature=0, max_tokens=40, json_schema=json.dumps(schema))
    answer = collect(engine.generate(QUESTION, params))
    assert isinstance(json.loads(answer.text)["city"], str)


def test_stop_and_length(engine: RemoteEngine) -> None:
    count = ChatInput(({"role": "user", "content": "Count from 1 to 20, separated by commas."},))
    short = collect(engine.generate(count, GenerationParams(temperature=0, max_tokens=3)))
    assert short.finish_reason == "length" and short.usage.completion_tokens == 3
    stopped = collect(engine.generate(count, GenerationParams(temperature=0, stop=["5"])))
    assert "5" not in stopped.text and stopped.finish_reason == "stop"


def test_text_completion(engine: RemoteEngine) -> None:
    answer = collect(
        engine.generate("The capital of France is", GenerationParams(temperature=0, max_tokens=4))
    )
    assert answer.text and answer.usage.completion_tokens <= 4


def test_cancel_closes_the_request(engine: RemoteEngine, server: LiveServer) -> None:
    seen = 0

    def go_on() -> bool:
        return seen < 3

    params = GenerationParams(temperature=0, max_tokens=200)
    chunks = []
    for chunk in engine.generate(QUESTION, params, should_continue=go_on):
        seen += 1
        chunks.append(chunk)
    assert chunks[-1].finish_reason == "cancelled"
    assert not any(m["running"] for m in server.wait_idle()["models"])


def test_window_read_from_the_model_list(engine: RemoteEngine) -> None:
    assert engine.info.n_ctx == 1024  # llm4all serve --ctx 1024, as /v1/models reports it


def test_model_id_checked_on_load(server: LiveServer) -> None:
    from llm4all.engine.remote.client import RemoteModelNotFound

    with pytest.raises(RemoteModelNotFound, match=f"it serves .*{FAST}"):
        RemoteEngine("far", Endpoint(server.base_url, "no-such-model", "REMOTE_SERVE_KEY"))


def test_embeddings_through_the_remote(server: LiveServer) -> None:
    ep = Endpoint(server.base_url, EMBED, "REMOTE_SERVE_KEY")
    with RemoteEngine("emb", ep, embedding=True) as e:
        a, b, c = e.embed(["a cat sat on the mat", "a kitten on a rug", "quarterly tax filing"])
    assert len(a) == 384
    dot = lambda x, y: sum(p * q for p, q in zip(x, y, strict=True))  # noqa: E731
    assert dot(a, b) > dot(a, c)


def test_embedder_on_a_remote_gives_the_local_vectors(server: LiveServer, embedder: object) -> None:
    """Embedder("NAME") of a remote registered with --embedding: the same vectors as in-process."""
    import numpy as np

    from llm4all.embeddings import Embedder
    from llm4all.models import remotes
    from llm4all.models.remotes import Remote

    remotes.add(Remote("emb", server.base_url, EMBED, "REMOTE_SERVE_KEY", kind="embedding"))
    texts = ["a cat sat on the mat", "quarterly tax filing"]
    with Embedder("emb") as remote:
        far = remote.embed_array(texts)
    near = embedder.embed_array(texts)  # type: ignore[attr-defined]
    assert far.shape == near.shape == (2, 384)
    assert np.allclose(far, near, atol=1e-4)
