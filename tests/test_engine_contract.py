"""The engine contract, checked the same way for every registered backend.

Every backend in the registry (``llm4all.engine.backends()``) must have a
maker in :data:`MAKERS` that loads SmolLM2 through it (the remote backend:
through a real ``llm4all serve`` on 127.0.0.1); every test runs against all of
them and skips only what the engine's :class:`Capabilities` say it lacks.
Assertions are about behaviour (determinism, limits, stop strings,
cancellation, cache reuse), not exact prose.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llm4all.engine import (
    Capabilities,
    ChatInput,
    Engine,
    ModelRef,
    PromptInput,
    ScoredChunk,
    backend_for,
    backends,
    collect,
    load_engine,
)
from llm4all.errors import ContextOverflow, GrammarError, InvalidParameter, Unsupported
from llm4all.params import GenerationParams, LoadParams

GREEDY = GenerationParams(temperature=0, max_tokens=24)


def _remote(request: pytest.FixtureRequest, path: Path) -> Engine:
    """SmolLM2 behind a real ``llm4all serve`` on 127.0.0.1, through the remote backend."""
    from server_helpers import FAST, fast_settings, running

    server = running(fast_settings(path.parent, ctx=1024))
    live = server.__enter__()
    request.addfinalizer(lambda: server.__exit__(None, None, None))
    return load_engine(ModelRef.remote("contract", live.base_url, FAST))


def _transformers(request: pytest.FixtureRequest, path: Path) -> Engine:
    """SmolLM2 dequantized to a Hugging Face folder (once, cached) through transformers."""
    pytest.importorskip("transformers", reason="the transformers backend needs llm4all[gpu]")
    from llm4all import hf
    from llm4all.engine.transformers import TransformersOptions

    folder = hf.resolve(path).folder
    options = TransformersOptions(n_ctx=1024, seed=1, device="cpu")
    return load_engine(ModelRef.file(folder), options, "transformers")


#: How each registered backend loads the test model: (request, SmolLM2's path) -> Engine.
MAKERS: dict[str, Callable[[pytest.FixtureRequest, Path], Engine]] = {
    "llamacpp": lambda request, path: load_engine(
        ModelRef.file(path), LoadParams(n_ctx=1024, seed=1), "llamacpp"
    ),
    "remote": _remote,
    "transformers": _transformers,
}


#: Backends whose checks take long (torch on the CPU): marked slow.
SLOW = {"transformers"}


@pytest.fixture(
    params=[pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in sorted(MAKERS)],
    scope="module",
)
def engine(request: pytest.FixtureRequest, fast_model_path: Path) -> Iterator[Engine]:
    if request.param not in backends():
        pytest.skip(f"backend {request.param} is not registered here")
    eng = MAKERS[request.param](request, fast_model_path)
    yield eng
    eng.close()


def needs(engine: Engine, capability: str) -> None:
    if not getattr(engine.capabilities, capability):
        pytest.skip(f"{engine.info.backend} has no {capability}")


def chat_prompt(engine: Engine, question: str) -> PromptInput:
    """A one-question chat: SmolLM2's template in tokens, or messages for a chat backend."""
    if not engine.capabilities.tokens:
        return ChatInput(({"role": "user", "content": question},))
    text = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    return engine.tokenize(text)


def test_every_registered_backend_is_checked() -> None:
    assert set(backends()) <= set(MAKERS), "add a maker for the new backend to MAKERS"


def test_metadata(engine: Engine) -> None:
    info = engine.info
    assert isinstance(engine.capabilities, Capabilities)
    assert info.n_ctx in (0, 1024) and info.backend in backends()  # 0: not reported
    if engine.capabilities.tokens:  # read from the file itself
        assert info.architecture == "llama" and info.n_ctx_train == 8192
        assert info.chat_template and "im_start" in info.chat_template
        assert info.n_vocab == 49152 and info.n_params > 100_000_000


def test_tokenize_round_trip(engine: Engine) -> None:
    needs(engine, "tokens")
    text = "Hello, world! Ünïcode and 中文 too."
    assert engine.detokenize(engine.tokenize(text, add_special=False)) == text


def test_greedy_is_deterministic_and_bounded(engine: Engine) -> None:
    prompt = chat_prompt(engine, "Tell me about the sea.")
    first = collect(engine.generate(prompt, GREEDY))
    second = collect(engine.generate(prompt, GREEDY))
    assert first.text == second.text and first.text.strip()
    assert first.usage.completion_tokens <= 24
    if engine.capabilities.tokens:
        assert first.usage.prompt_tokens == len(prompt)  # type: ignore[arg-type]
    assert first.finish_reason in ("stop", "length")


def test_seeded_sampling_is_reproducible(engine: Engine) -> None:
    prompt = chat_prompt(engine, "Write a short poem.")
    p = GenerationParams(temperature=1.0, seed=42, max_tokens=20)
    assert collect(engine.generate(prompt, p)).text == collect(engine.generate(prompt, p)).text


def test_max_tokens_gives_length(engine: Engine) -> None:
    prompt = chat_prompt(engine, "Count from one to one hundred in words.")
    done = collect(engine.generate(prompt, GREEDY.replace(max_tokens=5)))
    assert done.usage.completion_tokens == 5 and done.finish_reason == "length"


def test_stop_string_ends_and_is_not_leaked(engine: Engine) -> None:
    prompt = "Counting: 1, 2, 3, 4,"  # plain text: every backend continues it
    full = collect(engine.generate(prompt, GREEDY.replace(max_tokens=40))).text
    assert "," in full, full
    stopped = collect(engine.generate(prompt, GREEDY.replace(max_tokens=40, stop=(",",))))
    assert stopped.finish_reason == "stop"
    assert "," not in stopped.text
    assert full.startswith(stopped.text)


def test_cancellation_stops_within_one_token(engine: Engine) -> None:
    prompt = chat_prompt(engine, "Write a long story.")
    calls = 0

    def go_on() -> bool:
        nonlocal calls
        calls += 1
        return calls <= 3

    done = collect(engine.generate(prompt, GREEDY.replace(max_tokens=100), should_continue=go_on))
    assert done.finish_reason == "cancelled"
    if engine.capabilities.tokens:
        assert done.usage.completion_tokens == 3
    else:  # asked per streamed chunk, and a chunk may carry no token
        assert 1 <= done.usage.completion_tokens <= 3


def test_usage_and_timings(engine: Engine) -> None:
    done = collect(engine.generate(chat_prompt(engine, "Hi"), GREEDY.replace(max_tokens=8)))
    t = done.timings
    assert t.time_to_first_token > 0 and t.prompt_seconds <= t.time_to_first_token
    assert t.completion_tokens == done.usage.completion_tokens
    if done.usage.completion_tokens > 1:
        assert t.tokens_per_second > 0


def test_prefix_reuse_evaluates_only_new_tokens(engine: Engine) -> None:
    needs(engine, "prefix_cache")
    needs(engine, "tokens")
    first = chat_prompt(engine, "My name is Ada.")
    assert isinstance(first, list)
    done = collect(engine.generate(first, GREEDY.replace(max_tokens=8)))
    follow = (
        first
        + list(done.token_ids)
        + engine.tokenize("<|im_end|>\n<|im_start|>user\nAnd yours?<|im_end|>\n")
    )
    again = collect(engine.generate(follow, GREEDY.replace(max_tokens=4)))
    assert again.usage.cached_tokens >= len(first)


def test_json_schema_output_parses(engine: Engine) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    needs(engine, "json_schema")
    p = GREEDY.replace(max_tokens=60, json_schema=json.dumps(schema))
    done = collect(engine.generate(chat_prompt(engine, "Describe Paris as JSON."), p))
    data = json.loads(done.text)
    assert isinstance(data["city"], str) and isinstance(data["population"], int)


def test_grammar_constrains_output(engine: Engine) -> None:
    needs(engine, "grammar")
    p = GREEDY.replace(max_tokens=10, grammar='root ::= ("yes" | "no")')
    done = collect(engine.generate(chat_prompt(engine, "Is water wet?"), p))
    assert done.text in ("yes", "no")


def test_bad_grammar_is_a_clear_error(engine: Engine) -> None:
    needs(engine, "grammar")
    with pytest.raises(GrammarError):
        collect(engine.generate(chat_prompt(engine, "x"), GREEDY.replace(grammar="root ::= (((")))


def test_split_utf8_characters_never_show_replacement(engine: Engine) -> None:
    # Chinese characters are 3 bytes; byte-level BPE splits them across tokens.
    needs(engine, "grammar")
    needs(engine, "tokens")
    p = GREEDY.replace(max_tokens=30, grammar="root ::= [一-龥]{6,12}")
    chunks = list(engine.generate(chat_prompt(engine, "用中文写一句话。"), p))
    text = "".join(c.text for c in chunks)
    assert len(text) >= 6 and "\ufffd" not in text
    assert all(0x4E00 <= ord(ch) <= 0x9FA5 for ch in text)
    ids = [t for c in chunks for t in c.token_ids]
    # The test only means something if some token alone is half a character.
    assert any("\ufffd" in engine.detokenize([t]) for t in ids)
    assert engine.detokenize(ids) == text


def test_context_overflow_carries_counts(engine: Engine) -> None:
    needs(engine, "tokens")
    long_prompt = engine.tokenize("word " * 1500)
    with pytest.raises(ContextOverflow) as info:
        engine.generate(long_prompt, GREEDY)
    assert info.value.prompt_tokens == len(long_prompt) and info.value.n_ctx == 1024


def test_empty_prompt_rejected(engine: Engine) -> None:
    needs(engine, "tokens")
    with pytest.raises(InvalidParameter):
        engine.generate([], GREEDY)


def test_unsupported_requests_fail_before_streaming(engine: Engine) -> None:
    """What the capabilities deny is refused at once, with the capability named."""
    caps = engine.capabilities
    denied = [
        (caps.grammar, GREEDY.replace(grammar='root ::= "a"'), "grammar"),
        (caps.json_schema, GREEDY.replace(json_schema="{}"), "json_schema"),
    ]
    for allowed, params, name in denied:
        if not allowed:
            with pytest.raises(Unsupported) as err:
                engine.generate("Hi", params)
            assert err.value.capability == name
    if not caps.chat:
        with pytest.raises(Unsupported):
            engine.generate(ChatInput(({"role": "user", "content": "Hi"},)), GREEDY)
    if not caps.tokens:
        with pytest.raises(Unsupported):
            engine.tokenize("Hi")
    if not caps.embeddings:
        with pytest.raises((Unsupported, InvalidParameter)):
            engine.embed(["Hi"])


def test_text_prompt_matches_its_tokens(engine: Engine) -> None:
    needs(engine, "tokens")
    text = "The capital of France is"
    by_text = collect(engine.generate(text, GREEDY.replace(max_tokens=6)))
    by_ids = collect(engine.generate(engine.tokenize(text), GREEDY.replace(max_tokens=6)))
    assert by_text.text == by_ids.text and by_text.text.strip()


def test_logprobs_describe_the_sampled_tokens(engine: Engine) -> None:
    needs(engine, "logprobs")
    chunks = list(
        engine.generate(
            chat_prompt(engine, "Hi"), GREEDY.replace(max_tokens=6, repeat_penalty=1.0), logprobs=3
        )
    )
    assert chunks and all(isinstance(c, ScoredChunk) for c in chunks)
    scored = [c for c in chunks if isinstance(c, ScoredChunk)]
    assert all(len(c.logprobs) == len(c.token_ids) for c in scored)
    scores = [s for c in scored for s in c.logprobs]
    assert len(scores) == collect(iter(chunks)).usage.completion_tokens
    for score in scores:
        assert score.logprob <= 0 and len(score.top) == 3
        assert [lp for _, lp in score.top] == sorted((lp for _, lp in score.top), reverse=True)
        if engine.capabilities.tokens:  # greedy: the sampled token is the most likely one
            assert score.top[0][0] == score.token
            assert math.isclose(score.top[0][1], score.logprob, abs_tol=1e-6)


def test_scoring_agrees_with_greedy_choice(engine: Engine) -> None:
    needs(engine, "scoring")
    needs(engine, "tokens")
    prompt = chat_prompt(engine, "Say hello.")
    assert isinstance(prompt, list)
    done = collect(engine.generate(prompt, GREEDY.replace(max_tokens=4), logprobs=0))
    scored = engine.token_logprobs(prompt + list(done.token_ids), first=len(prompt))
    assert len(scored) == len(done.token_ids) and all(lp <= 0 for lp in scored)


def test_runner_serves_concurrent_requests_like_generate(engine: Engine) -> None:
    """Whatever runner the engine gives, its answers are the engine's own."""
    prompts = [chat_prompt(engine, q) for q in ("Name a colour.", "Name a fruit.")]
    expected = [collect(engine.generate(p, GREEDY.replace(max_tokens=8))).text for p in prompts]
    runner = engine.runner(max_queue=4)
    try:
        streams = [runner.submit(p, GREEDY.replace(max_tokens=8)) for p in prompts]
        assert [collect(s).text for s in streams] == expected
        stats = runner.stats()
        assert stats.slots >= 1 and stats.running == 0 and stats.waiting == 0
    finally:
        runner.close()


def test_registry_finds_backends_by_reference(fast_model_path: Path) -> None:
    assert "llamacpp" in backends()
    assert backend_for(ModelRef.file(fast_model_path)).name == "llamacpp"
    with pytest.raises(InvalidParameter):
        backend_for(ModelRef.file(fast_model_path), "no-such-backend")
    remote = ModelRef.remote("r", "http://127.0.0.1:9/v1", "m")
    if "remote" not in backends():  # no backend claims an endpoint: a clear error
        with pytest.raises(InvalidParameter):
            backend_for(remote)
