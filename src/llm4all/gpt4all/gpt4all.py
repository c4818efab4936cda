"""The ``GPT4All`` class: the original API's generation and chat on an llm4all :class:`Model`.

Outside a chat session a prompt is completed as raw text; inside one it is the
user's next turn, rendered with the model's own chat template (or a template
given to :meth:`GPT4All.chat_session`) together with the history, so the
engine's KV-cache prefix reuse makes each turn cost only its new tokens.
Generation streams engine chunks; ``streaming=False`` collects the same stream.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast, overload

from llm4all import answer
from llm4all.api import ChatSession, Model
from llm4all.chat.template import Message, Role
from llm4all.engine import Chunk, Usage
from llm4all.gpt4all import loading
from llm4all.gpt4all.formats import (
    LEGACY_KWARGS,
    V1_SAMPLING,
    V1_STOPS,
    ConfigType,
    MessageType,
    ResponseCallbackType,
    decoder_params,
    empty_response_callback,
    sampling_params,
    split_prompt_template,
    template_segments,
    v1_prompt,
)
from llm4all.params import GenerationParams

TokensOf = Callable[[Sequence[Message]], list[int]]


@dataclass
class _Session:
    history: list[MessageType]
    tokens_of: TokensOf  # messages → prompt tokens, in the session's chat format
    stops: tuple[str, ...] = ()  # the plain transcript's, for a model without a chat template


class GPT4All:
    """Load, download, generate and chat, the way the ``gpt4all`` package did.

    ``model_name`` is a catalog name (``"qwen2.5-coder-0.5b-instruct"``), a file
    name (``".gguf"`` may be left off) or None for llm4all's default model.
    ``model_path`` is the folder to look in and download into (default: the
    llm4all model store). ``device`` None/"cpu" runs on the CPU; any other value
    ("gpu", "cuda", "kompute", "amd", "nvidia", a device name) offloads ``ngl``
    layers, and fails with :class:`GPUUnavailable` on a CPU-only build.
    """

    def __init__(
        self,
        model_name: str | None = None,
        model_path: str | os.PathLike[str] | None = None,
        model_type: str | None = None,
        allow_download: bool = True,
        n_threads: int | None = None,
        device: str | None = None,
        n_ctx: int = 2048,
        ngl: int = 100,
        verbose: bool = False,
        *,
        decoder_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.model_type = model_type
        self._session: _Session | None = None
        self._conversation: ChatSession | None = None  # the nomic-era open()/prompt() chat
        self._stream: Generator[str, None, None] | None = None
        self._decoder_config = dict(decoder_config or {})
        #: Token counts of the last answer (``cached_tokens``: prompt tokens reused from the KV cache).
        self.last_usage: Usage | None = None
        gpu_layers = loading.gpu_layers(device, ngl)
        self._device = device if gpu_layers else None
        self.config: ConfigType = self.retrieve_model(
            model_name, model_path, allow_download, verbose
        )
        self._load_options: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "n_gpu_layers": gpu_layers,
        }
        self.model: Model = self._load()
        self._closed = False

    def _load(self) -> Model:
        return Model(Path(self.config["path"]), allow_download=False, **self._load_options)

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> GPT4All:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Free the model (``open()`` loads it again)."""
        self._end_stream()
        self._conversation = None
        if not self._closed:
            self.model.close()
            self._closed = True

    def open(self) -> None:
        """Nomic-era API: (re)load the model and start a fresh conversation for :meth:`prompt`."""
        if self._closed:
            self.model = self._load()
            self._closed = False
        self._conversation = self.model.chat(**decoder_params(self._decoder_config))

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("Attempted operation on a closed model; call open() to load it again")

    # -- properties ----------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """Where the model runs: "cpu", or the GPU offload backend ("cuda", "metal")."""
        return (self._load_options["n_gpu_layers"] and loading.gpu_backend()) or "cpu"

    @property
    def device(self) -> str | None:
        """The GPU device asked for, or None on the CPU."""
        return self._device

    @property
    def current_chat_session(self) -> list[MessageType] | None:
        """The chat so far as ``{"role", "content"}`` dicts (None outside a chat session)."""
        return None if self._session is None else list(self._session.history)

    @current_chat_session.setter
    def current_chat_session(self, history: list[MessageType]) -> None:
        if self._session is None:
            raise ValueError("current_chat_session may only be set inside a chat session")
        self._session.history[:] = history

    # -- models (the original's static methods) --------------------------------------------
    list_models = staticmethod(loading.list_models)
    list_gpus = staticmethod(loading.list_gpus)
    retrieve_model = staticmethod(loading.retrieve_model)
    download_model = staticmethod(loading.download_model)

    # -- generation --------------------------------------------------------------------------
    @overload
    def generate(
        self, prompt: str, *, max_tokens: int = ..., temp: float = ..., top_k: int = ...,
        top_p: float = ..., min_p: float = ..., repeat_penalty: float = ..., repeat_last_n: int = ...,
        n_batch: int = ..., n_predict: int | None = ..., streaming: Literal[False] = ...,
        callback: ResponseCallbackType = ...,
    ) -> str: ...  # fmt: skip
    @overload
    def generate(
        self, prompt: str, *, max_tokens: int = ..., temp: float = ..., top_k: int = ...,
        top_p: float = ..., min_p: float = ..., repeat_penalty: float = ..., repeat_last_n: int = ...,
        n_batch: int = ..., n_predict: int | None = ..., streaming: Literal[True],
        callback: ResponseCallbackType = ...,
    ) -> Iterator[str]: ...  # fmt: skip
    @overload
    def generate(
        self, prompt: str, *, max_tokens: int = ..., temp: float = ..., top_k: int = ...,
        top_p: float = ..., min_p: float = ..., repeat_penalty: float = ..., repeat_last_n: int = ...,
        n_batch: int = ..., n_predict: int | None = ..., streaming: bool,
        callback: ResponseCallbackType = ...,
    ) -> str | Iterator[str]: ...  # fmt: skip

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 200,
        temp: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.4,
        min_p: float = 0.0,
        repeat_penalty: float = 1.18,
        repeat_last_n: int = 64,
        n_batch: int = 8,
        n_predict: int | None = None,
        streaming: bool = False,
        callback: ResponseCallbackType = empty_response_callback,
    ) -> str | Iterator[str]:
        """Complete ``prompt``; inside :meth:`chat_session`, answer it as the user's next turn.

        Returns the answer, or with ``streaming=True`` a generator of its pieces.
        ``callback(token_id, piece)`` sees each piece first; returning False stops
        (that piece still ends the answer and the history, but is not yielded).
        ``n_predict`` overrides ``max_tokens``; ``n_batch`` is accepted and unused
        (llama.cpp's batch is set when the model loads).
        """
        self._check_open()
        params = sampling_params(
            max_tokens=max_tokens, temp=temp, top_k=top_k, top_p=top_p, min_p=min_p,
            repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, n_predict=n_predict,
        )  # fmt: skip
        if params is not None:  # knobs left at the original's defaults take the model's own
            params = self.model.default_params(params, library=_GENERATE_DEFAULTS)
        pieces, answer = self._begin(prompt, params, callback)
        if streaming:
            return pieces
        for _ in pieces:
            pass
        return answer["content"]

    def _begin(
        self, prompt: str, params: GenerationParams | None, callback: ResponseCallbackType
    ) -> tuple[Iterator[str], MessageType]:
        """Start one answer: build the prompt, check it fits, record the turn."""
        self._end_stream()
        prepared = self._prepare(prompt, params)
        tokens = prepared.token_ids
        chunks = (  # raises before any work
            self.model.engine.generate(tokens, prepared.params) if params else None
        )
        answer: MessageType = {"role": "assistant", "content": ""}
        if self._session is not None:
            self._session.history += [{"role": "user", "content": prompt}, answer]
        if chunks is None:
            self.last_usage = Usage(len(tokens), 0)
            return iter(()), answer
        self._stream = self._pieces(chunks, len(tokens), callback, answer)
        return self._stream, answer

    def _prepare(self, prompt: str, params: GenerationParams | None) -> answer.Prepared:
        """The prompt, through the answer pipeline: outside a session the text as given
        (``<|...|>`` read as text), inside one the history in the session's chat format."""
        p = params or self.model.params
        if self._session is None:
            user = [Message("user", prompt)]
            return answer.prepare(self.model, user, params=p, raw=True, parse_special=False)
        messages = [
            Message(cast(Role, m["role"]), m["content"])
            for m in self._session.history
            if m["content"] or m["role"] != "system"
        ]
        messages.append(Message("user", prompt))
        if self._session.stops:
            p = p.replace(stop=p.stop + self._session.stops)
        return answer.prepare(
            self.model,
            messages,
            params=p,
            system_prompt="",  # the session's history carries its own
            template=self._session.tokens_of,
        )

    def _pieces(
        self,
        chunks: Iterator[Chunk],
        n_prompt: int,
        callback: ResponseCallbackType,
        answer: MessageType,
    ) -> Generator[str, None, None]:
        produced = 0
        usage: Usage | None = None
        try:
            for chunk in chunks:
                produced += len(chunk.token_ids)
                usage = chunk.usage or usage
                if not chunk.text:
                    continue
                answer["content"] += chunk.text
                if not callback(chunk.token_ids[-1] if chunk.token_ids else -1, chunk.text):
                    break
                yield chunk.text
        finally:
            if isinstance(chunks, Generator):
                chunks.close()  # frees the sampler and the engine's lock now, not at GC
            self.last_usage = usage or Usage(n_prompt, produced)

    def _end_stream(self) -> None:
        """Stop an unfinished streamed answer, so the engine is free for the next one."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    # -- chat sessions ----------------------------------------------------------------------
    @contextmanager
    def chat_session(
        self,
        system_prompt: str | Literal[False] | None = None,
        prompt_template: str | None = None,
        *,
        system_message: str | Literal[False] | None = None,
        chat_template: str | None = None,
    ) -> Iterator[GPT4All]:
        """A multi-turn chat: inside it, :meth:`generate` answers with the history in context.

        ``system_prompt`` (alias ``system_message``) defaults to the model's
        (``Model.system_prompt_for``); False means none. Without a template the
        model's own chat template is used; a base model gets the plain
        ``### Human:``/``### Assistant:`` transcript (2.8.2's "Alpaca" default, with
        its DeprecationWarning). A 2.8-style template (``{0}`` the user's message,
        ``{1}`` the answer) or a Jinja chat template (alias ``chat_template``)
        replaces it. Leaving the block forgets the chat.
        """
        system = system_message if system_message is not None else system_prompt
        if system is None:
            system = self.model.system_prompt_for(None) or ""
        template = chat_template if chat_template is not None else prompt_template
        history = [] if system is False else [{"role": "system", "content": system}]
        stops: tuple[str, ...] = ()
        if template is None and self.model.chat_stops:
            warnings.warn(
                f"{self.model.name} is a base model without a chat template; "
                "the chat session defaults to Alpaca (### Human: / ### Assistant:)",
                DeprecationWarning,
                stacklevel=3,
            )
            stops = self.model.chat_stops
        self._session = _Session(history, self._tokens_of(template), stops)
        try:
            yield self
        finally:
            self._session = None

    def _tokens_of(self, template: str | None) -> TokensOf:
        if template is None:
            return self.model.chat_tokens
        if "{0}" in template or "%1" in template:
            split_prompt_template(template)  # a broken template fails here, not on the first turn
            return lambda messages: self._segment_tokens(template_segments(template, messages))
        if "{%" in template or "{{" in template:
            return lambda messages: self.model.chat_tokens(messages, template=template)
        raise ValueError(
            f"the chat template {template!r} has no {{0}} for the user's message and is not a Jinja template"
        )

    def _segment_tokens(self, segments: Sequence[tuple[str, bool]]) -> list[int]:
        engine = self.model.engine
        tokens: list[int] = []
        for i, (text, special) in enumerate(segments):
            tokens += engine.tokenize(text, add_special=i == 0, parse_special=special)
        return tokens

    # -- the older forms ----------------------------------------------------------------------
    def chat_completion(
        self,
        messages: Sequence[Mapping[str, str]],
        default_prompt_header: bool = True,
        default_prompt_footer: bool = True,
        verbose: bool = True,
        streaming: bool = True,
        **generate_kwargs: Any,
    ) -> dict[str, Any]:
        """The 1.x API: answer ``messages`` in an instruction format; an OpenAI-like dict.

        Without a system message, the model's default system prompt comes first.
        The answer ends at the format's next ``### `` header. As in 1.x,
        ``verbose`` prints the prompt, ``streaming`` prints the answer as it is
        written, a new line follows the answer, and then ``verbose`` without
        ``streaming`` prints the answer. Sampling defaults are 1.x's.
        """
        if not any(m["role"] == "system" for m in messages):
            system = self.model.system_prompt_for(None)
            messages = [{"role": "system", "content": system}, *messages] if system else messages
        prompt = v1_prompt(messages, default_prompt_header, default_prompt_footer)
        if verbose:
            print(prompt)
        kwargs = {k: v for k, v in generate_kwargs.items() if k not in LEGACY_KWARGS}
        params = sampling_params(**{**V1_SAMPLING, **kwargs})
        if params is not None:
            params = self.model.default_params(params, library=_V1_DEFAULTS)
            params = params.replace(stop=params.stop + V1_STOPS)
        session, self._session = self._session, None  # 1.x had no sessions: a plain completion
        try:
            pieces, answer = self._begin(
                prompt, params, _echo if streaming else empty_response_callback
            )
            for _ in pieces:
                pass
        finally:
            self._session = session
        text = answer["content"]
        print()  # 1.x's prompt_model always ended the answer with a new line
        if verbose and not streaming:
            print(text)
        usage = self.last_usage or Usage(0, 0)
        return {
            "model": self.model.name,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
            "choices": [{"message": {"role": "assistant", "content": text}}],
        }

    def prompt(self, prompt: str, write_to_stdout: bool = False) -> str:
        """Nomic-era API: the answer to ``prompt`` in the conversation :meth:`open` started."""
        self._check_open()
        self._end_stream()
        if self._conversation is None:
            self.open()
        assert self._conversation is not None
        response = self._conversation.send(prompt)
        for piece in response:
            if write_to_stdout:
                print(piece, end="", flush=True)
        if response.completion is not None:
            self.last_usage = response.completion.usage
        return response.text()


def _sampling_defaults(keywords: Mapping[str, Any]) -> GenerationParams:
    """The sampling that ``keywords`` (an API's default keyword values) stand for."""
    names = ("max_tokens", "temp", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n")
    params = sampling_params(**{k: keywords[k] for k in names}, n_predict=None)
    assert params is not None
    return params


#: The sampling of ``generate``'s and 1.x ``chat_completion``'s defaults: a knob left at
#: these takes the model's catalog default (:meth:`Model.default_params`).
_GENERATE_DEFAULTS = _sampling_defaults(
    {k: p.default for k, p in inspect.signature(GPT4All.generate).parameters.items()}
)
_V1_DEFAULTS = _sampling_defaults(V1_SAMPLING)


def _echo(token_id: int, response: str) -> bool:
    print(response, end="", flush=True)
    return True
