"""The continuous-batching scheduler on a real model (SmolLM2-135M): batching, reuse, cancel."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm4all.engine.base import collect
from llm4all.engine.llamacpp import LlamaCppEngine
from llm4all.engine.scheduler import BatchScheduler, Overloaded, ScoredChunk
from llm4all.errors import ContextOverflow, GrammarError
from llm4all.params import GenerationParams, LoadParams

GREEDY = GenerationParams(temperature=0, repeat_penalty=1.0, max_tokens=24)
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colours are",
    "To make a cup of tea, first",
    "Water boils at",
    "The largest planet in the solar system",
    "My favourite book is",
]


@pytest.fixture(scope="module")
def engine(fast_model_path: Path) -> Iterator[LlamaCppEngine]:
    eng = LlamaCppEngine(fast_model_path, LoadParams(n_seq_max=8, n_ctx=8 * 512, n_threads=1))
    yield eng
    eng.close()


@pytest.fixture
def scheduler(engine: LlamaCppEngine) -> Iterator[BatchScheduler]:
    engine.reset()
    sched = BatchScheduler(engine, max_queue=16)
    yield sched
    sched.close()


def _tokens(engine: LlamaCppEngine, text: str) -> list[int]:
    return engine.tokenize(text)


def _run_together(
    scheduler: BatchScheduler, prompts: list[list[int]], params: list[GenerationParams]
) -> list[tuple[int, ...]]:
    results: list[tuple[int, ...]] = [()] * len(prompts)
    start = threading.Barrier(len(prompts))

    def one(i: int) -> None:
        start.wait()
        results[i] = collect(scheduler.submit(prompts[i], params[i])).token_ids

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_greedy_output_is_the_same_alone_and_beside_seven_others(
    engine: LlamaCppEngine, scheduler: BatchScheduler
) -> None:
    prompts = [_tokens(engine, p) for p in PROMPTS]
    alone = [collect(scheduler.submit(p, GREEDY)).token_ids for p in prompts]
    steps_before = scheduler.steps
    together = _run_together(scheduler, prompts, [GREEDY] * len(prompts))
    assert together == alone
    # Batched: far fewer decode steps than tokens generated.
    assert scheduler.steps - steps_before < sum(len(t) for t in together) / 2


def test_each_request_keeps_its_own_sampling_and_grammar(
    engine: LlamaCppEngine, scheduler: BatchScheduler
) -> None:
    schema = json.dumps(
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    )
    params = [
        GenerationParams(temperature=0.9, seed=7, max_tokens=16),
        GenerationParams(temperature=0, max_tokens=40, json_schema=schema),
        GREEDY,
        GenerationParams(temperature=1.2, seed=99, top_k=0, top_p=1.0, min_p=0.0, max_tokens=16),
    ]
    prompts = [_tokens(engine, p) for p in PROMPTS[:4]]
    alone = [
        collect(scheduler.submit(p, q)).token_ids for p, q in zip(prompts, params, strict=True)
    ]
    together = _run_together(scheduler, prompts, params)
    assert together == alone  # same seed, same tokens, whatever ran beside it
    assert json.loads(engine.detokenize(together[1]))["n"] is not None


def test_a_prompt_that_extends_a_cached_one_reuses_its_prefix(
    engine: LlamaCppEngine, scheduler: BatchScheduler
) -> None:
    first = _tokens(engine, "A long shared system prompt about astronomy and the planets. Q1?")
    done = collect(scheduler.submit(first, GREEDY))
    assert done.usage.cached_tokens == 0
    second = first + list(done.token_ids) + _tokens(engine, " And another question?")
    again = collect(scheduler.submit(second, GREEDY))
    assert again.usage.cached_tokens >= len(first)
    assert again.usage.prompt_tokens == len(second)


def test_abandoning_a_stream_frees_its_slot_within_a_step(
    engine: LlamaCppEngine, scheduler: BatchScheduler
) -> None:
    stream = scheduler.submit(_tokens(engine, PROMPTS[1]), GenerationParams(temperature=0))
    next(stream)
    assert scheduler.load() == (1, 0)
    stream.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while scheduler.load() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert scheduler.load() == (0, 0)


def test_the_queue_is_bounded(engine: LlamaCppEngine) -> None:
    engine.reset()
    small = BatchScheduler(engine, max_queue=2)
    try:
        long = GenerationParams(temperature=0, max_tokens=400, repeat_penalty=1.0)
        streams = []
        with pytest.raises(Overloaded) as err:
            for _ in range(8 + 3):
                streams.append(small.submit(_tokens(engine, PROMPTS[0]), long))
        assert err.value.retry_after > 0
        for s in streams:
            s.close()  # type: ignore[attr-defined]
    finally:
        small.close()


def test_overflow_and_bad_grammar_fail_only_their_own_request(
    engine: LlamaCppEngine, scheduler: BatchScheduler
) -> None:
    with pytest.raises(ContextOverflow) as err:
        scheduler.submit(list(range(100, 700)), GREEDY)
    assert err.value.prompt_tokens == 600 and err.value.n_ctx == 512
    bad = scheduler.submit(_tokens(engine, "x"), GREEDY.replace(grammar="root ::= nope"))
    good = scheduler.submit(_tokens(engine, PROMPTS[0]), GREEDY)
    with pytest.raises(GrammarError):
        collect(bad)
    assert collect(good).finish_reason == "length"


def test_logprobs_come_with_every_token(engine: LlamaCppEngine, scheduler: BatchScheduler) -> None:
    chunks = list(scheduler.submit(_tokens(engine, PROMPTS[0]), GREEDY, logprobs=3))
    assert all(isinstance(c, ScoredChunk) for c in chunks)
    scores = [s for c in chunks for s in c.logprobs]  # type: ignore[attr-defined]
    ids = [t for c in chunks for t in c.token_ids]
    assert [s.token for s in scores] == ids
    for s in scores:
        assert s.logprob <= 0 and len(s.top) == 3
        assert s.top[0][0] == s.token  # greedy, no penalty: the chosen token is the best one
        assert [lp for _, lp in s.top] == sorted((lp for _, lp in s.top), reverse=True)


def test_async_streams_and_cancellation(engine: LlamaCppEngine, scheduler: BatchScheduler) -> None:
    async def main() -> tuple[str, tuple[int, int]]:
        stream = scheduler.stream(_tokens(engine, PROMPTS[0]), GREEDY)
        text = "".join([c.text async for c in stream])
        endless = scheduler.stream(_tokens(engine, PROMPTS[1]), GenerationParams(temperature=0))
        await endless.__anext__()
        endless.close()
        for _ in range(500):
            if scheduler.load() == (0, 0):
                break
            await asyncio.sleep(0.01)
        return text, scheduler.load()

    text, load = asyncio.run(main())
    assert text == engine.detokenize(
        collect(scheduler.submit(_tokens(engine, PROMPTS[0]), GREEDY)).token_ids
    )
    assert load == (0, 0)


def test_a_busy_slot_lends_its_shared_prefix(
    engine: LlamaCppEngine, scheduler: BatchScheduler
) -> None:
    system = _tokens(engine, "You are a librarian. " + "Rule: be kind and brief. " * 12)
    question = _tokens(engine, " Where are the maps?")
    alone = collect(scheduler.submit(system + question, GREEDY))
    engine.reset()
    busy = scheduler.submit(system + _tokens(engine, " Hello"), GenerationParams(temperature=0))
    next(busy)  # the first request now holds the shared prefix in its slot, and keeps running
    borrowed = collect(scheduler.submit(system + question, GREEDY))
    busy.close()  # type: ignore[attr-defined]
    assert borrowed.usage.cached_tokens >= len(system) - 1
    assert borrowed.token_ids == alone.token_ids


def test_interleaved_chats_each_keep_their_cached_turns(
    engine: LlamaCppEngine, scheduler: BatchScheduler
) -> None:
    """Requests run on the lowest free slot, so caches move out of the way instead."""
    chats = [
        _tokens(engine, f"Chat {name}: a long talk about {topic}. " * 6 + "First question?")
        for name, topic in (("A", "rivers"), ("B", "mountains"), ("C", "deserts"))
    ]
    answers = [collect(scheduler.submit(chat, GREEDY)) for chat in chats]  # all on slot 0
    for chat, answer in zip(chats, answers, strict=True):
        turn2 = chat + list(answer.token_ids) + _tokens(engine, " Next question?")
        done = collect(scheduler.submit(turn2, GREEDY))
        assert done.usage.cached_tokens >= len(chat)


def test_busy_slots_stay_consecutive(engine: LlamaCppEngine, scheduler: BatchScheduler) -> None:
    """llama.cpp splits a batch at each gap in the sequence ids: one pass per piece."""
    seen: list[tuple[int, ...]] = []
    step = scheduler._step

    def recording_step() -> None:
        seen.append(tuple(sorted(scheduler._active)))
        step()

    scheduler._step = recording_step  # type: ignore[method-assign]
    long = GenerationParams(temperature=0, repeat_penalty=1.0, max_tokens=16)
    first = [scheduler.submit(_tokens(engine, p), long) for p in PROMPTS[:4]]
    for it in first:
        next(it)
    first[1].close()  # type: ignore[attr-defined]  # leaves a gap at slot 1 ...
    deadline = time.monotonic() + 30
    while scheduler.load()[0] > 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    later = collect(scheduler.submit(_tokens(engine, PROMPTS[5]), long))  # ... which this fills
    for it in first[2:] + first[:1]:
        collect(it)
    assert later.token_ids
    busy = [ids for ids in seen if len(ids) == 4]
    assert busy and all(ids == (0, 1, 2, 3) for ids in busy), busy


def test_a_failing_step_ends_only_its_own_request(
    engine: LlamaCppEngine, scheduler: BatchScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = _tokens(engine, "This request's sampling will fail.")
    real = engine.start_generation

    def start(prompt: list[int], params: GenerationParams, slot: int, **kw: Any) -> object:
        generation = real(prompt, params, slot, **kw)
        if list(prompt) == doomed:

            def broken(index: int) -> None:
                raise RuntimeError("sampling broke")

            generation.step = broken  # type: ignore[method-assign]
        return generation

    monkeypatch.setattr(engine, "start_generation", start)
    good = scheduler.submit(_tokens(engine, PROMPTS[1]), GREEDY)
    next(good)  # running: the doomed request joins its batch
    with pytest.raises(RuntimeError, match="sampling broke"):
        collect(scheduler.submit(doomed, GREEDY))
    assert collect(good).finish_reason == "length"  # it was not failed with the other
    assert scheduler.load() == (0, 0)
