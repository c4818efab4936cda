"""The Python API: ``Model``, ``Response`` and ``ChatSession``.

Example::

    import llm4all
    model = llm4all.Model()                      # the default model, pulled on first use
    print(model.generate("Name three colours.", temperature=0))
    chat = model.chat(system_prompt="Answer briefly.")
    for piece in chat.send("What is the capital of France?"):
        print(piece, end="", flush=True)
    print(chat.send("And of Italy?").text())

Every answer goes through :mod:`llm4all.answer` (the one pipeline).
Everything streams: a :class:`Response` yields text pieces as they are
sampled; its ``completion`` (usage, timings, finish reason) is there once the
stream ends. Sampling knobs are the fields of :class:`GenerationParams`, given
as keyword arguments wherever a prompt is.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4all import answer
from llm4all.answer import AnswerStats, Prepared, Response
from llm4all.chat.template import PLAIN_STOPS, PLAIN_TEMPLATE, Message, render
from llm4all.chat.tools import describe_in_system, template_takes_tools
from llm4all.engine import Chunk, Completion, Engine, ModelInfo, ModelRef, load_engine
from llm4all.errors import InvalidParameter
from llm4all.models.catalog import Kind
from llm4all.models.kinds import kind_from_metadata
from llm4all.params import GenerationParams, LoadParams

if TYPE_CHECKING:
    from llm4all.localdocs import LocalDocs
    from llm4all.models.catalog import CatalogEntry
    from llm4all.store import ChatStore
    from llm4all.store.answers import AnswerRecorder

__all__ = [
    "AnswerStats",
    "ChatSession",
    "Model",
    "Response",
    "catalog_sampling",
    "merge_params",
    "with_catalog_sampling",
]

log = logging.getLogger(__name__)

_GEN_FIELDS = frozenset(f.name for f in dataclasses.fields(GenerationParams))
_LOAD_FIELDS = frozenset(f.name for f in dataclasses.fields(LoadParams))
_INT_KNOBS = frozenset(
    f.name for f in dataclasses.fields(GenerationParams) if f.type in (int, "int")
)


def merge_params(base: GenerationParams, overrides: dict[str, Any]) -> GenerationParams:
    """``base`` with keyword overrides; an unknown name is an error that names it."""
    unknown = sorted(set(overrides) - _GEN_FIELDS)
    if unknown:
        raise InvalidParameter(
            unknown[0], overrides[unknown[0]], f"one of {', '.join(sorted(_GEN_FIELDS))}"
        )
    return base.replace(**overrides) if overrides else base


def catalog_sampling(sampling: Mapping[str, Any]) -> dict[str, Any]:
    """A catalog entry's ``sampling`` as knob values (whole numbers for the int knobs)."""
    return {k: int(v) if k in _INT_KNOBS else v for k, v in sampling.items()}


def with_catalog_sampling(
    sampling: Mapping[str, Any],
    base: GenerationParams | None = None,
    *,
    library: GenerationParams | None = None,
) -> GenerationParams:
    """``base`` (the library's defaults) with a model's catalog ``sampling`` applied.

    The one place where a model's measured sampling defaults meet the others. A
    knob of ``base`` that differs from ``library`` (the defaults of the API that
    built it; :class:`GenerationParams`'s own if None) was chosen by someone (a
    server's ``--min-p``, a caller's keyword) and is kept; the others take the
    catalog's value.
    Example: ``with_catalog_sampling({"min_p": 0.4}).min_p == 0.4``.
    """
    sampling = catalog_sampling(sampling)
    if base is None:
        return GenerationParams(**sampling)
    library = library or GenerationParams()
    kept = {k: v for k, v in sampling.items() if getattr(base, k) == getattr(library, k)}
    return base.replace(**kept) if kept else base


class Model:
    """A loaded local model.

    ``name`` is a catalog name (``"qwen2.5-coder-0.5b-instruct"``), a file name
    in the model store, or a path to any GGUF file; ``None`` means the default
    model. A catalog model that is not installed yet is downloaded first when
    ``allow_download`` is true. A name registered by a backend (a remote
    endpoint added with ``llm4all models add-remote``) is that backend's model.
    Load options are the fields of :class:`LoadParams`; ``backend`` names a
    registered backend (None: the one that claims the model); ``options`` is a
    backend's own load options instead (``TransformersOptions(device="cuda",
    generation={"num_beams": 2})`` for ``backend="transformers"``).
    """

    def __init__(
        self,
        name: str | Path | ModelRef | None = None,
        *,
        allow_download: bool = True,
        backend: str | None = None,
        params: GenerationParams | None = None,
        progress: Any = None,
        options: Any = None,
        **load_options: Any,
    ) -> None:
        from llm4all.engine import resolve
        from llm4all.models import ensure_fits_in_ram

        unknown = sorted(set(load_options) - _LOAD_FIELDS)
        if unknown:
            raise InvalidParameter(
                unknown[0], load_options[unknown[0]], f"one of {', '.join(sorted(_LOAD_FIELDS))}"
            )
        load = LoadParams(**load_options)
        if isinstance(name, ModelRef):
            ref = name
        else:
            ref = resolve(name, allow_download=allow_download, progress=progress)
        self.ref: ModelRef = ref
        self.path: Path = ref.path if ref.path is not None else Path(ref.name)
        self.entry: CatalogEntry | None = ref.entry
        # A catalog model by its catalog name, another file by its file name, a remote by its own.
        self.name: str = ref.entry.name if ref.entry else (ref.path.name if ref.path else ref.name)
        if load.check_memory and ref.path is not None and ref.path.is_file():
            ensure_fits_in_ram(ref.path.stat().st_size)
        self.engine: Engine = load_engine(ref, load if options is None else options, backend)
        self.params = params or self.default_params()
        self.kind: Kind = self._kind()
        self._template, self._chat_stops = self._choose_template()

    @classmethod
    def from_engine(
        cls, engine: Engine, name: str, params: GenerationParams | None = None
    ) -> Model:
        """Wrap an already loaded engine (tests, other backends)."""
        self = cls.__new__(cls)
        self.path, self.entry, self.name, self.engine = Path(name), None, name, engine
        self.ref = ModelRef("file", name, Path(name))
        self.params = params or GenerationParams()
        self.kind = self._kind()
        self._template, self._chat_stops = self._choose_template()
        return self

    def _kind(self) -> Kind:
        if self.entry is not None:
            return self.entry.kind
        caps = self.engine.capabilities
        if caps.chat and not caps.tokens:  # a remote chat endpoint: it renders its own template
            return "embedding" if caps.embeddings else "chat"
        info = self.engine.info
        return kind_from_metadata(
            info.architecture, info.chat_template, info.metadata, self.path.name
        )

    def _choose_template(self) -> tuple[str, tuple[str, ...]]:
        override = getattr(self.entry, "chat_template", None)
        if override:
            return override, ()
        caps = self.engine.capabilities
        if caps.chat and not caps.tokens:  # a remote renders chats with its own template
            return "", ()
        if self.kind != "base" and self.engine.info.chat_template:
            return self.engine.info.chat_template, ()
        # A base model was not tuned on any chat format, not even one its file may carry.
        log.info("%s is a base model; chats use a plain transcript", self.name)
        return PLAIN_TEMPLATE, PLAIN_STOPS

    @property
    def info(self) -> ModelInfo:
        return self.engine.info

    @property
    def has_chat_template(self) -> bool:
        """False for a base model: its chats are a plain transcript (:data:`PLAIN_TEMPLATE`)."""
        return self._template is not PLAIN_TEMPLATE

    @property
    def chat_stops(self) -> tuple[str, ...]:
        """Stop strings every chat answer gets: the plain transcript's next turn, if any."""
        return self._chat_stops

    @property
    def default_system_prompt(self) -> str | None:
        """The catalog's system prompt for this model (None: the chat template's own default)."""
        return getattr(self.entry, "system_prompt", None) or None

    @property
    def default_sampling(self) -> dict[str, Any]:
        """The catalog's sampling defaults for this model (``{}``: the library's own)."""
        return catalog_sampling(getattr(self.entry, "sampling", None) or {})

    def default_params(
        self, base: GenerationParams | None = None, *, library: GenerationParams | None = None
    ) -> GenerationParams:
        """``base`` (the library's defaults) with this model's catalog sampling applied.

        See :func:`with_catalog_sampling`, which a front end that has not loaded
        the model (the web UI's settings form) calls with the catalog entry's.
        Example: ``min_p=0.3`` in the catalog → ``model.default_params().min_p == 0.3``.
        """
        return with_catalog_sampling(self.default_sampling, base, library=library)

    def system_prompt_for(self, given: str | None) -> str | None:
        """The system prompt of an answer: the one place that decides it, for every path.

        The user's own (``given``) always wins, and ``""`` means none; otherwise
        the catalog's default for this model; otherwise None, and the chat
        template adds its own default if it has one.
        Example: ``model.system_prompt_for("Be brief.")`` → ``"Be brief."``.
        """
        if given is not None:
            return given or None
        return self.default_system_prompt

    def system_prompt_with_tools(self, system: str) -> str:
        """The system prompt to send when tools are offered, for a chat whose prompt is ``system``.

        The catalog's default with worked examples (which show answering directly,
        and cost the default model 2 of 12 tool calls) gives way to its text alone;
        any other prompt is kept as it is. Example: for the default model,
        ``model.system_prompt_with_tools(model.default_system_prompt)`` is the
        prompt without its ``Examples:``.
        """
        plain = getattr(self.entry, "tools_system_prompt", None)
        return plain if plain and system == self.default_system_prompt else system

    def with_system_prompt(self, messages: Sequence[Message]) -> list[Message]:
        """``messages`` with the default system prompt first when they bring none."""
        if any(m.role == "system" for m in messages):
            return list(messages)
        system = self.system_prompt_for(None)
        return [Message("system", system), *messages] if system else list(messages)

    # -- tokens and templates ------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        return self.engine.tokenize(text, add_special=special, parse_special=special)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = True,
        template: str | None = None,
        *,
        tools: Sequence[dict[str, Any]] = (),
    ) -> str:
        """The prompt text for ``messages`` in this model's chat format (or ``template``).

        ``tools`` are function definitions in OpenAI's shape (``{"type": "function",
        "function": {"name": …, "parameters": …}}``), rendered by the template as
        Jinja chat templates expect; a template without tool support gets them
        described in the system message (see :mod:`llm4all.chat.tools`).
        """
        source = template or self._template
        if tools and not template_takes_tools(source):
            messages = describe_in_system(messages, tools)
            tools = ()
        info = self.engine.info
        return render(
            source,
            messages,
            bos_token=info.bos_token,
            eos_token=info.eos_token,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
        )

    def chat_tokens(
        self,
        messages: Sequence[Message],
        template: str | None = None,
        *,
        tools: Sequence[dict[str, Any]] = (),
    ) -> list[int]:
        """Prompt tokens for ``messages`` (and ``tools``), rendered as :meth:`render` does."""
        text = self.render(messages, template=template, tools=tools)
        info = self.engine.info
        # Templates that write the BOS token themselves must not get a second one.
        add_bos = info.add_bos and not (info.bos_token and text.startswith(info.bos_token))
        return self.engine.tokenize(text, add_special=add_bos, parse_special=True)

    # -- generation --------------------------------------------------------------------
    def chat_params(self, params: GenerationParams) -> GenerationParams:
        """``params`` with :attr:`chat_stops` added (for an answer in the chat format)."""
        if not self._chat_stops:
            return params
        return params.replace(stop=tuple(dict.fromkeys(params.stop + self._chat_stops)))

    def stream_tokens(
        self,
        tokens: Sequence[int],
        params: GenerationParams,
        *,
        slot: int = 0,
        on_done: Callable[[Completion], None] | None = None,
        chat: bool = True,
        on_chunk: Callable[[Chunk], None] | None = None,
    ) -> Response:
        """Stream an answer to already built prompt tokens (``on_chunk`` sees each chunk)."""
        if chat:  # an answer in the chat format ends where the transcript's next turn begins
            params = self.chat_params(params)
        prepared = Prepared(list(tokens), params)
        return answer.stream(self, prepared, slot=slot, on_chunk=on_chunk, on_done=on_done)

    def stream(
        self,
        prompt: str,
        *,
        raw: bool = False,
        system_prompt: str | None = None,
        collections: Sequence[str] = (),
        **params: Any,
    ) -> Response:
        """Stream an answer to one prompt.

        By default ``prompt`` is a user message in the model's chat format,
        after the system prompt :meth:`system_prompt_for` chooses. With
        ``raw=True``, and always for a base model, the text is continued as is
        (plain completion; a ``system_prompt`` given goes before it, as in the
        plain transcript). With ``collections`` (LocalDocs names) numbered
        excerpts go before the prompt and ``response.sources`` lists them.
        """
        prepared = answer.prepare(
            self,
            [Message("user", prompt)],
            params=merge_params(self.params, params),
            system_prompt=system_prompt,
            collections=collections,
            raw=raw or self.kind == "base",
            fit=False,
        )
        return answer.stream(self, prepared)

    def generate(
        self, prompt: str, *, raw: bool = False, system_prompt: str | None = None, **params: Any
    ) -> str:
        """The whole answer to one prompt. See :meth:`stream`."""
        return self.stream(prompt, raw=raw, system_prompt=system_prompt, **params).text()

    def chat(
        self, system_prompt: str | None = None, *, collections: Sequence[str] = (), **params: Any
    ) -> ChatSession:
        """Start a multi-turn conversation (kept in memory; see :class:`ChatSession`)."""
        return ChatSession(
            self,
            system_prompt=system_prompt,
            params=merge_params(self.params, params),
            collections=collections,
        )

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({self.name!r})"


class ChatSession:
    """A conversation with a model: history, system prompt, context policy.

    Each :meth:`send` renders the whole conversation with the model's chat
    template; the engine reuses the KV cache for the part it has already seen,
    so a long chat costs only its new tokens. When the conversation outgrows
    the context window, the oldest turns are dropped (the system prompt stays).
    With a ``store`` every message is saved the moment it exists. With
    ``collections`` (LocalDocs names) each question is searched in them and the
    numbered excerpts go into that turn only (the history keeps the plain
    question); ``response.sources`` and the stored answer carry the references.
    """

    def __init__(
        self,
        model: Model,
        *,
        system_prompt: str | None = None,
        params: GenerationParams | None = None,
        messages: Sequence[Message] = (),
        store: ChatStore | None = None,
        chat_id: str | None = None,
        slot: int = 0,
        collections: Sequence[str] = (),
        localdocs: LocalDocs | None = None,
    ) -> None:
        self.model = model
        self.system_prompt = model.system_prompt_for(system_prompt)
        self.params = params or model.params
        self.messages: list[Message] = [m for m in messages if m.role != "system"]
        self.store = store
        self.chat_id = chat_id
        self.slot = slot
        self.dropped = 0  # messages trimmed from the last prompt to fit the context
        self.collections: list[str] = list(collections)
        self.localdocs = localdocs
        self._sources: list[dict[str, Any]] = []

    @property
    def history(self) -> list[Message]:
        """The conversation as the model sees it: system prompt first."""
        head = [Message("system", self.system_prompt)] if self.system_prompt else []
        return head + self.messages

    def send(self, text: str, **params: Any) -> Response:
        """Add a user message and stream the answer (added to the history when done)."""
        user = Message("user", text)
        prepared = answer.prepare(
            self.model,
            [*self.history, user],
            params=merge_params(self.params, params),
            system_prompt=self.system_prompt or "",  # already chosen at the start
            collections=self.collections,
            localdocs=self.localdocs,
        )
        self._sources = prepared.references
        recorder: AnswerRecorder | None = None  # set below, once the question is saved

        def streamed(chunk: Chunk) -> None:  # the answer is saved as it grows
            if recorder is not None:
                recorder.add(chunk.text, len(chunk.token_ids))

        response = answer.stream(
            self.model,
            prepared,
            slot=self.slot,
            on_chunk=streamed,
            on_done=lambda completion: self._answered(completion, recorder),
        )
        self.dropped = prepared.dropped
        self.messages.append(user)
        recorder = self._save_question(user, prepared.prompt_tokens)
        return response

    def _answered(self, completion: Completion, recorder: AnswerRecorder | None) -> None:
        if completion.text or completion.finish_reason != "cancelled":
            self.messages.append(Message("assistant", completion.text))
        if recorder is not None:
            stats = AnswerStats.of_completion(completion)
            recorder.finish(completion.finish_reason, **stats.store_fields())

    def save(self, role: str, content: str, **fields: Any) -> None:
        """Add one message to the stored chat (created on first use); nothing without a store.

        ``fields`` are :meth:`ChatStore.add_message`'s keywords (``finish_reason``, …).
        """
        if self.store is None:
            return
        if self.chat_id is None:
            chat = self.store.create_chat(
                model=self.model.name,
                system_prompt=self.system_prompt,
                params=dataclasses.asdict(self.params),
            )
            self.chat_id = chat.id
        self.store.add_message(self.chat_id, role, content, model=self.model.name, **fields)

    def _save_question(self, question: Message, prompt_tokens: int) -> AnswerRecorder | None:
        """Save the question (creating the stored chat); the recorder of its answer."""
        if self.store is None:
            return None
        from llm4all.store.answers import AnswerRecorder

        self.save("user", question.content)
        assert self.chat_id is not None
        return AnswerRecorder(
            self.store,
            self.chat_id,
            model=self.model.name,
            prompt_tokens=prompt_tokens,
            sources=self._sources,
        )

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays); a stored chat starts anew."""
        self.messages.clear()
        self.chat_id = None
