"""``POST /v1/chat/completions``: messages in, an answer (or tool calls) out, streamed or whole.

The messages go through the answer pipeline (:func:`llm4all.answer.prepare`:
the model's chat template with the tool definitions, the model's default
system prompt first when they bring none, a base model's plain transcript as
in ``llm4all chat``, LocalDocs excerpts), every choice runs on the model's
runner, and the answer is returned in OpenAI's shape:
one ``chat.completion``, or server-sent ``chat.completion.chunk`` events
ending in ``data: [DONE]`` (with a usage chunk first when ``stream_options.include_usage`` is set). Tool calls stream
as OpenAI streams them (:mod:`llm4all.server.tool_stream`). With
``collections`` (an llm4all extension) the answer draws on LocalDocs
excerpts and the response carries their ``references``
(:mod:`llm4all.server.documents`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from llm4all import answer
from llm4all.answer import Prepared
from llm4all.api import Model
from llm4all.chat.template import Message
from llm4all.chat.tools import schemas_of
from llm4all.engine.base import Chunk, PromptInput, ScoredChunk
from llm4all.localdocs.context import annotate
from llm4all.params import GenerationParams
from llm4all.server.documents import collections_of
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
from llm4all.server.tool_stream import CallStreamer, ContentSplitter
from llm4all.server.tools import forced_schema, parse, to_messages, tool_specs

if TYPE_CHECKING:
    from llm4all.localdocs import LocalDocs

router = APIRouter()


@dataclass(frozen=True)
class Plan:
    """What a chat request asks for, ready to run."""

    prompt: PromptInput
    params: list[GenerationParams]
    logprobs: int | None
    tools: bool  # tool calls are parsed out of the answer
    forced: bool  # the answer is exactly one call (grammar-constrained)
    known: frozenset[str]
    parallel: bool
    references: list[dict[str, Any]] | None = None  # LocalDocs, when the request named collections
    schemas: dict[str, dict[str, Any]] | None = None  # each tool's parameters: calls are checked
    prepared: Prepared | None = None  # as the answer pipeline built it (the citation step)

    @property
    def checked(self) -> dict[str, dict[str, Any]] | set[str]:
        """What ``parse`` checks calls against: the schemas, or only the names."""
        return self.schemas if self.schemas is not None else set(self.known)


def plan(
    settings: ServerSettings,
    model: Model,
    body: ChatCompletionRequest,
    messages: list[Message],
    collections: Sequence[str] | None = None,
    localdocs: LocalDocs | None = None,
) -> Plan:
    """The request's prompt (from the answer pipeline) and each choice's parameters.

    Searches LocalDocs when ``collections`` are named: call it in a worker thread.
    """
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
    requested = body.max_completion_tokens or knobs.pop("max_tokens", None)
    max_tokens = max_tokens_for(settings, requested)
    choices = choice_params(
        settings,
        knobs,
        body.n or 1,
        max_tokens=max_tokens,
        json_schema=forced or schema,
        model=model,
    )
    prepared = answer.prepare(
        model,
        messages,
        params=choices[0],
        tools=specs,
        collections=collections or (),
        localdocs=localdocs,
        fit=False,  # what does not fit is a 400 with the counts, as OpenAI answers
        forced=forced is not None,
        parallel_calls=body.parallel_tool_calls is not False,
    )
    if prepared.prompt_tokens:
        check_context(model.info.n_ctx, prepared.prompt_tokens, requested, "messages")
    return Plan(
        prompt=prepared.prompt,
        params=[prepared.params.replace(seed=c.seed) for c in choices],
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        tools=bool(specs),
        forced=forced is not None,
        known=frozenset(t.function.name for t in body.tools or ()),
        parallel=body.parallel_tool_calls is not False,
        references=prepared.references if collections is not None else None,
        schemas=schemas_of(specs),
        prepared=prepared,
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
    names, docs = await collections_of(request, body.collections)
    messages = to_messages(body.messages)
    loaded: Loaded = await request.app.state.manager.acquire(body.model, "chat")
    try:
        collections = names if body.collections is not None else None
        if names:  # searching embeds the question: off the event loop
            p = await asyncio.to_thread(
                plan, settings, loaded.model, body, messages, collections, docs
            )
        else:
            p = plan(settings, loaded.model, body, messages, collections, docs)
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
        prepared=p.prepared,
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
            parsed = parse(text, forced=p.forced, known=p.checked, parallel=p.parallel)
            if parsed.calls:
                message = {
                    "role": "assistant",
                    "content": parsed.content,
                    "tool_calls": parsed.calls,
                }
                finish = "tool_calls"
        logprobs = chat_logprobs(run.runner, choice.logprobs) if p.logprobs is not None else None
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": finish,
            }
        )
    completion = {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": now(),
        "model": run.loaded.name,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": run.usage(),
    }
    if p.references is not None:
        annotate("".join(run.choices[0].text), p.references)  # the first choice's citations
        completion["references"] = p.references
    return completion


class _ChunkWriter:
    """``chat.completion.chunk`` events of one response."""

    def __init__(
        self, model: str, include_usage: bool, references: list[dict[str, Any]] | None
    ) -> None:
        self._head = {
            "id": new_id("chatcmpl"),
            "object": "chat.completion.chunk",
            "created": now(),
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }
        self._include_usage = include_usage
        self._references = references

    def event(
        self,
        choices: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        *,
        last: bool = False,
    ) -> str:
        data: dict[str, Any] = {**self._head, "choices": choices}
        if self._include_usage:
            data["usage"] = usage
        if last and self._references is not None:  # like usage: once, at the end
            data["references"] = self._references
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def delta(
        self,
        index: int,
        delta: dict[str, Any],
        logprobs: Any = None,
        finish: str | None = None,
        *,
        last: bool = False,
    ) -> str:
        return self.event(
            [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
            last=last,
        )


@dataclass
class _ToolState:
    """One choice's tool-call streaming: the content splitter and the call streamer."""

    splitter: ContentSplitter
    calls: CallStreamer


async def _events(run: Run, p: Plan, include_usage: bool) -> AsyncIterator[str]:
    out = _ChunkWriter(run.loaded.name, include_usage, p.references)
    tools = [
        _ToolState(ContentSplitter(p.forced), CallStreamer(p.known, p.parallel))
        if p.tools
        else None
        for _ in run.choices
    ]
    open_choices = len(run.choices)
    try:
        for choice in run.choices:
            yield out.delta(choice.index, {"role": "assistant", "content": ""})
        async for i, chunk in run.chunks():
            run.choices[i].add(chunk)
            if chunk.finish_reason is not None:
                open_choices -= 1
                if open_choices == 0 and p.references:  # checked before they go out, at the end
                    annotate("".join(run.choices[0].text), p.references)
            last = open_choices == 0 and not include_usage
            for event in _chunk_events(out, run, p, i, chunk, tools[i], last):
                yield event
        if include_usage:
            yield out.event([], run.usage(), last=True)
        yield DONE
    except Exception as exc:  # after the headers: the error goes in the stream
        yield translate(exc).sse()
        yield DONE
    finally:
        run.close()


def _chunk_events(
    out: _ChunkWriter, run: Run, p: Plan, i: int, chunk: Chunk, tools: _ToolState | None, last: bool
) -> list[str]:
    events = []
    text = tools.splitter.feed(chunk.text) if tools else chunk.text
    finish: str | None = chunk.finish_reason
    if finish is not None and tools is not None:
        text += tools.splitter.flush()
    logprobs = None
    if p.logprobs is not None and isinstance(chunk, ScoredChunk) and chunk.logprobs:
        logprobs = chat_logprobs(run.runner, chunk.logprobs)
    if text or logprobs:
        events.append(out.delta(i, {"content": text}, logprobs))
    if tools is not None:
        events += [
            out.delta(i, {"tool_calls": [e]}) for e in tools.calls.update(tools.splitter.held)
        ]
    if finish is None:
        return events
    if tools is not None and _finish_calls(out, p, i, tools, events):
        finish = "tool_calls"
    events.append(out.delta(i, {}, finish="stop" if finish == "cancelled" else finish, last=last))
    return events


def _finish_calls(out: _ChunkWriter, p: Plan, i: int, tools: _ToolState, events: list[str]) -> bool:
    """At the end of a choice: the calls not streamed yet, or the held text as content.

    True when the answer is tool calls (``finish_reason`` ``"tool_calls"``).
    """
    held = tools.splitter.held
    parsed = parse(held, forced=p.forced, known=p.checked, parallel=p.parallel)
    rest, is_calls = tools.calls.finish(parsed)
    events += [out.delta(i, {"tool_calls": [entry]}) for entry in rest]
    if is_calls and parsed.content:
        events.append(out.delta(i, {"content": parsed.content}))
    elif not is_calls and not tools.calls.calls and held:
        events.append(out.delta(i, {"content": held}))
    return is_calls
