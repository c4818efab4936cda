"""The engine contract: what every backend (llama.cpp, transformers, remote) offers.

An engine owns one loaded model. It turns text into tokens and back, and
streams sampled text for a prompt. Callers above ``engine/`` never import a
backend library; they hold an :class:`Engine` and the plain dataclasses here.

Streaming is the only generation path: :meth:`Engine.generate` yields
:class:`Chunk` objects, the last of which carries ``finish_reason``, ``usage``
and ``timings``; :func:`collect` folds a stream into one :class:`Completion`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from llm4all.errors import ContextOverflow
from llm4all.params import GenerationParams

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class ModelInfo:
    """What a backend knows about its loaded model (from GGUF metadata or a config)."""

    name: str
    architecture: str
    n_ctx_train: int
    n_ctx: int
    n_vocab: int
    n_params: int
    size_bytes: int
    chat_template: str | None
    bos_token: str
    eos_token: str
    add_bos: bool
    n_embd: int
    metadata: dict[str, str] = field(default_factory=dict, repr=False)


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
    """One loaded model. Backends implement the abstract methods."""

    info: ModelInfo

    @abstractmethod
    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Text to token ids; ``add_special`` adds BOS where the model wants it."""

    @abstractmethod
    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids to text (complete, so no UTF-8 hold-back is needed)."""

    @abstractmethod
    def generate(
        self,
        prompt: Sequence[int],
        params: GenerationParams,
        *,
        should_continue: ShouldContinue | None = None,
        slot: int = 0,
    ) -> Iterator[Chunk]:
        """Stream an answer to ``prompt`` (token ids).

        ``slot`` names a KV-cache slot: a later prompt on the same slot that
        starts with the tokens already there evaluates only the rest.
        ``should_continue`` is asked before each token; False cancels.
        Raises :class:`~llm4all.errors.ContextOverflow` before any work when the
        prompt does not fit.
        """

    def check_fits(self, prompt_tokens: int) -> None:
        """Raise :class:`~llm4all.errors.ContextOverflow` if a prompt cannot fit."""
        if prompt_tokens >= self.info.n_ctx:
            raise ContextOverflow(prompt_tokens, self.info.n_ctx)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised embeddings, one per text (embedding models only)."""
        raise NotImplementedError(f"{type(self).__name__} does not embed")

    @abstractmethod
    def close(self) -> None:
        """Free native memory. Idempotent."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
