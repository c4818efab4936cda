"""The engine contract: what every backend (llama.cpp, remote, ...) offers.

An engine owns one loaded model (or one remote endpoint's model). It streams
sampled text for a prompt and says what else it can do in its
:class:`Capabilities`; callers (the answer pipeline, the server, the contract
tests) ask those instead of checking the class. Callers above ``engine/`` never
import a backend library; they hold an :class:`Engine` and the plain
dataclasses here.

A prompt (:data:`PromptInput`) is token ids (engines with ``capabilities.tokens``),
plain text to continue, or a :class:`ChatInput` of messages that the backend
renders itself (engines with ``capabilities.chat``, such as a remote endpoint).

Streaming is the only generation path: :meth:`Engine.generate` yields
:class:`Chunk` objects, the last of which carries ``finish_reason``, ``usage``
and ``timings``; :func:`collect` folds a stream into one :class:`Completion`.
Concurrency is the engine's own business: :meth:`Engine.runner` gives the
object a server queues requests on (``engine/runner.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

from llm4all.errors import ContextOverflow
from llm4all.params import GenerationParams

if TYPE_CHECKING:
    from llm4all.engine.runner import Runner

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; callers and the contract tests respect it.

    Example: a remote endpoint is ``Capabilities(tokens=False, chat=True,
    json_schema=True, tools=True, batching=True)``: the pipeline sends it
    messages (not token ids), no GBNF grammar and no KV slots.
    """

    #: Token ids in and out: ``tokenize``/``detokenize`` are exact, ``generate``
    #: takes token ids, chunks carry ``token_ids``. Without it the prompt is text or chat.
    tokens: bool = False
    #: ``generate`` takes a :class:`ChatInput` and renders it with the model's own template
    #: (on the remote side); without it the caller renders the chat into tokens or text.
    chat: bool = False
    #: ``GenerationParams.grammar`` (GBNF) is honoured.
    grammar: bool = False
    #: ``GenerationParams.json_schema`` is honoured (output follows the schema).
    json_schema: bool = False
    #: Tool definitions in a :class:`ChatInput` are passed to the model natively and
    #: calls come back as text the pipeline parses (``chat/tools.py``).
    tools: bool = False
    #: KV slots keep what they evaluated: a prompt continuing the last one on the same
    #: ``slot`` evaluates only the new tokens (``Usage.cached_tokens``).
    prefix_cache: bool = False
    #: Many requests at once on one model (the runner batches them, or the remote does).
    batching: bool = False
    #: ``embed`` works (for an engine loaded for embeddings).
    embeddings: bool = False
    #: ``generate(..., logprobs=k)`` yields :class:`ScoredChunk` with per-token log-probs.
    logprobs: bool = False
    #: ``token_logprobs(tokens)``: the log-probability of each token given those before it.
    scoring: bool = False
    #: Layers can be offloaded to a GPU (``LoadParams.n_gpu_layers``) in this build.
    gpu_offload: bool = False

    def require(self, name: str, what: str) -> None:
        """Raise :class:`~llm4all.errors.Unsupported` unless capability ``name`` is there."""
        if not getattr(self, name):
            from llm4all.errors import Unsupported

            raise Unsupported(what, name)


@dataclass(frozen=True)
class ModelInfo:
    """What a backend knows about its model (GGUF metadata, a config, or a remote's listing).

    Only ``name``, ``architecture`` and ``n_ctx`` are required: a remote backend
    fills what its endpoint reports and leaves the rest at the defaults (0, "",
    None: unknown).
    """

    name: str
    architecture: str
    n_ctx_train: int = 0
    n_ctx: int = 0
    n_vocab: int = 0
    n_params: int = 0
    size_bytes: int = 0
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    add_bos: bool = False
    n_embd: int = 0
    metadata: dict[str, str] = field(default_factory=dict, repr=False)
    backend: str = "llamacpp"  # the registered backend that loaded it
    device: str = "cpu"  # where it runs: "cpu", "gpu (33/33 layers)", "remote http://…"


@dataclass(frozen=True)
class ChatInput:
    """A conversation for an engine that renders chats itself (``capabilities.chat``).

    ``messages`` are OpenAI-shaped dicts (``{"role": "user", "content": "Hi"}``),
    the system prompt already chosen; ``tools`` OpenAI function definitions.
    """

    messages: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...] = ()


#: What ``Engine.generate`` continues: token ids, text, or a chat (see :class:`Capabilities`).
PromptInput = Union[Sequence[int], str, ChatInput]  # noqa: UP007 - a runtime alias


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV entries were reused, not evaluated

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    prompt_seconds: float  # evaluating the (uncached part of the) prompt
    time_to_first_token: float  # request start to first generated token
    generation_seconds: float  # first token to last token
    completion_tokens: int
    #: Speculative decoding (``engine/speculative.py``): tokens proposed, of those kept,
    #: and passes over the target (the prompt's included). All 0 when not speculated.
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    target_passes: int = 0

    @property
    def tokens_per_second(self) -> float:
        """Decode speed; the first token is excluded (it is paid for by the prompt)."""
        if self.completion_tokens <= 1 or self.generation_seconds <= 0:
            return 0.0
        return (self.completion_tokens - 1) / self.generation_seconds


@dataclass(frozen=True)
class Chunk:
    """One piece of a stream. ``text`` may be empty on the final chunk."""

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one sampled token and of the most likely alternatives.

    ``token`` is the id (-1 where the backend has no token access); ``piece`` its
    bytes; ``top`` pairs of (id, log-prob), ``top_pieces`` their bytes.
    """

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    piece: bytes | None = None
    top_pieces: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class ScoredChunk(Chunk):
    """A chunk with one :class:`TokenLogprob` per token in it."""

    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    token_ids: tuple[int, ...] = ()


def collect(stream: Iterable[Chunk]) -> Completion:
    """Fold a chunk stream into one :class:`Completion`."""
    texts: list[str] = []
    ids: list[int] = []
    last: Chunk | None = None
    for chunk in stream:
        texts.append(chunk.text)
        ids.extend(chunk.token_ids)
        last = chunk
    if last is None or last.finish_reason is None or last.usage is None or last.timings is None:
        raise RuntimeError("stream ended without a final chunk")
    return Completion("".join(texts), last.finish_reason, last.usage, last.timings, tuple(ids))


ShouldContinue = Callable[[], bool]


class Engine(ABC):
    """One loaded model. Backends implement the abstract methods and set ``capabilities``."""

    info: ModelInfo
    capabilities: Capabilities = Capabilities()

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Text to token ids; ``add_special`` adds BOS where the model wants it.

        Exact only with ``capabilities.tokens``; other backends may estimate
        (a remote: about four characters a token) or raise.
        """
        self.capabilities.require("tokens", "token ids")
        raise NotImplementedError  # pragma: no cover - a backend claiming tokens overrides it

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids to text (complete, so no UTF-8 hold-back is needed)."""
        self.capabilities.require("tokens", "token ids")
        raise NotImplementedError  # pragma: no cover

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is (an estimate where the backend has no token access)."""
        if self.capabilities.tokens:
            return len(self.tokenize(text))
        return max(1, len(text) // 4)

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token stands for (for log-prob reports)."""
        return self.detokenize([token]).encode("utf-8")

    @abstractmethod
    def generate(
        self,
        prompt: PromptInput,
        params: GenerationParams,
        *,
        should_continue: ShouldContinue | None = None,
        slot: int = 0,
        logprobs: int | None = None,
    ) -> Iterator[Chunk]:
        """Stream an answer to ``prompt`` (see :data:`PromptInput`).

        ``slot`` names a KV-cache slot (``capabilities.prefix_cache``): a later
        prompt on the same slot that starts with the tokens already there
        evaluates only the rest; other backends ignore it. ``should_continue``
        is asked before each token; False cancels. ``logprobs=k``
        (``capabilities.logprobs``) makes every chunk a :class:`ScoredChunk`
        with the k most likely alternatives. Raises
        :class:`~llm4all.errors.ContextOverflow` before any work when the prompt
        does not fit, and :class:`~llm4all.errors.Unsupported` for a kind of
        prompt or a parameter the capabilities do not cover.
        """

    def prompt_tokens(self, prompt: PromptInput) -> list[int]:
        """Token ids of a prompt: ids as given, text tokenized (BOS added where wanted).

        A :class:`ChatInput` needs an engine that renders chats itself; it overrides this.
        """
        if isinstance(prompt, ChatInput):
            self.capabilities.require("chat", "a chat prompt (render it first)")
            raise AssertionError  # pragma: no cover - require raised
        if isinstance(prompt, str):
            return list(self.tokenize(prompt))
        return list(prompt)

    def check_fits(self, prompt_tokens: int) -> None:
        """Raise :class:`~llm4all.errors.ContextOverflow` if a prompt cannot fit."""
        if self.info.n_ctx and prompt_tokens >= self.info.n_ctx:
            raise ContextOverflow(prompt_tokens, self.info.n_ctx)

    def check_params(self, params: GenerationParams) -> None:
        """Raise :class:`~llm4all.errors.Unsupported` for a knob this engine cannot honour."""
        if params.grammar is not None:
            self.capabilities.require("grammar", "a GBNF grammar")
        if params.json_schema is not None:
            self.capabilities.require("json_schema", "JSON-schema output")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised embeddings, one per text (``capabilities.embeddings``)."""
        self.capabilities.require("embeddings", "embeddings")
        raise NotImplementedError  # pragma: no cover

    def token_logprobs(self, tokens: Sequence[int], first: int = 1) -> list[float]:
        """Teacher-forced log-probabilities (nats) of ``tokens[first:]``, for perplexity.

        ``capabilities.scoring``; ``len(result) == len(tokens) - first``.
        """
        self.capabilities.require("scoring", "token scoring")
        raise NotImplementedError  # pragma: no cover

    def runner(self, max_queue: int = 64) -> Runner:
        """The object a server queues concurrent requests on.

        The default runs one request at a time on a worker thread; a backend
        that batches (llama.cpp's continuous-batching scheduler) or whose
        remote does (a pass-through runner) returns its own.
        """
        from llm4all.engine.runner import ThreadRunner

        return ThreadRunner(self, concurrency=1, max_queue=max_queue)

    def reset(self, slot: int | None = None) -> None:
        """Forget what KV slot ``slot`` (or every slot) holds; a no-op without a prefix cache."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Free native memory. Idempotent."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
