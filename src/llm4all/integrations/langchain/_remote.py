"""Answers from an llm4all server (or any OpenAI-compatible one), through the ``openai`` client.

The client brings what a remote model needs and LangChain's standard fields
name: ``timeout``, ``max_retries`` with backoff, ``api_key``. Knobs OpenAI
lacks (``top_k``, ``min_p``, ``repeat_penalty``, ``repeat_last_n``) travel in
the request body, where an llm4all server reads them; tool calls and
JSON-schema output are the server's to parse and constrain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk

if TYPE_CHECKING:
    from openai import OpenAI

    from llm4all.integrations.langchain._base import Llm4allSettings
    from llm4all.integrations.langchain.embeddings import Llm4allEmbeddings

_OPENAI_KNOBS = frozenset(
    {"max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"}
)


def client(settings: Llm4allSettings | Llm4allEmbeddings) -> OpenAI:
    try:
        from openai import OpenAI
    except ImportError as exc:  # pragma: no cover - the extra brings it
        raise ImportError(
            "base_url needs the openai package: pip install 'llm4all[langchain]'"
        ) from exc
    key = settings.api_key.get_secret_value() if settings.api_key else "none"
    return OpenAI(
        base_url=settings.base_url,
        api_key=key,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
    )


def _body(knobs: dict[str, Any]) -> dict[str, Any]:
    """The request fields of ``knobs``: OpenAI's own, the rest in ``extra_body``."""
    body: dict[str, Any] = {
        k: (list(v) if k == "stop" else v) for k, v in knobs.items() if k in _OPENAI_KNOBS
    }
    extra = {k: v for k, v in knobs.items() if k not in _OPENAI_KNOBS and k != "json_schema"}
    if extra:
        body["extra_body"] = extra
    return body


def _tool_choice(choice: Any) -> Any:
    if choice in ("any", True):
        return "required"
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


def chat_stream(
    settings: Llm4allSettings,
    messages: list[BaseMessage],
    knobs: dict[str, Any],
    name: str | None,
    tools: list[dict[str, Any]],
    choice: Any,
    run_manager: CallbackManagerForLLMRun | None,
) -> Iterator[ChatGenerationChunk]:
    """A chat answer streamed from the server, as LangChain chunks ending in the usage."""
    body = _body(knobs)
    if "json_schema" in knobs:
        schema = json.loads(knobs["json_schema"])
        body["response_format"] = (
            {"type": "json_object"}
            if schema == {}
            else {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
        )
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = _tool_choice(choice)
    create: Any = client(settings).chat.completions.create  # the body is built, not typed
    stream = create(
        model=name or settings.model,  # None: the server's default model
        messages=convert_to_openai_messages(messages),
        stream=True,
        stream_options={"include_usage": True},
        **body,
    )
    model_name, reason = name or settings.model or "", None
    for event in stream:
        model_name = event.model or model_name
        if event.usage is not None:
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    usage_metadata={
                        "input_tokens": event.usage.prompt_tokens,
                        "output_tokens": event.usage.completion_tokens,
                        "total_tokens": event.usage.total_tokens,
                    },
                )
            )
        for c in event.choices:
            reason = c.finish_reason or reason
            calls = [
                tool_call_chunk(
                    name=t.function.name if t.function else None,
                    args=t.function.arguments if t.function else None,
                    id=t.id,
                    index=t.index,
                )
                for t in c.delta.tool_calls or ()
            ]
            text = c.delta.content or ""
            if not text and not calls:
                continue
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(content=text, tool_call_chunks=calls)
            )
            if run_manager and text:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk
    yield ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            response_metadata={
                "model_name": model_name,
                "finish_reason": reason,
                "model_provider": "llm4all",
            },
            chunk_position="last",
        ),
        generation_info={"finish_reason": reason},
    )


def completion_stream(
    settings: Llm4allSettings, prompt: str, knobs: dict[str, Any], name: str | None
) -> Iterator[GenerationChunk]:
    """A text completion streamed from the server's ``/v1/completions``."""
    create: Any = client(settings).completions.create
    stream = create(model=name or settings.model, prompt=prompt, stream=True, **_body(knobs))
    for event in stream:
        for c in event.choices:
            if c.text:
                yield GenerationChunk(text=c.text)
