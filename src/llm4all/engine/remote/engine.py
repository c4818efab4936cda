"""The remote backend: an :class:`Engine` whose model runs behind an OpenAI-compatible endpoint.

The endpoint renders chats with the model's own template, samples, and
batches concurrent requests on its side (vLLM's continuous batching and
tensor parallelism, ollama, a hosted provider, another ``llm4all serve``).
So the capabilities say: chats in (:class:`ChatInput`) or text to continue,
never token ids; JSON-schema output and tools passed through; no GBNF, no KV
slots, no log-probs; batching is the remote's own, and the server's runner
only passes requests through (:class:`~llm4all.engine.runner.ThreadRunner`
with many workers).

Tool calls stream back as OpenAI's structured ``tool_calls`` deltas; they are
handed on as the text :func:`llm4all.chat.tools.parse` reads for every backend
(the calls' JSON, or Hermes ``<tool_call>`` blocks after other text), so the
answer pipeline treats them all alike.

Everything on the wire (requests, retries, the stream, errors) is
:mod:`llm4all.engine.remote.client`'s.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llm4all.engine.base import (
    Capabilities,
    ChatInput,
    Chunk,
    Engine,
    FinishReason,
    ModelInfo,
    PromptInput,
    ShouldContinue,
    Timings,
    Usage,
)
from llm4all.engine.remote.client import (
    Endpoint,
    RemoteClient,
    RemoteError,
    RemoteModelNotFound,
    RemoteProtocolError,
)
from llm4all.errors import Unsupported

if TYPE_CHECKING:
    from llm4all.engine.runner import Runner
from llm4all.params import GenerationParams

log = logging.getLogger(__name__)

#: Requests in flight at once through the pass-through runner (the remote batches them).
CONCURRENCY = 16

CHAT_CAPABILITIES = Capabilities(
    tokens=False,
    chat=True,
    grammar=False,
    json_schema=True,
    tools=True,
    prefix_cache=False,
    batching=True,
    embeddings=False,
    logprobs=False,
    scoring=False,
    gpu_offload=False,
)
EMBEDDING_CAPABILITIES = Capabilities(batching=True, embeddings=True)

_FINISH: dict[str | None, FinishReason] = {"length": "length"}  # everything else is a stop


class RemoteEngine(Engine):
    """One model on one endpoint. ``embedding=True``: a model for ``/v1/embeddings``."""

    def __init__(
        self,
        name: str,
        endpoint: Endpoint,
        *,
        embedding: bool = False,
        client: RemoteClient | None = None,
        check: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.client = client or RemoteClient(endpoint)
        self.capabilities = EMBEDDING_CAPABILITIES if embedding else CHAT_CAPABILITIES
        try:
            card = self._model_card() if check else {}
            # An embedding model's width is known once it has embedded something: ask now,
            # so that a chat model registered as one fails here, not at the first document.
            n_embd = len(self._embed_raw(["llm4all"])[0]) if embedding and check else 0
        except BaseException:
            self.client.close()
            raise
        self.info = ModelInfo(
            name=name,
            architecture="remote",
            n_ctx=_int(card.get("max_model_len") or card.get("context_length")),
            n_embd=n_embd,
            metadata={"remote.base_url": endpoint.api_base, "remote.model": endpoint.model},
            backend="remote",
            device=f"remote {endpoint.api_base}",
        )

    def _model_card(self) -> dict[str, Any]:
        """The endpoint's ``/models`` entry for this model; checks that it is there.

        An endpoint without ``/models`` (a 404 for the listing itself) is
        trusted: the first request says whether the model exists.
        """
        try:
            listing = self.client.get_json("models")
        except RemoteModelNotFound:
            return {}
        cards = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(cards, list):
            return {}
        for card in cards:
            if isinstance(card, dict) and card.get("id") == self.endpoint.model:
                return card
        ids = [str(c.get("id")) for c in cards if isinstance(c, dict)][:8]
        served = f"; it serves {', '.join(ids)}" if ids else ""
        raise RemoteModelNotFound(
            self.client.where, f"no model {self.endpoint.model!r} there{served}"
        )

    # -- generation ----------------------------------------------------------------------
    def generate(
        self,
        prompt: PromptInput,
        params: GenerationParams,
        *,
        should_continue: ShouldContinue | None = None,
        slot: int = 0,
        logprobs: int | None = None,
    ) -> Iterator[Chunk]:
        """Stream the remote's answer; validated now, sent on the first ``next()``."""
        self.capabilities.require("chat", "text generation")
        self.check_params(params)
        if logprobs is not None:
            self.capabilities.require("logprobs", "log-probabilities")
        body: dict[str, Any]
        if isinstance(prompt, ChatInput):
            body, path = {"messages": list(prompt.messages)}, "chat/completions"
            if prompt.tools:
                body["tools"] = list(prompt.tools)
            choice = getattr(prompt, "tool_choice", None)  # where the contract carries one
            if choice is not None:
                body["tool_choice"] = choice
        elif isinstance(prompt, str):
            body, path = {"prompt": prompt}, "completions"
        else:
            raise Unsupported("a prompt of token ids", "tokens", "a remote model")
        body |= {"model": self.endpoint.model, **request_params(params)}
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        return self._stream(path, body, should_continue)

    def _stream(
        self, path: str, body: dict[str, Any], should_continue: ShouldContinue | None
    ) -> Iterator[Chunk]:
        state = _StreamState(start=time.perf_counter())
        go_on: Callable[[], bool] = should_continue or (lambda: True)
        for event in self.client.stream_events(path, body, go_on):
            text = state.take(event, self.client.where)
            if text:
                yield Chunk(text)
        if state.tool_calls:
            yield Chunk(state.calls_text())
        cancelled = not go_on()
        yield state.final(
            cancelled, self.count_tokens(json.dumps(body.get("messages", body.get("prompt"))))
        )

    # -- embeddings ------------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised vectors from the remote's ``/embeddings``, in the order given."""
        self.capabilities.require("embeddings", "embeddings")
        if not texts:
            return []
        return [_normalised(v) for v in self._embed_raw(texts)]

    def _embed_raw(self, texts: Sequence[str]) -> list[list[float]]:
        answer = self.client.post_json(
            "embeddings", {"model": self.endpoint.model, "input": list(texts)}
        )
        try:
            rows = sorted(answer["data"], key=lambda d: d["index"])
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (KeyError, TypeError, ValueError):
            raise RemoteProtocolError(
                self.client.where, "the embeddings answer has no data"
            ) from None
        if len(vectors) != len(texts):
            raise RemoteProtocolError(
                self.client.where, f"{len(texts)} texts sent but {len(vectors)} vectors came back"
            )
        return vectors

    # -- concurrency and lifetime -----------------------------------------------------------
    def runner(self, max_queue: int = 64) -> Runner:
        """A pass-through runner: the remote batches, so many requests go out at once."""
        from llm4all.engine.runner import ThreadRunner

        return ThreadRunner(self, concurrency=CONCURRENCY, max_queue=max_queue)

    def close(self) -> None:
        self.client.close()


def request_params(params: GenerationParams) -> dict[str, Any]:
    """The OpenAI request fields for ``params`` (only the ones every endpoint accepts).

    Example: ``request_params(GenerationParams(temperature=0, max_tokens=5))`` has
    ``"temperature": 0.0, "max_tokens": 5``. llama.cpp's own knobs (top-k,
    min-p, repeat penalty) are not standard and stay local; the remote uses its own.
    """
    out: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p}
    if params.max_tokens is not None:
        out["max_tokens"] = params.max_tokens
    if params.stop:
        out["stop"] = list(params.stop)
    if params.seed is not None:
        out["seed"] = params.seed
    if params.presence_penalty:
        out["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        out["frequency_penalty"] = params.frequency_penalty
    if params.json_schema is not None:
        out["response_format"] = response_format(params.json_schema)
    return out


def response_format(schema_text: str) -> dict[str, Any]:
    """OpenAI's ``response_format`` for a JSON schema given as text (``"{}"``: any JSON object)."""
    schema = json.loads(schema_text)
    if not schema:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


@dataclass
class _StreamState:
    """What a chat or text stream has said so far."""

    start: float
    first: float | None = None
    last: float | None = None
    pieces: int = 0
    finish: str | None = None
    usage: dict[str, Any] | None = None
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    content: bool = False  # any text besides tool calls

    def take(self, event: dict[str, Any], where: str) -> str:
        """The text in one event (recording its tool calls, finish reason and usage)."""
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        choices = event.get("choices") or []
        if not isinstance(choices, list):
            raise RemoteProtocolError(where, "a stream event's choices are not a list")
        text = ""
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            piece = delta.get("content") if isinstance(delta, dict) else None
            if piece is None:
                piece = choice.get("text")  # /completions streams text, not deltas
            if isinstance(piece, str):
                text += piece
                self.content = self.content or bool(piece.strip())
            for call in (delta.get("tool_calls") if isinstance(delta, dict) else None) or []:
                self._add_call(call)
            self.finish = choice.get("finish_reason") or self.finish
        if text or (self.tool_calls and self.first is None):
            now = time.perf_counter()
            self.first = self.first or now
            self.last = now
            self.pieces += 1
        return text

    def _add_call(self, call: dict[str, Any]) -> None:
        slot = self.tool_calls.setdefault(int(call.get("index", 0)), {"name": "", "arguments": ""})
        function = call.get("function") or {}
        slot["name"] += function.get("name") or ""
        slot["arguments"] += function.get("arguments") or ""

    def calls_text(self) -> str:
        """The tool calls as text :func:`llm4all.chat.tools.parse` reads, forced or not.

        After content, Hermes ``<tool_call>`` blocks; as the whole answer, the
        calls' JSON alone, one a line (what a call constrained by a JSON schema
        looks like, so a required call parses too).
        """
        calls = []
        for _, call in sorted(self.tool_calls.items()):
            try:
                arguments: Any = json.loads(call["arguments"] or "{}")
            except ValueError:
                arguments = call["arguments"]
            calls.append(json.dumps({"name": call["name"], "arguments": arguments}))
        if not self.content:
            return "\n".join(calls)
        return "\n" + "\n".join(f"<tool_call>\n{c}\n</tool_call>" for c in calls)

    def final(self, cancelled: bool, prompt_estimate: int) -> Chunk:
        usage = self.usage or {}
        completion = _int(usage.get("completion_tokens")) or self.pieces
        prompt = _int(usage.get("prompt_tokens")) or prompt_estimate
        cached = _int((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
        first = self.first or time.perf_counter()
        timings = Timings(
            prompt_seconds=first - self.start,
            time_to_first_token=first - self.start,
            generation_seconds=(self.last or first) - first,
            completion_tokens=completion,
        )
        reason: FinishReason = "cancelled" if cancelled else _FINISH.get(self.finish, "stop")
        return Chunk(
            "", finish_reason=reason, usage=Usage(prompt, completion, cached), timings=timings
        )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


__all__ = ["RemoteEngine", "RemoteError", "request_params"]
