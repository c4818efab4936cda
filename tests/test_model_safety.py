"""A corrupt model never kills a process, and an embedding request cannot blow up memory.

Real broken copies of SmolLM2 (``gguf_corruptions.py``) go through the proof in a
child process, ``llm4all models add`` and ``llm4all run`` as real processes, and
a real ``llm4all serve`` that must keep serving; memory is measured with psutil
on a real server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
import pytest

import gguf_corruptions
from llm4all.engine import probe
from llm4all.engine.probe import check_model_file, last_words
from llm4all.errors import ModelLoadError
from server_helpers import DEFAULT, FAST, fast_settings, running

Broken = Callable[[str], Path]
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def broken(fast_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broken]:
    folder = tmp_path_factory.mktemp("broken")
    yield lambda name: gguf_corruptions.make(fast_model_path, folder, name)


def _env(home: Path, models: Path) -> dict[str, str]:
    return os.environ | {
        "LLM4ALL_HOME": str(home),
        "LLM4ALL_MODELS": str(models),
        "OMP_WAIT_POLICY": "PASSIVE",
    }


# -- the proof in a child process -------------------------------------------------------


@pytest.mark.slow
def test_a_loader_crash_becomes_an_error_naming_the_signal(broken: Broken) -> None:
    # Two tokens with one text make llama.cpp fail GGML_ASSERT and abort: in-process,
    # this test (and a server) would die here.
    path = broken("token_duplicated")
    with pytest.raises(ModelLoadError) as info:
        check_model_file(path)
    message = str(info.value)
    assert "GGML_ASSERT" in message and "crashed with signal SIGABRT" in message
    assert str(path) in message and "\n" not in message


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("weights_nan", "non-finite numbers"),
        ("weights_zero_norm", "no better than chance"),
        ("tensor_shape_swapped", "wrong shape"),
    ],
)
def test_files_that_load_but_cannot_work_are_refused(
    broken: Broken, name: str, reason: str
) -> None:
    with pytest.raises(ModelLoadError, match=reason):
        check_model_file(broken(name))


@pytest.mark.slow
def test_the_proof_is_remembered_until_the_file_changes(
    fast_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM4ALL_MODELS", str(tmp_path / "store"))
    model = tmp_path / "model.gguf"
    os.link(fast_model_path, model)
    check_model_file(model)  # proven in a child
    calls: list[Path] = []
    real = probe._prove_in_child
    monkeypatch.setattr(probe, "_prove_in_child", lambda p: calls.append(p) or real(p))
    check_model_file(model)
    assert calls == []  # known good: no child, no header walk
    os.utime(model, ns=(time.time_ns(), time.time_ns()))
    check_model_file(model)
    assert calls == [model]  # an edited file is proven again


@pytest.mark.slow
def test_a_refusal_is_remembered_too(
    broken: Broken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM4ALL_MODELS", str(tmp_path / "store"))
    path = broken("weights_nan")
    with pytest.raises(ModelLoadError, match="non-finite"):
        check_model_file(path)
    monkeypatch.setattr(probe, "_prove_in_child", lambda p: pytest.fail("proved twice"))
    with pytest.raises(ModelLoadError, match="non-finite"):  # a client asking again costs no child
        check_model_file(path)


def test_last_words_pick_the_reason_out_of_a_native_backtrace() -> None:
    stderr = (
        "llama_model_load: loading\n"
        "/src/llama.cpp/src/llama-vocab.cpp:2544: GGML_ASSERT(a == b) failed\n"
        "#0  0x00007f in ggml_print_backtrace ()\n#1 ggml_abort ()\n"
    )
    assert last_words(stderr) == "GGML_ASSERT(a == b) failed"
    assert last_words("terminate called after throwing\n") == "terminate called after throwing"
    assert last_words("") == ""


# -- the command line ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["block_count_1000", "token_duplicated"])
def test_models_add_and_run_refuse_a_corrupt_file_in_one_line(
    broken: Broken, tmp_path: Path, name: str
) -> None:
    path = broken(name)
    env = _env(tmp_path / "home", tmp_path / "models")
    for args in (["models", "add", str(path)], ["run", "-m", str(path), "Hello"]):
        done = subprocess.run(
            [sys.executable, "-m", "llm4all", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot load model" in lines[0], done.stderr
        assert done.stdout == ""
    assert not list((tmp_path / "models").glob("*.gguf"))  # nothing was added


# -- the server -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_the_server_answers_a_corrupt_model_with_an_error_and_keeps_serving(
    broken: Broken, fast_model_path: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    os.link(fast_model_path, models / fast_model_path.name)
    for name in ("block_count_1000", "token_duplicated", "weights_nan"):
        os.link(broken(name), models / broken(name).name)  # dropped into the store by hand
    port = _free_port()
    cmd = [
        *(sys.executable, "-m", "llm4all", "serve", "--model", FAST, "--port", str(port)),
        *("--threads", "1", "--parallel", "1", "--ctx", "512", "--log-level", "warning"),
    ]
    env = _env(tmp_path / "home", models)
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(server, url)
        hi = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
        for name in ("block-count-1000", "token-duplicated", "weights-nan"):
            r = httpx.post(url + CHAT, json=hi | {"model": f"smollm2-{name}"}, timeout=300)
            assert r.status_code == 500, r.text
            error = r.json()["error"]
            assert error["code"] == "model_load_failed" and "cannot load model" in error["message"]
            assert server.poll() is None  # still alive
        ok = httpx.post(url + CHAT, json=hi | {"model": FAST}, timeout=120)
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 3
    finally:
        server.terminate()
        server.communicate(timeout=30)


def _wait_healthy(server: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)


# -- embeddings and memory ----------------------------------------------------------------


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


@pytest.mark.slow
def test_embeddings_from_a_chat_model_are_bounded(fast_model_path: Path) -> None:
    from llm4all.embeddings import Embedder

    before = _rss()
    with Embedder(fast_model_path, n_threads=1) as embedder:
        # It used to take n_ctx 131,072 (16 windows of 8,192) and n_batch 8,192: RSS +4.2 GB.
        assert embedder.engine.info.n_ctx <= 2048
        vectors = embedder.embed_array(["word " * 3000, "short"])
        grown = _rss() - before
    assert vectors.shape[0] == 2
    assert grown < 2**30, f"RSS grew by {grown / 2**20:.0f} MiB"


@pytest.mark.slow
def test_an_embedding_load_that_cannot_fit_evicts_nothing(
    fast_model_path: Path, default_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RAM for the chat model and a little more, not for a second copy of Qwen.
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=500 * 2**20))
    settings = fast_settings(fast_model_path.parent, parallel=1, ctx=512)
    with running(settings) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        before = _rss()
        r = client.post("/v1/embeddings", json={"model": DEFAULT, "input": "hello"})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "insufficient_memory"
        loaded = [(m["model"], m["kind"]) for m in server.health()["models"]]
        assert loaded == [(FAST, "chat")]  # the chat model was not unloaded for nothing
        assert _rss() - before < 50 * 2**20
        chat = client.post(
            CHAT, json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        )
        assert chat.status_code == 200


@pytest.mark.slow
def test_max_memory_caps_what_the_loaded_models_take(fast_model_path: Path) -> None:
    settings = fast_settings(fast_model_path.parent, parallel=1, ctx=512, max_memory=400 * 2**20)
    with running(settings) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        big = client.post("/v1/embeddings", json={"model": DEFAULT, "input": "hello"})
        assert big.status_code == 503 and "GiB" in big.json()["error"]["message"]
        small = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "hi"})
        assert small.status_code == 200, small.text
        loaded = {(m["model"], m["kind"]) for m in server.health()["models"]}
        assert loaded == {(FAST, "chat"), ("all-minilm-l6-v2", "embedding")}


def test_an_embedding_batch_that_is_not_a_multiple_of_the_sequences_loads(
    fast_model_path: Path,
) -> None:
    # 300 tokens for 16 sequences failed GGML_ASSERT(ggml_can_mul_mat(a, b)) in llama.cpp
    # while it built its graph, ending the process; the batch is now cut to 288.
    from llm4all.engine import load_engine
    from llm4all.params import LoadParams

    params = LoadParams(n_ctx=512, n_batch=300, n_seq_max=16, embedding=True, n_threads=1)
    with load_engine(fast_model_path, params) as engine:
        vectors = engine.embed(["one text", "and another one"] * 10)
    assert len(vectors) == 20
