"""``POST /v1/chat/completions``: messages in, an answer (or tool calls) out, streamed or whole.

The messages are rendered with the model's chat template (tool definitions
included), every choice runs on the model's batch scheduler, and the answer
is returned in OpenAI's shape: one ``chat.completion``, or server-sent
``chat.completion.chunk`` events ending in ``data: [DONE]`` (with a usage
chunk first when ``stream_options.include_usage`` is set).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request

from llm4all.api import Model
from llm4all.chat.template import PLAIN_STOPS, Message, render
from llm4all.engine.base import Chunk
from llm4all.engine.scheduler import ScoredChunk
from llm4all.params import GenerationParams
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
from llm4all.server.logprobs import chat_logprobs
from llm4all.server.manager import Loaded
from llm4all.server.schemas import ChatCompletion, ChatCompletionRequest
from llm4all.server.settings import ServerSettings
from llm4all.server.tools import (
    ContentSplitter,
    describe_in_system,
    forced_schema,
    parse,
    to_messages,
    tool_specs,
)

router = APIRouter()


@dataclass(frozen=True)
class Plan:
    """What a chat request asks for, ready to run."""

    prompt: list[int]
    params: list[GenerationParams]
    logprobs: int | None
    tools: bool  # tool calls are parsed out of the answer
    forced: bool  # the answer is exactly one call (grammar-constrained)
    known: frozenset[str]
    parallel: bool


def chat_prompt(model: Model, messages: list[Message], specs: list[dict[str, Any]]) -> list[int]:
    """The prompt tokens, tool definitions rendered by the model's template when it can."""
    if not specs:
        return model.chat_tokens(messages)
    # Model.render has no tools= yet, so the template is rendered here (same BOS rule).
    template = model._template
    if "tools" not in template:
        return model.chat_tokens(describe_in_system(messages, specs))
    info = model.info
    text = render(
        template, messages, bos_token=info.bos_token, eos_token=info.eos_token, tools=specs
    )
    add_bos = info.add_bos and not (info.bos_token and text.startswith(info.bos_token))
    return model.engine.tokenize(text, add_special=add_bos, parse_special=True)


def plan(settings: ServerSettings, model: Model, body: ChatCompletionRequest) -> Plan:
    specs = tool_specs(body.tools, body.tool_choice)
    forced = forced_schema(body.tools, body.tool_choice)
    schema = _response_schema(body)
    if forced is not None and schema is not None:
        raise ApiError(
            400, "give response_format or a required tool call, not both", param="response_format"
        )
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs set to true", param="top_logprobs")
    knobs = body.knobs()
    if not model.has_chat_template:  # a base model keeps writing turns otherwise
        stop = knobs.get("stop", [])
        knobs["stop"] = [*([stop] if isinstance(stop, str) else stop), *PLAIN_STOPS]
    requested = body.max_completion_tokens or knobs.pop("max_tokens", None)
    max_tokens = max_tokens_for(settings, requested)
    prompt = chat_prompt(model, to_messages(body.messages), specs)
    check_context(model.info.n_ctx, len(prompt), requested, "messages")
    return Plan(
        prompt=prompt,
        params=choice_params(
            settings, knobs, body.n or 1, max_tokens=max_tokens, json_schema=forced or schema
        ),
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        tools=bool(specs),
        forced=forced is not None,
        known=frozenset(t.function.name for t in body.tools or ()),
        parallel=body.parallel_tool_calls is not False,
    )


def _response_schema(body: ChatCompletionRequest) -> str | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return "{}"
    return json.dumps(fmt.json_schema.schema_ or {})


@router.post("/v1/chat/completions", response_model=ChatCompletion)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    """Create a chat completion (OpenAI-compatible)."""
    settings: ServerSettings = request.app.state.settings
    n = check_n(settings, body.n)
    loaded: Loaded = await request.app.state.manager.acquire(body.model, "chat")
    try:
        p = plan(settings, loaded.model, body)
    except BaseException:
        loaded.release()
        raise
    run = await start(
        request,
        loaded,
        [p.prompt] * n,
        p.params,
        p.logprobs,
        reuse_prefix=body.cache_prompt is not False,
    )
    if body.stream:
        return sse_response(_events(run, p, wants_usage(body.stream_options)))
    try:
        await guarded(request, run.collect())
    finally:
        run.close()
    return _completion(run, p)


def _completion(run: Run, p: Plan) -> dict[str, Any]:
    choices = []
    for choice in run.choices:
        text = "".join(choice.text)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = choice.finish_reason or "stop"
        if p.tools:
            parsed = parse(text, forced=p.forced, known=set(p.known), parallel=p.parallel)
            if parsed.calls:
                message = {
                    "role": "assistant",
                    "content": parsed.content,
                    "tool_calls": parsed.calls,
                }
                finish = "tool_calls"
        logprobs = chat_logprobs(run.scheduler, choice.logprobs) if p.logprobs is not None else None
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": finish,
            }
        )
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": now(),
        "model": run.loaded.name,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": run.usage(),
    }


class _ChunkWriter:
    """``chat.completion.chunk`` events of one response."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self._head = {
            "id": new_id("chatcmpl"),
            "object": "chat.completion.chunk",
            "created": now(),
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }
        self._include_usage = include_usage

    def event(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
        data: dict[str, Any] = {**self._head, "choices": choices}
        if self._include_usage:
            data["usage"] = usage
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def delta(
        self, index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None
    ) -> str:
        return self.event(
            [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]
        )


async def _events(run: Run, p: Plan, include_usage: bool) -> AsyncIterator[str]:
    out = _ChunkWriter(run.loaded.name, include_usage)
    splitters = [ContentSplitter(p.forced) if p.tools else None for _ in run.choices]
    try:
        for choice in run.choices:
            yield out.delta(choice.index, {"role": "assistant", "content": ""})
        async for i, chunk in run.chunks():
            run.choices[i].add(chunk)
            for event in _chunk_events(out, run, p, i, chunk, splitters[i]):
                yield event
        if include_usage:
            yield out.event([], run.usage())
        yield DONE
    except Exception as exc:  # after the headers: the error goes in the stream
        yield translate(exc).sse()
        yield DONE
    finally:
        run.close()


def _chunk_events(
    out: _ChunkWriter, run: Run, p: Plan, i: int, chunk: Chunk, splitter: ContentSplitter | None
) -> list[str]:
    events = []
    text = splitter.feed(chunk.text) if splitter else chunk.text
    finish: str | None = chunk.finish_reason
    if finish is not None and splitter is not None:
        text += splitter.flush()
    logprobs = None
    if p.logprobs is not None and isinstance(chunk, ScoredChunk) and chunk.logprobs:
        logprobs = chat_logprobs(run.scheduler, chunk.logprobs)
    if text or logprobs:
        events.append(out.delta(i, {"content": text}, logprobs))
    if finish is None:
        return events
    if splitter is not None:
        parsed = parse(splitter.held, forced=p.forced, known=set(p.known), parallel=p.parallel)
        if parsed.calls:
            calls = [{"index": k, **call} for k, call in enumerate(parsed.calls)]
            events.append(out.delta(i, {"tool_calls": calls}))
            finish = "tool_calls"
        elif splitter.held:
            events.append(out.delta(i, {"content": splitter.held}))
    events.append(out.delta(i, {}, finish="stop" if finish == "cancelled" else finish))
    return events
