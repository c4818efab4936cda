"""Token log-probabilities in OpenAI's two shapes (chat's ``content`` list, completions' columns)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llm4all.engine.base import TokenLogprob
from llm4all.engine.runner import Runner


def _token(runner: Runner, token: int, piece: bytes | None = None) -> tuple[str, list[int]]:
    raw = piece if piece is not None else runner.token_bytes(token)
    return raw.decode("utf-8", "replace"), list(raw)


def _top(runner: Runner, score: TokenLogprob) -> list[tuple[str, list[int], float]]:
    pieces = score.top_pieces or (None,) * len(score.top)
    return [
        (*_token(runner, t, piece), lp) for (t, lp), piece in zip(score.top, pieces, strict=True)
    ]


def chat_logprobs(runner: Runner, scores: Sequence[TokenLogprob]) -> dict[str, Any]:
    """``{"content": [{token, logprob, bytes, top_logprobs}], "refusal": None}``."""
    content = []
    for score in scores:
        text, raw = _token(runner, score.token, score.piece)
        top = [
            {"token": alt_text, "logprob": logprob, "bytes": alt_raw}
            for alt_text, alt_raw, logprob in _top(runner, score)
        ]
        content.append({"token": text, "logprob": score.logprob, "bytes": raw, "top_logprobs": top})
    return {"content": content, "refusal": None}


def completion_logprobs(
    runner: Runner, scores: Sequence[TokenLogprob], offset: int = 0
) -> dict[str, Any]:
    """``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`` (the legacy shape)."""
    tokens: list[str] = []
    offsets: list[int] = []
    top: list[dict[str, float]] = []
    for score in scores:
        text, _ = _token(runner, score.token, score.piece)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        top.append({alt: lp for alt, _, lp in _top(runner, score)})
    return {
        "tokens": tokens,
        "token_logprobs": [s.logprob for s in scores],
        "top_logprobs": top,
        "text_offset": offsets,
    }
