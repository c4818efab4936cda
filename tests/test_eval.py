"""``llm4all eval perplexity``: ground-truth perplexity on real models (SmolLM2)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm4all.evaluate.perplexity import Subject, evaluate, open_subject
from llm4all.evaluate.scoring import gpt4all_variant, score_pair, summarise, windows
from llm4all.evaluate.sets import EvalDataError, load_examples

ROWS = [
    {"prompt": "What is the capital of France?", "response": "The capital of France is Paris."},
    {
        "prompt": "Name three primary colours.",
        "response": "Red, yellow and blue are the three primary colours of paint.",
    },
    {"prompt": "Translate 'good morning' into Spanish.", "response": "Buenos días."},
]


@pytest.fixture(scope="module")
def smol(fast_model_path: Path) -> Iterator[Subject]:
    with open_subject(str(fast_model_path), "llamacpp", n_ctx=1024) as subject:
        yield subject


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def test_windows_score_each_token_once_with_context() -> None:
    assert windows(10, 2, 6, 3) == [(0, 2, 6), (3, 6, 9), (4, 9, 10)]
    for n, first, n_ctx, stride in [(1000, 7, 128, 64), (50, 49, 16, 8), (300, 200, 64, 63)]:
        covered: list[int] = []
        for start, score_from, end in windows(n, first, n_ctx, stride):
            assert end - start <= n_ctx and start < score_from < end
            covered.extend(range(score_from, end))
        assert covered == list(range(first, n))
    with pytest.raises(ValueError):
        windows(10, 1, 8, 8)


def test_perplexity_matches_a_direct_computation(
    smol: Subject, tiny_file: Path, fast_model_path: Path
) -> None:
    """Our scores against llama-cpp-python's own high-level Llama with every logit kept.

    Flash attention on, as llm4all's engine gets it (llama.cpp's "auto" on a CPU):
    without it the per-token log-probabilities differ by up to 0.12 nats here.
    """
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(
        str(fast_model_path),
        n_ctx=1024,
        n_batch=256,
        logits_all=True,
        flash_attn=True,
        verbose=False,
    )
    try:
        for example in load_examples(tiny_file):
            context = smol.prompt_tokens(list(example.messages))
            target = smol.text_tokens(example.reference, False)
            ours = score_pair(smol.scorer, context, target)
            llm.reset()  # type: ignore[no-untyped-call]
            llm.eval([*context, *target])
            logits = np.asarray(llm.scores[: llm.n_tokens], dtype=np.float64)
            logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))[:, None]
            logp -= logits.max(1, keepdims=True)
            rows = np.arange(len(context) - 1, len(context) + len(target) - 1)
            direct = -logp[rows, target].mean()
            assert ours.n_tokens == len(target)
            assert ours.loss == pytest.approx(direct, rel=1e-6)
    finally:
        llm.close()


def test_only_the_answer_is_scored_and_the_prompt_helps(smol: Subject, tiny_file: Path) -> None:
    example = load_examples(tiny_file)[0]
    target = smol.text_tokens(example.reference, False)
    with_prompt = smol.score(example)
    bos_only = score_pair(smol.scorer, smol.text_tokens("", True) or [0], target)
    assert with_prompt.n_tokens == bos_only.n_tokens == len(target)
    assert with_prompt.perplexity < bos_only.perplexity  # the question makes "Paris" likely


def test_gpt4all_variant_scores_the_answer_without_its_prompt(
    smol: Subject, tiny_file: Path
) -> None:
    """One window: their figure is exp(mean loss of answer tokens 2.. given the answer alone)."""
    example = load_examples(tiny_file)[0]
    prompt = smol.text_tokens(example.gpt4all_prompt, True)
    full = smol.text_tokens(f"{example.gpt4all_prompt} {example.reference}", True)
    theirs = gpt4all_variant(smol.scorer, prompt, full)
    alone = smol.scorer.logprobs(full[len(prompt) :], 1)  # the answer, no context at all
    assert theirs.perplexity == pytest.approx(math.exp(-sum(alone) / len(alone)), rel=1e-6)
    assert theirs.n_tokens == len(full)  # divided by the length with the prompt (cancels here)
    assert smol.score(example, variant=True).perplexity == pytest.approx(theirs.perplexity)
    # Without its question the answer is much less likely than with it.
    assert theirs.perplexity > 2 * smol.score(example).perplexity


def test_long_texts_are_windowed(fast_model_path: Path, smol: Subject) -> None:
    text = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(20))
    tokens = smol.text_tokens(text, True)
    assert len(tokens) > 200
    with open_subject(str(fast_model_path), "llamacpp", n_ctx=128) as small:
        windowed = small.scorer
        from llm4all.evaluate.scoring import token_logprobs

        got = token_logprobs(windowed, tokens, 1)
    whole = smol.scorer.logprobs(tokens, 1)
    assert len(got) == len(whole) == len(tokens) - 1
    assert got[:100] == pytest.approx(whole[:100], abs=0.05)  # the first window sees the same
    assert all(math.isfinite(x) for x in got)


def test_evaluate_writes_rows_and_summary(smol: Subject, tiny_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    rows = evaluate(smol, load_examples(tiny_file), out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == rows and len(rows) == 3
    assert {r["line"] for r in rows} == {1, 2, 3}
    assert all(r["perplexity"] > 1 and r["tokens"] > 0 for r in rows)
    s = summarise([smol.score(e) for e in load_examples(tiny_file)])
    assert s.n == 3 and s.median_ppl == pytest.approx(sorted(r["perplexity"] for r in rows)[1])


def test_shipped_self_instruct_set() -> None:
    examples = load_examples("self-instruct")
    assert len(examples) == 252
    first = examples[0]
    assert first.messages[0].content.startswith("The sentence you are given might be too wordy")
    assert "unnecessary words. If you have any questions" in first.gpt4all_prompt  # their " "
    assert "\n\n" in first.messages[0].content  # instruction and input in the chat prompt


def test_bad_data_is_one_line_naming_the_row(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="no such file"):
        load_examples(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + '{"prompt": "only a prompt"}\n')
    with pytest.raises(EvalDataError, match=r"bad\.jsonl:2: .*'response' is missing"):
        load_examples(bad)
    only_user = tmp_path / "user.jsonl"
    only_user.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(EvalDataError, match=r"user\.jsonl:1: the row does not end with an answer"):
        load_examples(only_user)


def test_cli_perplexity(fast_model_path: Path, tiny_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "llm4all", "eval", "perplexity", str(fast_model_path)]
    res = subprocess.run(
        [*cmd, "--data", str(tiny_file), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "| median ppl |" in res.stdout and fast_model_path.name in res.stdout
    assert (out / "perplexity_hist.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary[0]["examples"] == 3
    missing = subprocess.run(
        [*cmd, "--data", str(tmp_path / "nope.jsonl")], capture_output=True, text=True, timeout=300
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such file"


@pytest.mark.slow
def test_llamacpp_and_transformers_agree_on_the_same_weights() -> None:
    """SmolLM2's GGUF in llama.cpp and dequantized in transformers (float32): same tokens,
    corpus perplexity within 1 % (measured: 5.0116 vs 5.0118 on these 8 examples)."""
    pytest.importorskip("transformers", reason="pip install 'llm4all[train]'")
    examples = load_examples("self-instruct", limit=8)
    results = {}
    for backend in ("llamacpp", "transformers"):
        with open_subject("smollm2-135m-instruct", backend, 2048) as subject:
            tokens = [subject.prompt_tokens(list(e.messages)) for e in examples]
            results[backend] = tokens, summarise([subject.score(e) for e in examples])
    (cpp_tokens, cpp), (hf_tokens, hf) = results["llamacpp"], results["transformers"]
    assert cpp_tokens == hf_tokens  # one template, one tokenization
    assert cpp.tokens == hf.tokens
    assert hf.corpus_ppl == pytest.approx(cpp.corpus_ppl, rel=0.01)
    assert hf.median_ppl == pytest.approx(cpp.median_ppl, rel=0.02)
