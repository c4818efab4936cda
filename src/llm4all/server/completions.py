"""``POST /v1/completions``: the legacy text completion (plain continuation, no chat template).

``prompt`` may be a string, a list of strings, a list of token ids or a list
of such lists; every prompt gets ``n`` choices, numbered prompt by prompt. A
text prompt goes through the answer pipeline's plain path
(:func:`llm4all.answer.prepare` with ``raw=True``), as ``llm4all run --raw``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request

from llm4all import answer
from llm4all.api import Model
from llm4all.chat.template import Message
from llm4all.engine.base import PromptInput, ScoredChunk
from llm4all.server.errors import ApiError, translate
from llm4all.server.generation import (
    DONE,
    FINGERPRINT,
    Run,
    check_context,
    check_n,
    choice_params,
    guarded,
    max_tokens_for,
    new_id,
    now,
    sse_response,
    start,
    wants_usage,
)
from llm4all.server.logprobs import completion_logprobs
from llm4all.server.manager import Loaded
from llm4all.server.schemas import CompletionRequest, TextCompletion
from llm4all.server.settings import ServerSettings

router = APIRouter()


def prompt_tokens(model: Model, prompt: str | list[Any]) -> list[PromptInput]:
    """Every prompt of the request: token ids (checked against the vocabulary), or text
    for an engine without token access."""
    if isinstance(prompt, str):
        return [_plain(model, prompt)]
    if prompt and all(isinstance(p, int) for p in prompt):
        prompts: list[PromptInput] = [list(prompt)]
    elif all(isinstance(p, str) for p in prompt):
        prompts = [_plain(model, p) for p in prompt]
    else:
        prompts = [list(p) for p in prompt]
    if not prompts:
        raise ApiError(400, "prompt is empty", param="prompt")
    for ids in prompts:
        if not isinstance(ids, str):
            model.engine.capabilities.require("tokens", "a prompt of token ids")
            check_vocab(model, list(ids), "prompt")  # type: ignore[arg-type]
    return prompts


def _plain(model: Model, text: str) -> PromptInput:
    return answer.prepare(model, [Message("user", text)], raw=True, fit=False).prompt


def check_vocab(model: Model, ids: list[int], param: str) -> None:
    """Token ids from a client must exist (llama.cpp aborts the process on one that does not)."""
    n_vocab = model.info.n_vocab
    bad = next((t for t in ids if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise ApiError(
            400, f"token id {bad} is not in the vocabulary (size {n_vocab})", param=param
        )


@router.post("/v1/completions", response_model=TextCompletion)
async def completions(body: CompletionRequest, request: Request) -> Any:
    """Create a text completion (OpenAI-compatible, legacy)."""
    settings: ServerSettings = request.app.state.settings
    n = check_n(settings, body.n)
    loaded: Loaded = await request.app.state.manager.acquire(body.model, "chat")
    try:
        prompts, params = _plan(settings, loaded.model, body, n)
    except BaseException:
        loaded.release()
        raise
    per_choice = [p for p in prompts for _ in range(n)]
    run = await start(
        request,
        loaded,
        per_choice,
        params * len(prompts),
        body.logprobs,
        reuse_prefix=body.cache_prompt is not False,
    )
    echoes = [_echo(loaded.model, p) if body.echo else "" for p in per_choice]
    if body.stream:
        return sse_response(_events(run, echoes, body.logprobs, wants_usage(body.stream_options)))
    try:
        await guarded(request, run.collect())
    finally:
        run.close()
    return _completion(run, echoes, body.logprobs)


def _echo(model: Model, prompt: PromptInput) -> str:
    return prompt if isinstance(prompt, str) else model.engine.detokenize(prompt)  # type: ignore[arg-type]


def _plan(
    settings: ServerSettings, model: Model, body: CompletionRequest, n: int
) -> tuple[list[PromptInput], list[Any]]:
    if body.echo and body.logprobs is not None:
        raise ApiError(400, "echo with logprobs (prompt logprobs) is not supported", param="echo")
    knobs = body.knobs()
    requested = knobs.pop("max_tokens", None)
    max_tokens = max_tokens_for(settings, requested)
    prompts = prompt_tokens(model, body.prompt)
    for ids in prompts:
        if not isinstance(ids, str):
            check_context(model.info.n_ctx, len(ids), requested, "prompt")  # type: ignore[arg-type]
    return prompts, choice_params(settings, knobs, n, max_tokens=max_tokens, model=model)


def _completion(run: Run, echoes: Sequence[str], logprobs: int | None) -> dict[str, Any]:
    choices = []
    for choice in run.choices:
        echo = echoes[choice.index]
        lp = None
        if logprobs is not None:
            lp = completion_logprobs(run.runner, choice.logprobs, len(echo))
        choices.append(
            {
                "index": choice.index,
                "text": echo + "".join(choice.text),
                "logprobs": lp,
                "finish_reason": choice.finish_reason or "stop",
            }
        )
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": now(),
        "model": run.loaded.name,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": run.usage(),
    }


async def _events(
    run: Run, echoes: Sequence[str], logprobs: int | None, include_usage: bool
) -> AsyncIterator[str]:
    head = {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": now(),
        "model": run.loaded.name,
        "system_fingerprint": FINGERPRINT,
    }

    def event(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
        data: dict[str, Any] = {**head, "choices": choices}
        if include_usage:
            data["usage"] = usage
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    offsets = [len(e) for e in echoes]
    try:
        for i, echo in enumerate(echoes):
            if echo:
                yield event([{"index": i, "text": echo, "logprobs": None, "finish_reason": None}])
        async for i, chunk in run.chunks():
            run.choices[i].add(chunk)
            lp = None
            if logprobs is not None:
                scores = chunk.logprobs if isinstance(chunk, ScoredChunk) else ()
                lp = completion_logprobs(run.runner, scores, offsets[i])
                offsets[i] += len(chunk.text)
            finish = chunk.finish_reason
            reason = None if finish is None else ("stop" if finish == "cancelled" else finish)
            if chunk.text or reason:
                yield event(
                    [{"index": i, "text": chunk.text, "logprobs": lp, "finish_reason": reason}]
                )
        if include_usage:
            yield event([], run.usage())
        yield DONE
    except Exception as exc:
        yield translate(exc).sse()
        yield DONE
    finally:
        run.close()
