"""What the chat model and the completion model share: their fields and the local model.

Every llm4all generation knob is a field (None: the model's own default, see
:class:`~llm4all.params.GenerationParams` for meanings and ranges, which are
checked there and nowhere else); LangChain's standard ``model``,
``temperature``, ``max_tokens``, ``stop``, ``timeout``, ``max_retries`` and
``streaming`` are among them. With ``base_url`` the answers come from an
llm4all server (or any OpenAI-compatible one) instead of a model in this
process.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

from langchain_core.utils import from_env, secret_from_env
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from llm4all.api import Model, Response, merge_params
from llm4all.integrations.langchain import _shared
from llm4all.params import GenerationParams

#: A misspelt field is an error, not silently ignored.
CONFIG = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=(), extra="forbid")

#: Knobs a call may set as keyword arguments (``model.invoke(..., top_k=1)``).
KNOBS = frozenset(f.name for f in dataclasses.fields(GenerationParams)) - {"grammar"}


class Llm4allSettings(BaseModel):
    """Fields of :class:`ChatLlm4all` and :class:`Llm4allLLM`."""

    # Restated by the subclasses: LangChain's base classes, later in their MRO, ignore typos.
    model_config = CONFIG

    model: str | None = None
    """A catalog name, a model-store file name or a GGUF path (None: the default model);
    with ``base_url``, the server's model id."""
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    """Seconds an answer may take: a local answer is cut off, a request to a server times out."""
    max_retries: int = 2
    """Retries of a failed request to a server (with backoff)."""
    streaming: bool = False
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    # -- a model in this process --------------------------------------------------------
    n_ctx: int | None = None
    n_threads: int | None = None
    n_gpu_layers: int | None = None
    allow_download: bool = True
    """Download a catalog model that is not installed yet."""
    client: Any = Field(default=None, exclude=True)
    """An already loaded :class:`llm4all.Model` to use instead of loading ``model``."""
    # -- a server -----------------------------------------------------------------------
    base_url: str | None = Field(default_factory=from_env("LLM4ALL_BASE_URL", default=None))
    """An llm4all server's ``/v1`` URL, e.g. ``http://127.0.0.1:4891/v1``."""
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("LLM4ALL_API_KEY", default=None)
    )
    _loaded: dict[str | None, Model] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _knobs_in_range(self) -> Llm4allSettings:
        self._check_knobs()
        return self

    def _check_knobs(self) -> None:
        """An out-of-range knob fails when the object is made, not at its first answer."""
        GenerationParams(**self._knobs(None, {}))

    def _local(self, name: str | None = None) -> Model:
        """The model in this process (``name`` overrides :attr:`model` for one call)."""
        if self.client is not None and name in (None, self.model):
            model: Model = self.client
            return model
        key = name or self.model
        if key not in self._loaded:  # held here: the shared load lives while this object does
            load = {
                k: v
                for k, v in (
                    ("n_ctx", self.n_ctx),
                    ("n_threads", self.n_threads),
                    ("n_gpu_layers", self.n_gpu_layers),
                )
                if v is not None
            }
            self._loaded[key] = _shared.chat_model(key, self.allow_download, load)
        return self._loaded[key]

    def _knobs(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The knobs of one call: the fields set, then the call's own (``kwargs`` loses them)."""
        knobs = {k: getattr(self, k) for k in KNOBS if getattr(self, k, None) is not None}
        knobs.update({k: kwargs.pop(k) for k in list(kwargs) if k in KNOBS})
        if stop is not None:
            knobs["stop"] = stop
        if "stop" in knobs:
            knobs["stop"] = tuple(knobs["stop"])
        return knobs

    def _params(self, model: Model, knobs: dict[str, Any]) -> GenerationParams:
        return merge_params(model.params, knobs)


def pieces(model: Model, response: Response, timeout: float | None) -> Iterator[str]:
    """The text of a local answer as it is sampled.

    An answer still going after ``timeout`` seconds is cancelled and raises
    :class:`TimeoutError`; ``response.completion`` has the usage once done.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    for piece in response:
        yield piece
        if deadline is not None and time.monotonic() > deadline:
            response.cancel()
            raise TimeoutError(f"{model.name}: no answer within timeout={timeout:g}s")
