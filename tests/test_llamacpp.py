"""llama.cpp-specific behaviour beyond the engine contract."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from llm4all.engine import collect, load_engine
from llm4all.errors import InvalidParameter, ModelLoadError
from llm4all.params import GenerationParams, LoadParams


def test_native_log_goes_to_python_logging(
    fast_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="llm4all.llama_cpp"):
        engine = load_engine(fast_model_path, LoadParams(n_ctx=256))
        engine.close()
    native = [r for r in caplog.records if r.name == "llm4all.llama_cpp"]
    assert any(
        "llama_model_loader" in r.getMessage() or "print_info" in r.getMessage() for r in native
    )


@pytest.mark.parametrize(
    "content", [b"", b"\x00" * 4096, b"GGUF" + b"\xff" * 64], ids=["empty", "zeros", "bad-header"]
)
def test_broken_files_raise_not_crash(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError) as info:
        load_engine(path, LoadParams(n_ctx=256))
    assert info.value.path == str(path)
    assert "cannot load model" in str(info.value)


def test_truncated_file_names_the_cause(tmp_path: Path, fast_model_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(fast_model_path.read_bytes()[:40_000_000])
    with pytest.raises(ModelLoadError, match="the file is truncated"):
        load_engine(path, LoadParams(n_ctx=256))


def test_several_slots_keep_separate_caches(fast_model_path: Path) -> None:
    engine = load_engine(fast_model_path, LoadParams(n_ctx=2048, n_seq_max=2))
    try:
        a = engine.tokenize("The first conversation is about apples and")
        b = engine.tokenize("A second, unrelated text about the ocean and")
        greedy = GenerationParams(temperature=0, max_tokens=4)
        first_a = collect(engine.generate(a, greedy, slot=0)).text
        collect(engine.generate(b, greedy, slot=1))
        again_a = collect(engine.generate(a, greedy, slot=0))
        assert again_a.text == first_a
        assert again_a.usage.cached_tokens == len(a) - 1  # slot 1's work did not evict slot 0
    finally:
        engine.close()


def test_batched_embeddings_match_one_at_a_time(fast_model_path: Path) -> None:
    texts = ["Hi.", "A considerably longer sentence about rivers, mountains and the sea at dawn."]
    engine = load_engine(fast_model_path, LoadParams(n_ctx=1024, n_seq_max=4, embedding=True))
    try:
        together = engine.embed(texts)
        alone = [engine.embed([t])[0] for t in texts]
        with pytest.raises(InvalidParameter, match=r"texts\[1\]"):  # no tokens: a clear error
            engine.embed(["Hi.", "\x06"])
    finally:
        engine.close()
    for a, b in zip(together, alone, strict=True):
        assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.999


def test_a_huge_penalty_window_costs_no_memory(fast_model_path: Path) -> None:
    # llama.cpp allocates the penalty window whole; a client's repeat_last_n of 4.6e15
    # grew a server by 2.9 GB. The window is cut to the context, which is all it can see.
    import psutil

    engine = load_engine(fast_model_path, LoadParams(n_ctx=256))
    try:
        before = psutil.Process().memory_info().rss
        params = GenerationParams(repeat_last_n=100_000_000, repeat_penalty=1.2, max_tokens=4)
        generation = engine.start_generation(engine.tokenize("Hello"), params, 0)
        grown = psutil.Process().memory_info().rss - before
        generation.close()
        assert grown < 50 * 2**20  # the uncut window is 400 MB of zeroed int32s
        text = collect(engine.generate(engine.tokenize("Hello"), params)).text
        assert text
    finally:
        engine.close()


_SAMPLE_AT_THE_EDGES = """
import sys, llm4all
model = llm4all.Model(sys.argv[1], n_ctx=512)
edges = [
    dict(repeat_penalty=0.0, repeat_last_n=5, top_k=0, top_p=0.0, min_p=0.0),
    dict(temperature=1e-45, top_k=0, top_p=1.0, min_p=0.0),
]
for knobs in edges:
    for seed in range(12):
        text = model.generate("Pour me drinks as JSON. Pour Pour Pour", json_schema="{}",
                              max_tokens=12, seed=seed, **knobs)
        assert text.lstrip()[:1] in '{["-0123456789tfn', repr(text)
print("ok")
"""


def test_no_sampling_knobs_make_a_grammar_end_the_process(fast_model_path: Path) -> None:
    # Found by fuzzing the server: NaN logits (a repeat_penalty of 0 times a masked -inf,
    # or a temperature of 1e-45) let the chain pick a token the grammar forbids, and
    # llama.cpp aborted the process. In a child process, so a regression fails only this.
    run = subprocess.run(
        [sys.executable, "-c", _SAMPLE_AT_THE_EDGES, str(fast_model_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("ok")
