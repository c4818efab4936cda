"""The one answer pipeline: a question in, a rendered prompt, an engine stream, a Response out.

Every front end answers through here: the Python API (``Model.stream``,
``ChatSession``), the terminal chat and ``llm4all run`` (through them), the
OpenAI routes (``server/chat.py``, ``server/completions.py``), the web UI
(``server/ui_chat.py``), the original GPT4All API (``gpt4all/``) and the
LangChain chat model. None of them renders a prompt, adds LocalDocs excerpts
or computes answer statistics itself.

Two steps:

1. :func:`prepare` — messages + tools + collections + params → a
   :class:`Prepared` request: the system prompt chosen
   (:meth:`Model.system_prompt_for <llm4all.api.Model.system_prompt_for>`),
   LocalDocs excerpts in the last user turn
   (:func:`~llm4all.localdocs.context.documents_turn`), the chat template (or a
   :class:`~llm4all.engine.ChatInput` for an engine that renders chats itself),
   the context-window policy (:mod:`llm4all.chat.prompt`), and the answer's
   parameters (the chat format's stops, a bounded length for answers from
   documents).
2. :func:`stream` (in-process, one answer at a time: a :class:`Response`) or a
   runner's ``stream``/``submit`` (a server's concurrent requests: the engine's
   own :meth:`~llm4all.engine.Engine.runner`).

An answer from documents that ends citing nothing gets the citation step
(:func:`citation_request`): the same sequence continued under a grammar that
allows only `` [n]`` of an excerpt given, so the model names the excerpt it
used; :func:`with_citation` does it in-process, :class:`CitedStream` on a
server's runner.

A :class:`Response` carries the text, the tool calls parsed out of it, the
references, usage, timings and :class:`AnswerStats` — the one definition of
an answer's statistics, which the chat store, the CLI and the server report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llm4all.chat.prompt import answer_reserve, fit_messages
from llm4all.chat.template import Message
from llm4all.engine import ChatInput, Chunk, Completion, PromptInput, Timings, Usage, collect
from llm4all.engine.runner import AsyncStream, Runner
from llm4all.params import GenerationParams

if TYPE_CHECKING:
    from llm4all.api import Model
    from llm4all.chat.tools import Parsed
    from llm4all.localdocs import LocalDocs


#: A chat format as a function: messages to prompt token ids.
Renderer = Callable[[Sequence[Message]], list[int]]


# -- statistics -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnswerStats:
    """What one answer cost: counts and timings, as every front end reports them.

    A rate or a time that could not be measured (an answer stopped before its
    second token) is None, never 0.
    """

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    tokens_per_second: float | None = None
    time_to_first_token: float | None = None
    prompt_seconds: float | None = None
    #: Speculative decoding: the share of drafted tokens kept, and tokens per pass over
    #: the target's weights (None when the answer was not speculated).
    acceptance_rate: float | None = None
    tokens_per_pass: float | None = None

    @classmethod
    def of(cls, finish_reason: str, usage: Usage, timings: Timings) -> AnswerStats:
        drafted, passes = timings.drafted_tokens, timings.target_passes
        return cls(
            finish_reason,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
            timings.tokens_per_second or None,
            timings.time_to_first_token or None,
            timings.prompt_seconds or None,
            timings.accepted_tokens / drafted if drafted else None,
            timings.completion_tokens / passes if passes else None,
        )

    @classmethod
    def of_completion(cls, completion: Completion) -> AnswerStats:
        return cls.of(completion.finish_reason, completion.usage, completion.timings)

    def store_fields(self) -> dict[str, Any]:
        """The keywords the chat store keeps (``ChatStore.add_message``/``AnswerRecorder.finish``)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_per_second": self.tokens_per_second,
            "time_to_first_token": self.time_to_first_token,
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``usage`` and ``timings`` as ``llm4all run --json`` prints them."""
        return {
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cached_tokens": self.cached_tokens,
            },
            "timings": {
                "time_to_first_token": self.time_to_first_token,
                "tokens_per_second": self.tokens_per_second,
                "prompt_seconds": self.prompt_seconds,
            },
        } | (
            {
                "speculative": {
                    "acceptance_rate": self.acceptance_rate,
                    "tokens_per_pass": self.tokens_per_pass,
                }
            }
            if self.tokens_per_pass is not None
            else {}
        )

    def line(self) -> str:
        """One line for a terminal. Example: ``"12 prompt + 30 tokens, 41.2 tok/s, ..."``."""
        rate = f"{self.tokens_per_second:.1f} tok/s" if self.tokens_per_second else "- tok/s"
        first = (
            f"first token {self.time_to_first_token * 1000:.0f} ms"
            if self.time_to_first_token
            else "first token -"
        )
        spec = ""
        if self.tokens_per_pass is not None:
            kept = f"{self.acceptance_rate:.0%}" if self.acceptance_rate is not None else "-"
            spec = f", {self.tokens_per_pass:.2f} tokens/pass ({kept} of drafts kept)"
        return (
            f"{self.prompt_tokens} prompt + {self.completion_tokens} tokens, {rate}, {first}, "
            f"finish: {self.finish_reason}{spec}"
        )


# -- the prepared request ---------------------------------------------------------------------
@dataclass(frozen=True)
class Prepared:
    """A question ready for the engine: the prompt and everything that shaped it."""

    prompt: PromptInput  # token ids, text, or a ChatInput (see engine.Capabilities)
    params: GenerationParams
    messages: tuple[Message, ...] = ()  # as rendered: system prompt, documents, fitted
    references: list[dict[str, Any]] = field(default_factory=list)  # LocalDocs, numbered
    dropped: int = 0  # old messages trimmed to fit the context window
    tools: tuple[dict[str, Any], ...] = ()  # OpenAI function definitions shown to the model
    forced: bool = False  # the answer must be exactly one tool call
    parallel_calls: bool = True
    cite: bool = False  # the citation step may follow (:func:`citation_request`)

    @property
    def prompt_tokens(self) -> int:
        """Prompt length in tokens (0 where the engine counts them itself: text, chats)."""
        if isinstance(self.prompt, (str, ChatInput)):
            return 0
        return len(self.prompt)

    @property
    def token_ids(self) -> list[int]:
        """The prompt's token ids (for an engine with token access)."""
        if isinstance(self.prompt, (str, ChatInput)):
            raise TypeError("this prompt is text or a chat, not token ids")
        return list(self.prompt)

    def parse_tools(self, text: str) -> Parsed | None:
        """Content and tool calls of an answer (None when no tools were offered)."""
        if not self.tools:
            return None
        from llm4all.chat.tools import parse, schemas_of

        known = schemas_of(self.tools)
        return parse(text, forced=self.forced, known=known, parallel=self.parallel_calls)


def prepare(
    model: Model,
    messages: Sequence[Message],
    *,
    params: GenerationParams | None = None,
    system_prompt: str | None = None,
    tools: Sequence[dict[str, Any]] = (),
    collections: Sequence[str] = (),
    localdocs: LocalDocs | None = None,
    fit: bool = True,
    raw: bool = False,
    forced: bool = False,
    parallel_calls: bool = True,
    template: str | Renderer | None = None,
    parse_special: bool = True,
) -> Prepared:
    """Render a conversation for ``model``: the one place a prompt is built.

    - The system prompt: a system message in ``messages`` wins; otherwise
      :meth:`Model.system_prompt_for` chooses from ``system_prompt`` (None: the
      catalog's default; ``""``: none). With ``tools`` the catalog's default is sent
      without its worked examples (:meth:`Model.system_prompt_with_tools`).
    - ``collections``: the last user turn is searched in those LocalDocs
      collections (with the earlier user turns) and replaced, in the prompt
      only, by the numbered excerpts and the question; the answer is bounded
      (``localdocs.context.answer_tokens``) unless ``params.max_tokens`` is set.
    - ``fit=True`` drops the oldest turns until the prompt leaves room for the
      answer (``chat/prompt.py``); ``False`` renders everything (the caller
      refuses what does not fit, as the OpenAI route does with a 400).
    - ``raw=True`` (and ``model.kind == "base"`` with a single user message)
      continues the last user message as plain text, the system prompt before
      it, with no chat template.
    - ``template`` replaces the model's chat template: a Jinja chat template, or
      a :data:`Renderer` (messages to token ids; the GPT4All API's 2.8-style
      templates). The chat format's stops are then not added.
    - ``parse_special=False`` (plain text only) reads ``<|...|>`` in the text as
      text, not as special tokens (the GPT4All API's ``generate``).
    """
    p = params if params is not None else model.params
    msgs = list(messages)
    references: list[dict[str, Any]] = []
    cite = False
    if collections:
        msgs, references = _with_documents(msgs, collections, localdocs)
        from llm4all.localdocs import context

        p = p.replace(max_tokens=context.answer_tokens(p.max_tokens))
        cite = bool(references) and context.PROMPT.cite
    if raw:
        return _plain(model, msgs, p, system_prompt, references, parse_special, cite)
    if not any(m.role == "system" for m in msgs):
        system = model.system_prompt_for(system_prompt)
        if system:
            msgs.insert(0, Message("system", system))
    if tools:  # the catalog's worked examples make a model answer instead of calling
        msgs = [
            dataclasses.replace(m, content=model.system_prompt_with_tools(m.content))
            if m.role == "system"
            else m
            for m in msgs
        ]
    if template is None:  # a base model's transcript ends where its next turn begins
        p = model.chat_params(p)
    if tools and not forced and model.engine.capabilities.grammar:
        p = _with_call_grammar(p, tools)

    def made(prompt: PromptInput, sent: Sequence[Message], dropped: int = 0) -> Prepared:
        return Prepared(
            prompt,
            p,
            tuple(sent),
            references,
            dropped,
            tuple(tools),
            forced=forced,
            parallel_calls=parallel_calls,
            cite=cite,
        )

    caps = model.engine.capabilities
    if not caps.tokens and caps.chat:  # the backend renders the chat with its own template
        n_ctx = model.info.n_ctx
        if not (fit and n_ctx):  # a window it does not report: it refuses what is too long
            return made(ChatInput(tuple(_as_openai(m) for m in msgs), tuple(tools)), msgs)
        fitted = fit_messages(
            msgs, lambda part: _estimate(model, part), n_ctx, answer_reserve(p.max_tokens, n_ctx)
        )
        chat = ChatInput(tuple(_as_openai(m) for m in fitted.messages), tuple(tools))
        return made(chat, fitted.messages, fitted.dropped)

    jinja = template if isinstance(template, str) else None

    def to_tokens(part: Sequence[Message]) -> list[int]:
        if callable(template):
            return template(part)
        return model.chat_tokens(part, template=jinja, tools=tools)

    if not caps.tokens:  # text in, text out: the template rendered here
        return made(model.render(msgs, template=jinja, tools=tools), msgs)
    if not fit:
        return made(to_tokens(msgs), msgs)
    n_ctx = model.info.n_ctx
    fitted = fit_messages(msgs, to_tokens, n_ctx, answer_reserve(p.max_tokens, n_ctx))
    return made(fitted.tokens, fitted.messages, fitted.dropped)


def _with_call_grammar(p: GenerationParams, tools: Sequence[dict[str, Any]]) -> GenerationParams:
    """Once a call of a declared tool begins, its arguments follow the tool's schema.

    A lazy grammar (``chat.tools.call_grammar``): the answer is free until then.
    Left out when the request constrains the answer itself (a grammar or JSON schema).
    """
    if p.grammar is not None or p.json_schema is not None:
        return p
    from llm4all.chat.tools import call_grammar

    return p.replace(grammar=call_grammar(tools))


def _plain(
    model: Model,
    msgs: list[Message],
    params: GenerationParams,
    system_prompt: str | None,
    references: list[dict[str, Any]],
    parse_special: bool = True,
    cite: bool = False,
) -> Prepared:
    text = next((m.content for m in reversed(msgs) if m.role == "user"), "")
    if system_prompt:
        text = f"{system_prompt}\n\n{text}"
    engine = model.engine
    prompt: PromptInput = text
    if engine.capabilities.tokens:
        prompt = engine.tokenize(text, add_special=True, parse_special=parse_special)
    return Prepared(prompt, params, tuple(msgs), references, cite=cite)


def _estimate(model: Model, messages: Sequence[Message]) -> list[int]:
    """Stand-in tokens for messages an engine renders itself: its count of their JSON.

    Only their number matters (``fit_messages`` compares it with the window);
    the JSON's keys make it an over-estimate, so what is kept fits.
    """
    import json

    return [0] * model.engine.count_tokens(json.dumps([_as_openai(m) for m in messages]))


def _as_openai(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = list(message.tool_calls)
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _with_documents(
    msgs: list[Message], collections: Sequence[str], localdocs: LocalDocs | None
) -> tuple[list[Message], list[dict[str, Any]]]:
    """The last user turn with its LocalDocs excerpts (earlier user turns searched too)."""
    from llm4all.errors import InvalidParameter
    from llm4all.localdocs.context import documents_turn

    at = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].role == "user"), None)
    if at is None:
        raise InvalidParameter("collections", list(collections), "a user message to search for")
    earlier = [m.content for m in msgs[:at] if m.role == "user"]
    content, references = documents_turn(
        msgs[at].content, collections, earlier, localdocs=localdocs
    )
    asked = Message("user", content, msgs[at].tool_calls, msgs[at].tool_call_id)
    return [*msgs[:at], asked, *msgs[at + 1 :]], references


# -- one answer, in-process -------------------------------------------------------------------
def stream(
    model: Model,
    prepared: Prepared,
    *,
    slot: int = 0,
    on_chunk: Callable[[Chunk], None] | None = None,
    on_done: Callable[[Completion], None] | None = None,
) -> Response:
    """Stream ``prepared`` on ``model``'s engine (fails now if the prompt cannot fit)."""
    engine = model.engine
    if prepared.prompt_tokens:
        engine.check_fits(prepared.prompt_tokens)
    engine.check_params(prepared.params)
    prompt, params = prepared.prompt, prepared.params

    def start(go_on: Callable[[], bool]) -> Iterator[Chunk]:
        chunks = engine.generate(prompt, params, should_continue=go_on, slot=slot)
        if not prepared.cite:
            return chunks

        def marked(marker: str) -> None:
            response.step_marker = marker

        return with_citation(model, prepared, chunks, go_on, slot, on_marker=marked)

    response = Response(start, on_done, prepared.prompt_tokens, on_chunk, prepared=prepared)
    return response


# -- the citation step -----------------------------------------------------------------------
def citation_request(
    model: Model,
    prepared: Prepared,
    text: str,
    token_ids: Sequence[int],
    finish_reason: str | None,
) -> tuple[list[int], GenerationParams] | None:
    """The citation step's request for a finished answer from documents, or None when none is due.

    Due when ``prepared.cite`` (the documents prompt's ``cite``), the answer ended
    by itself (``"stop"``, not the length limit), says something and holds no
    ``[n]`` marker, was not constrained (a grammar, a JSON schema, tools offered)
    and the engine takes token ids and grammars (``capabilities``). The request
    continues the same sequence, the prompt and the answer's tokens (so a prefix
    cache evaluates only what is new), under
    :func:`~llm4all.localdocs.context.citation_grammar`: `` [``, one excerpt's
    number, ``]``, greedy, at most :data:`~llm4all.localdocs.context.CITE_TOKENS`.
    """
    from llm4all.localdocs.context import CITE_TOKENS, citation_grammar, has_citation

    if not (prepared.cite and prepared.references) or finish_reason != "stop":
        return None
    engine, p = model.engine, prepared.params
    caps = engine.capabilities
    if not (caps.tokens and caps.grammar) or isinstance(prepared.prompt, (str, ChatInput)):
        return None
    if p.grammar is not None or p.json_schema is not None or prepared.tools:
        return None
    if not text.strip() or has_citation(text):
        return None
    ids = list(token_ids)
    if engine.detokenize(ids) != text:  # a stop string cut the text: continue the text itself
        ids = engine.tokenize(text, add_special=False, parse_special=False)
    tokens = [*prepared.token_ids, *ids]
    if model.info.n_ctx and len(tokens) + CITE_TOKENS >= model.info.n_ctx:
        return None
    params = GenerationParams(
        max_tokens=CITE_TOKENS,
        temperature=0.0,
        repeat_penalty=1.0,
        seed=p.seed,
        grammar=citation_grammar(len(prepared.references)),
    )
    return tokens, params


#: The citation step's whole output: `` [n]`` (anything else is dropped).
_MARKER = re.compile(r"\s*\[\d+\]")


def with_citation(
    model: Model,
    prepared: Prepared,
    chunks: Iterator[Chunk],
    go_on: Callable[[], bool],
    slot: int = 0,
    *,
    on_marker: Callable[[str], None] | None = None,
) -> Iterator[Chunk]:
    """``chunks`` (an answer's stream), then the citation step's marker when one is due.

    The answer streams as it comes; at its end, when :func:`citation_request`
    says the step is due, the same slot continues with it and the marker
    (`` [2]``) is streamed as part of the answer. The final chunk comes last,
    with the answer's finish reason and the step's tokens and seconds added;
    ``on_marker`` hears the marker the step added, if any. (The server's
    runners: :class:`CitedStream`.)
    """
    ids: list[int] = []
    texts: list[str] = []
    final: Chunk | None = None
    for chunk in chunks:  # to its end: the engine holds its slot until the stream closes
        ids.extend(chunk.token_ids)
        texts.append(chunk.text)
        if chunk.finish_reason is None:
            yield chunk
        else:
            final = chunk
    if final is None:
        return
    request = citation_request(model, prepared, "".join(texts), ids, final.finish_reason)
    if request is None:
        yield final
        return
    step = collect(model.engine.generate(*request, should_continue=go_on, slot=slot))
    yield from _cited_end(final, step, on_marker)


def _cited_end(
    final: Chunk, step: Completion, on_marker: Callable[[str], None] | None
) -> list[Chunk]:
    """The last chunks of an answer the citation step continued: its own last text, the
    marker (when the step wrote one), then the final chunk with the step's cost added."""
    out = [Chunk(final.text, final.token_ids)] if final.text or final.token_ids else []
    marker = step.text if _MARKER.fullmatch(step.text) else ""
    if marker:
        if on_marker is not None:
            on_marker(marker)
        out.append(Chunk(marker, step.token_ids))
    if final.usage is None or final.timings is None:
        return [*out, Chunk("", finish_reason=final.finish_reason)]
    added = len(step.token_ids) if marker else 0
    spent = step.timings.time_to_first_token + step.timings.generation_seconds
    usage = dataclasses.replace(
        final.usage, completion_tokens=final.usage.completion_tokens + added
    )
    timings = dataclasses.replace(
        final.timings,
        generation_seconds=final.timings.generation_seconds + spent,
        completion_tokens=final.timings.completion_tokens + added,
    )
    return [*out, Chunk("", finish_reason=final.finish_reason, usage=usage, timings=timings)]


class CitedStream(AsyncStream):
    """A runner's stream of an answer (``runner.stream(…)``), with the citation step.

    For the server's routes, which stream through a runner: the same as
    :func:`with_citation`, the step submitted to the same runner (its prefix
    cache holds the prompt and the answer). ``async for`` it; ``close()``
    cancels whichever request is running.
    """

    def __init__(
        self, model: Model, prepared: Prepared, stream: AsyncStream, runner: Runner
    ) -> None:
        super().__init__(asyncio.Queue(), stream.close)
        self._model, self._prepared = model, prepared
        self._stream, self._runner = stream, runner
        self._step: AsyncStream | None = None
        self._ids: list[int] = []
        self._texts: list[str] = []
        self._tail: list[Chunk] = []
        self._done = False

    def __aiter__(self) -> CitedStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._tail:
            return self._tail.pop(0)
        if self._done:
            raise StopAsyncIteration
        chunk = await self._stream.__anext__()
        self._ids.extend(chunk.token_ids)
        self._texts.append(chunk.text)
        if chunk.finish_reason is None:
            return chunk
        self._done = True
        text = "".join(self._texts)
        request = citation_request(
            self._model, self._prepared, text, self._ids, chunk.finish_reason
        )
        if request is None:
            return chunk
        self._step = self._runner.stream(*request)
        pieces: list[Chunk] = [c async for c in self._step]
        last = pieces[-1] if pieces else None
        if last is None or last.usage is None or last.timings is None:
            return chunk
        step = collect(pieces)
        self._tail = _cited_end(chunk, step, None)
        return self._tail.pop(0)

    def close(self) -> None:
        self._done = True
        self._stream.close()
        if self._step is not None:
            self._step.close()


class Response:
    """A streamed answer: iterate for text pieces; ``completion`` and ``stats`` once done.

    Also ``references`` (the LocalDocs excerpts behind it, numbered as the
    model was asked to cite them; ``sources`` is the same list; once the answer
    is done each carries ``"citations"``, the sentences it supports),
    ``citations`` (the answer's markers checked, or sentences attributed) and
    ``tool_calls`` (parsed out of the answer when tools were offered).
    """

    def __init__(
        self,
        start: Callable[[Callable[[], bool]], Iterator[Chunk]],
        on_done: Callable[[Completion], None] | None = None,
        prompt_tokens: int = 0,
        on_chunk: Callable[[Chunk], None] | None = None,
        *,
        prepared: Prepared | None = None,
    ) -> None:
        self._start = start
        self._on_done = on_done
        self._on_chunk = on_chunk
        self._prompt_tokens = prompt_tokens
        self._cancelled = False
        self._pieces: list[str] = []
        self._started = False
        self.prepared = prepared
        self.completion: Completion | None = None
        #: LocalDocs references behind the answer, numbered as the model was asked to cite them.
        self.sources: list[dict[str, Any]] = list(prepared.references) if prepared else []
        #: The marker the citation step added at the end of the answer (`` [2]``), or "".
        self.step_marker = ""
        self._citations: list[dict[str, Any]] = []

    @property
    def references(self) -> list[dict[str, Any]]:
        return self.sources

    @property
    def citations(self) -> list[dict[str, Any]]:
        """Which excerpt supports which sentence (runs the stream to the end if needed).

        :func:`llm4all.localdocs.context.attribute` of the answer: its ``[n]``
        markers checked (``"by": "model"``, ``supported`` true or false) and, when
        none is supported, sentences matched to the excerpt that holds them
        (``"by": "attribution"``). Each reference in :attr:`sources` carries its
        own entries as ``"citations"``. Empty without LocalDocs. The text is as
        the model wrote it: an unsupported marker is flagged here, not removed.
        """
        self._done()
        return self._citations

    def cancel(self) -> None:
        """Stop generating before the next token; the text so far is kept."""
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def chunks(self) -> Iterator[Chunk]:
        """The stream as engine chunks (text plus the token ids behind it)."""
        if self._started:
            raise RuntimeError("a Response can be streamed once; use .text() or .completion after")
        self._started = True
        final: Chunk | None = None
        n_tokens = 0
        try:
            for chunk in self._start(lambda: not self._cancelled):
                n_tokens += len(chunk.token_ids)
                if chunk.finish_reason is not None:
                    final = chunk
                if chunk.text:
                    self._pieces.append(chunk.text)
                if self._on_chunk is not None:
                    self._on_chunk(chunk)
                yield chunk
        finally:
            # Also on Ctrl-C or an abandoned loop: keep what was said, marked cancelled.
            self._finish(final, n_tokens)

    def __iter__(self) -> Iterator[str]:
        """Text pieces as they are sampled."""
        if self._started:  # already streamed: replay what was said
            yield from self._pieces
            return
        for chunk in self.chunks():
            if chunk.text:
                yield chunk.text

    def _finish(self, final: Chunk | None, n_tokens: int) -> None:
        if final is not None and final.usage is not None and final.timings is not None:
            reason, usage, timings = final.finish_reason or "stop", final.usage, final.timings
        else:
            reason = "cancelled"
            usage = Usage(self._prompt_tokens, n_tokens)
            timings = Timings(0.0, 0.0, 0.0, n_tokens)
        self.completion = Completion("".join(self._pieces), reason, usage, timings)
        if self.sources:  # before on_done, so the stored answer's sources carry the check
            from llm4all.localdocs.context import annotate

            self._citations = annotate(self.completion.text, self.sources)
        if self._on_done is not None:
            self._on_done(self.completion)

    def text(self) -> str:
        """The whole answer (runs the stream to the end if needed)."""
        for _ in self:
            pass
        return "".join(self._pieces)

    def _done(self) -> Completion:
        self.text()
        assert self.completion is not None
        return self.completion

    @property
    def usage(self) -> Usage:
        return self._done().usage

    @property
    def timings(self) -> Timings:
        return self._done().timings

    @property
    def stats(self) -> AnswerStats:
        """The answer's :class:`AnswerStats` (runs the stream to the end if needed)."""
        return AnswerStats.of_completion(self._done())

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """Tool calls in OpenAI's shape (empty when none were made or offered)."""
        parsed = self.prepared.parse_tools(self.text()) if self.prepared else None
        return parsed.calls if parsed is not None else []

    def __str__(self) -> str:
        return self.text()
