"""``Llm4allLLM``: a LangChain completion model (string in, string out) on llm4all.

For chains written for completion models. The prompt is a user message in
the model's chat format (a base model continues it as is); ``raw=True``
continues any model's prompt as is. Streams, honours stop strings while
generating, and takes the same fields as :class:`ChatLlm4all`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LLM, LangSmithParams
from langchain_core.outputs import GenerationChunk

from llm4all.integrations.langchain import _remote
from llm4all.integrations.langchain._base import CONFIG, Llm4allSettings, pieces
from llm4all.integrations.langchain.chat_models import PROVIDER, default_model_name


class Llm4allLLM(Llm4allSettings, LLM):
    """A completion model on llm4all. Fields: those of :class:`Llm4allSettings`, and ``raw``."""

    model_config = CONFIG

    raw: bool = False
    """Continue the prompt as written instead of answering it as a user message."""

    @property
    def _llm_type(self) -> str:
        return "llm4all"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url, "raw": self.raw}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.model or default_model_name(),
            ls_model_type="llm",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return "".join(c.text for c in self._stream(prompt, stop, run_manager, **kwargs))

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        name = kwargs.pop("model", None)
        knobs = self._knobs(stop, kwargs)
        if kwargs:
            raise TypeError(f"{type(self).__name__} got an unknown argument {next(iter(kwargs))!r}")
        if self.base_url:
            texts: Iterator[str] = (
                c.text for c in _remote.completion_stream(self, prompt, knobs, name)
            )
        else:
            model = self._local(name)
            response = model.stream(prompt, raw=self.raw, **knobs)
            texts = pieces(model, response, self.timeout)
        for text in texts:
            chunk = GenerationChunk(text=text)
            if run_manager:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk
