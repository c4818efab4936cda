"""Token log-probabilities in OpenAI's two shapes (chat's ``content`` list, completions' columns)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llm4all.engine.scheduler import BatchScheduler, TokenLogprob


def _token(scheduler: BatchScheduler, token: int) -> tuple[str, list[int]]:
    raw = scheduler.token_bytes(token)
    return raw.decode("utf-8", "replace"), list(raw)


def chat_logprobs(scheduler: BatchScheduler, scores: Sequence[TokenLogprob]) -> dict[str, Any]:
    """``{"content": [{token, logprob, bytes, top_logprobs}], "refusal": None}``."""
    content = []
    for score in scores:
        text, raw = _token(scheduler, score.token)
        top = []
        for token, logprob in score.top:
            alt_text, alt_raw = _token(scheduler, token)
            top.append({"token": alt_text, "logprob": logprob, "bytes": alt_raw})
        content.append({"token": text, "logprob": score.logprob, "bytes": raw, "top_logprobs": top})
    return {"content": content, "refusal": None}


def completion_logprobs(
    scheduler: BatchScheduler, scores: Sequence[TokenLogprob], offset: int = 0
) -> dict[str, Any]:
    """``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`` (the legacy shape)."""
    tokens: list[str] = []
    offsets: list[int] = []
    top: list[dict[str, float]] = []
    for score in scores:
        text, _ = _token(scheduler, score.token)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        top.append({_token(scheduler, t)[0]: lp for t, lp in score.top})
    return {
        "tokens": tokens,
        "token_logprobs": [s.logprob for s in scores],
        "top_logprobs": top,
        "text_offset": offsets,
    }
