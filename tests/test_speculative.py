"""Speculative decoding (engine/speculative.py): same output as normal decoding, fewer passes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from llm4all.engine._native import common_prefix
from llm4all.engine.base import Completion, collect
from llm4all.engine.llamacpp import LlamaCppEngine
from llm4all.engine.speculative import (
    STALE_PASSES,
    DraftLength,
    PassCosts,
    PromptLookup,
    speculative_sample,
)
from llm4all.errors import ModelLoadError
from llm4all.params import GenerationParams, LoadParams

PROMPTS = [
    "Write a Python function that computes Fibonacci numbers.",
    "The capital of France is",
    "Explain what a hash table is in two sentences.",
    "List three colours of the rainbow:",
    "def add(a, b):\n    return a + b\n\n# Now a function that multiplies:\n",
    "Repeat exactly: the quick brown fox jumps over the lazy dog. The quick brown fox",
    "Q: What is 12 times 12?\nA:",
    "Once upon a time, in a small village,",
    "Translate to French: good morning, my friend.",
    "Summarise: Paris is the capital of France. It is known for the Eiffel Tower. Paris",
    "import numpy as np\n\ndef mean(xs):\n",
    "Give me a haiku about the sea.",
]


@pytest.fixture(scope="module")
def engines(fast_model_path: Path) -> Iterator[dict[str, LlamaCppEngine]]:
    path = str(fast_model_path)
    made = {
        "plain": LlamaCppEngine(path, LoadParams(n_ctx=1024)),
        "draft": LlamaCppEngine(path, LoadParams(n_ctx=1024, draft=path)),
        "lookup": LlamaCppEngine(path, LoadParams(n_ctx=1024, lookup=True)),
    }
    for name in ("draft", "lookup"):  # as if verifying were free: every chance to draft is taken
        drafter = made[name].drafter
        assert drafter is not None
        drafter.costs = PassCosts.pinned_to(1.0, 0.0, 0.0)
    yield made
    for engine in made.values():
        engine.close()


def _run(engine: LlamaCppEngine, prompt: str, params: GenerationParams) -> Completion:
    return collect(engine.generate(prompt, params))


@pytest.mark.parametrize("method", ["draft", "lookup"])
def test_greedy_output_is_token_for_token_normal_decoding(
    engines: dict[str, LlamaCppEngine], method: str
) -> None:
    params = GenerationParams(temperature=0, max_tokens=32)
    drafted = 0
    for prompt in PROMPTS:
        want = _run(engines["plain"], prompt, params)
        got = _run(engines[method], prompt, params)
        assert got.token_ids == want.token_ids, prompt
        assert got.text == want.text
        assert got.finish_reason == want.finish_reason
        drafted += got.timings.drafted_tokens
        assert got.timings.target_passes <= len(got.token_ids) + 1  # + the pass that ended it
    assert drafted > 0  # the drafter did propose tokens


def test_self_draft_is_accepted_and_saves_passes(engines: dict[str, LlamaCppEngine]) -> None:
    """A model drafting for itself (no repeat penalty) has nearly every draft kept."""
    params = GenerationParams(temperature=0, max_tokens=48, repeat_penalty=1.0)
    got = _run(engines["draft"], PROMPTS[0], params)
    t = got.timings
    assert t.drafted_tokens > 0
    assert t.accepted_tokens / t.drafted_tokens > 0.8
    assert t.target_passes < len(got.token_ids) / 2


_LINE = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima"
QUOTING = f"Copy this line exactly.\nLine: {_LINE}\nCopy: {_LINE[:30]}"


def test_lookup_finds_quoted_text(engines: dict[str, LlamaCppEngine]) -> None:
    prompt = QUOTING
    params = GenerationParams(temperature=0, max_tokens=24, repeat_penalty=1.0)
    want = _run(engines["plain"], prompt, params)
    got = _run(engines["lookup"], prompt, params)
    assert got.token_ids == want.token_ids
    assert got.timings.accepted_tokens > 0


def test_sampling_with_a_seed_matches_normal_decoding(engines: dict[str, LlamaCppEngine]) -> None:
    """The target samples every position itself, so a seeded answer is the same one."""
    params = GenerationParams(temperature=0.8, max_tokens=32, seed=7)
    for prompt in PROMPTS[:4]:
        want = _run(engines["plain"], prompt, params)
        got = _run(engines["draft"], prompt, params)
        assert got.token_ids == want.token_ids


def test_grammar_and_stops_still_apply(engines: dict[str, LlamaCppEngine]) -> None:
    params = GenerationParams(temperature=0, max_tokens=30, grammar='root ::= "yes" | "no"')
    got = _run(engines["draft"], "Is the sky blue? Answer yes or no:", params)
    assert got.text in ("yes", "no")
    stop = GenerationParams(temperature=0, max_tokens=60, stop=("Paris",))
    want = _run(engines["plain"], PROMPTS[9], stop)
    assert _run(engines["lookup"], PROMPTS[9], stop).text == want.text


def test_other_vocabulary_is_refused(fast_model_path: Path, default_model_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="other vocabulary"):
        LlamaCppEngine(str(fast_model_path), LoadParams(n_ctx=256, draft=str(default_model_path)))


def test_missing_draft_file_is_a_load_error(fast_model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        LlamaCppEngine(str(fast_model_path), LoadParams(n_ctx=256, draft=str(tmp_path / "x.gguf")))


def test_prompt_lookup_proposes_what_followed() -> None:
    lookup = PromptLookup(min_ngram=2)
    context = [5, 6, 7, 8, 9, 1, 5, 6]
    assert lookup.propose(context, 3) == [7, 8, 9]
    assert lookup.propose([*context, 7], 2) == [8, 9]  # incremental: the index grew
    assert lookup.propose([1, 2, 3, 4], 3) == []  # a new text, nothing repeats
    assert lookup.propose([3, 4, 3, 4, 3], 5) == [4, 3]  # only what exists so far
    assert PromptLookup().propose(context, 3) == []  # by default a match is 3 tokens or more


def test_pass_costs_are_measured_and_modelled() -> None:
    costs = PassCosts(draft=0.0)
    assert not costs.measured
    costs.record_pass(1, 0.10)
    costs.record_pass(9, 0.74)  # a pass of 9 tokens costs 7.4 of one: busy CPU cores
    assert not costs.measured  # one sample of a multi-token pass is not enough
    costs.record_pass(9, 0.74)
    assert costs.measured
    assert costs.extra == pytest.approx(0.08)
    costs.record_pass(1, 10.0)  # descheduled: counted as 4x the average at most
    assert costs.t1 == pytest.approx(0.10 + 0.2 * (0.40 - 0.10))
    # a = 0.8, k = 4, extra = t1 / 2, free drafts: 3.36 tokens in 3 passes' time.
    half = PassCosts.pinned_to(1.0, 0.5, 0.0)
    assert half.speedup(4, 0.8) == pytest.approx(3.3616 / 3)
    assert half.speedup(0, 0.8) == 1.0
    for _ in range(STALE_PASSES):  # only plain passes: the multi-token cost gets old
        costs.record_pass(1, 0.1)
    assert not costs.measured


def test_draft_length_drafts_only_what_pays() -> None:
    gpu = PassCosts.pinned_to(1.0, 0.02, 0.1)  # verifying is nearly free, drafts cheap
    busy_lookup = PassCosts.pinned_to(1.0, 0.8, 0.0)  # two busy CPU cores, prompt lookup
    busy_draft = PassCosts.pinned_to(1.0, 0.8, 0.7)  # ... and a 0.5B draft for a 1.5B
    assert gpu.best(0.5, 16)[0] > 0
    assert busy_lookup.best(0.5, 16)[0] == 0
    assert busy_lookup.best(0.98, 16)[0] >= 4
    assert busy_draft.best(1.0, 16)[0] == 0  # not even all-kept drafts would pay
    assert DraftLength(busy_draft).next == 0
    assert DraftLength(gpu, start=4).next == 2  # from the last length (4): at most +2
    length = DraftLength(busy_lookup)
    assert length.next == 1  # nothing pays yet, and no pause: one proposal is tried
    length.update(1, 0)
    assert length.next == 0  # rejected: a pause of 1 pass, then 2, 4 ...
    length.update(0, 0)
    assert length.next == 1
    length.update(1, 0)
    assert length.next == 0
    length.update(0, 0)
    assert length.next == 0
    length.update(0, 0)
    for _ in range(16):  # the answer starts quoting: every proposal is kept
        k = length.next
        length.update(k, k)
    assert length.acceptance > 0.9 and length.next > 4


def test_costs_are_measured_before_they_are_used() -> None:
    length = DraftLength(PassCosts(), start=4)
    assert length.next == 0  # a plain pass first: its time is the baseline
    length.decoding()
    length.update(0, 0)
    assert length.costs.t1 is not None and length.next == 4  # then a pass that drafts
    length.decoding()
    length.update(4, 4)
    assert length.next == 4  # a second sample
    length.decoding()
    length.update(4, 4)
    assert length.costs.extra >= 0 and length.costs.draft is None  # no draft timed yet


def test_rejection_rule_keeps_the_target_distribution() -> None:
    """Toy distributions: the emitted tokens follow p, not q (chi-square, fixed seed)."""
    from scipy import stats

    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    q = np.array([0.1, 0.4, 0.1, 0.3, 0.1])
    rng = np.random.default_rng(1234)
    n = 12_000
    counts = np.zeros(len(p))
    accepted = 0
    for _ in range(n):
        token, kept = speculative_sample(p, q, rng)
        counts[token] += 1
        accepted += kept
    assert stats.chisquare(counts, p * n).pvalue > 0.001
    assert stats.chisquare(counts, q * n).pvalue < 1e-6  # the test can tell q from p
    # The acceptance rate is sum(min(p, q)) = 0.1+0.2+0.1+0.1+0.05 = 0.55.
    assert abs(accepted / n - np.minimum(p, q).sum()) < 0.02


def test_batching_runner_speculates_for_a_lone_stream(fast_model_path: Path) -> None:
    """The server's runner: one stream is speculated; two at once decode side by side."""
    import threading

    from llm4all.engine.scheduler import BatchScheduler

    path = str(fast_model_path)
    plain = LlamaCppEngine(path, LoadParams(n_ctx=1024))
    engine = LlamaCppEngine(path, LoadParams(n_ctx=2048, n_seq_max=2, lookup=True))
    runner = BatchScheduler(engine, max_queue=4)
    try:
        params = GenerationParams(temperature=0, max_tokens=32, repeat_penalty=1.0)
        prompt = QUOTING
        want = _run(plain, prompt, params)
        lone = collect(runner.submit(engine.tokenize(prompt), params))
        assert lone.token_ids == want.token_ids
        assert lone.timings.target_passes > 0 and lone.timings.drafted_tokens > 0
        results: list[Completion] = []

        def one(p: str) -> None:
            results.append(collect(runner.submit(engine.tokenize(p), params)))

        threads = [threading.Thread(target=one, args=(p,)) for p in (prompt, PROMPTS[1])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {r.token_ids for r in results} >= {want.token_ids}
    finally:
        runner.close()
        engine.close()
        plain.close()


def test_answer_stats_report_speculation(fast_model_path: Path) -> None:
    import llm4all

    model = llm4all.Model(fast_model_path, n_ctx=1024, lookup=True)
    try:
        response = model.stream(PROMPTS[5], raw=True, temperature=0, max_tokens=24)
        response.text()
        stats = response.stats
        assert stats.tokens_per_pass is not None and stats.tokens_per_pass >= 1.0
        assert "tokens/pass" in stats.line()
        assert "speculative" in stats.as_dict()
    finally:
        model.close()


def test_catalog_drafts_name_catalog_models() -> None:
    from llm4all.models.catalog import load_catalog

    catalog = load_catalog()
    pairs = {e.name: e.draft for e in catalog if e.draft}
    assert pairs.get("qwen2.5-coder-1.5b-instruct") == "qwen2.5-coder-0.5b-instruct"
    for draft in pairs.values():
        assert catalog.get(draft) is not None


def test_auto_draft_without_a_suggestion_is_an_error(fast_model_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="suggests no draft"):
        LlamaCppEngine(str(fast_model_path), LoadParams(n_ctx=256, draft="auto"))


@pytest.mark.slow
def test_qwen_coder_pair_matches_the_target_alone() -> None:
    """The real pair: Qwen2.5-Coder 0.5B drafting for 1.5B, chosen by the catalog."""
    from llm4all.models import ModelStore

    target = str(ModelStore().resolve("qwen2.5-coder-1.5b-instruct", allow_download=False).path)
    plain = LlamaCppEngine(target, LoadParams(n_ctx=512))
    spec = LlamaCppEngine(target, LoadParams(n_ctx=512, draft="auto"))
    assert spec.drafter is not None  # on two CPU cores the draft never pays: make it draft
    spec.drafter.costs = PassCosts.pinned_to(1.0, 0.0, 0.0)
    try:
        params = GenerationParams(temperature=0, max_tokens=24, repeat_penalty=1.0)
        for prompt in (PROMPTS[0], PROMPTS[4]):
            want = _run(plain, prompt, params)
            got = _run(spec, prompt, params)
            assert got.timings.accepted_tokens > 0
            # llama.cpp's CPU kernels are not batch-invariant: a verify pass of several
            # tokens can flip a near tie that one-token decoding resolves the other way.
            # Identical, or the first difference is such a tie (< 0.3 nats apart, as
            # teacher forcing, itself batched, scores them; a wrong token is nats away).
            n = common_prefix(got.token_ids, want.token_ids)
            if n < len(want.token_ids):
                head = plain.tokenize(prompt) + list(want.token_ids[:n])
                a = plain.token_logprobs([*head, want.token_ids[n]], len(head))[0]
                b = plain.token_logprobs([*head, got.token_ids[n]], len(head))[0]
                assert abs(a - b) < 0.3, (n, a, b)
    finally:
        spec.close()
        plain.close()
