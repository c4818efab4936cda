"""``ChatLlm4all``: a LangChain chat model on a local llm4all model or an llm4all server.

Example::

    from llm4all.integrations.langchain import ChatLlm4all
    chat = ChatLlm4all(model="qwen2.5-coder-0.5b-instruct", temperature=0, max_tokens=64)
    print(chat.invoke("Name three colours.").content)

In-process, the messages go through the answer pipeline
(:func:`llm4all.answer.prepare`: the model's own template and default system
prompt, tool definitions included) and are streamed by the engine, so stop strings end the answer while
it is generated. Tool calls are read out of the answer by
:func:`llm4all.chat.tools.parse`, as the OpenAI route reads them; a call that
must be made (``tool_choice``) and structured output are constrained by a
JSON-schema grammar, so the output always parses. With ``base_url`` the same
requests go to an llm4all server through the ``openai`` client
(:mod:`._remote`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from llm4all import answer
from llm4all.chat.tools import call_schema, parse
from llm4all.engine import Completion
from llm4all.integrations.langchain import _remote
from llm4all.integrations.langchain._base import CONFIG, Llm4allSettings, pieces
from llm4all.integrations.langchain._messages import to_messages, to_tool_calls

PROVIDER = "llm4all"


class ChatLlm4all(Llm4allSettings, BaseChatModel):
    """A chat model on llm4all; see the module docstring. Fields: :class:`Llm4allSettings`."""

    model_config = CONFIG

    @property
    def _llm_type(self) -> str:
        return "llm4all-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.model or default_model_name(),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # -- answering ------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunk: ChatGenerationChunk | None = None
        for part in self._stream(messages, stop, run_manager, **kwargs):
            chunk = part if chunk is None else chunk + part
        assert chunk is not None  # _stream always ends with the usage chunk
        message = chunk.message
        return ChatResult(
            generations=[
                ChatGeneration(
                    message=AIMessage(
                        content=message.content,
                        tool_calls=getattr(message, "tool_calls", []),
                        usage_metadata=getattr(message, "usage_metadata", None),
                        response_metadata=message.response_metadata,
                        id=message.id,
                    )
                )
            ]
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        name = kwargs.pop("model", None)
        tools: list[dict[str, Any]] = kwargs.pop("tools", None) or []
        choice = kwargs.pop("tool_choice", None)
        parallel = kwargs.pop("parallel_tool_calls", None) is not False
        knobs = self._knobs(stop, kwargs)
        if kwargs:
            raise TypeError(f"ChatLlm4all got an unknown argument {next(iter(kwargs))!r}")
        if self.base_url:  # the server parses calls and applies the grammar itself
            yield from _remote.chat_stream(self, messages, knobs, name, tools, choice, run_manager)
            return
        shown, forced = _tool_plan(tools, choice)
        if forced is not None:
            knobs["json_schema"] = call_schema(forced)
        yield from self._local_stream(messages, knobs, name, shown, forced, parallel, run_manager)

    def _local_stream(
        self,
        messages: list[BaseMessage],
        knobs: dict[str, Any],
        name: str | None,
        tools: list[dict[str, Any]],
        forced: list[dict[str, Any]] | None,
        parallel: bool,
        run_manager: CallbackManagerForLLMRun | None,
    ) -> Iterator[ChatGenerationChunk]:
        model = self._local(name)
        params = self._params(model, knobs)
        prepared = answer.prepare(
            model,
            to_messages(messages),
            params=params,
            tools=tools,
            fit=False,
            forced=forced is not None,
            parallel_calls=parallel,
        )
        response = answer.stream(model, prepared)
        held: list[str] = []  # with tools, the answer is parsed once it is whole
        for piece in pieces(model, response, self.timeout):
            if tools:
                held.append(piece)
                continue
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        assert response.completion is not None
        known = {t["function"]["name"] for t in tools}
        parsed = parse("".join(held), forced=forced is not None, known=known, parallel=parallel)
        if tools and (parsed.content or not parsed.calls):
            text = parsed.content or ""
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
            if run_manager:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk
        yield _last_chunk(model.name, response.completion, parsed.calls)

    # -- tools and structured output --------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools``; ``tool_choice`` ``"any"``/``"required"``/a name forces a call.

        A forced call is grammar-constrained: the answer is always one valid call.
        """
        specs = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = tool_choice
        return super().bind(tools=specs, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Answers as ``schema`` (pydantic class, TypedDict or JSON schema), always parseable.

        ``json_schema`` (the default) constrains the answer to the schema;
        ``function_calling`` forces a call of a tool with that schema; ``json_mode``
        constrains it to any JSON object (say what you want in the prompt).
        """
        if kwargs:
            raise TypeError(
                f"with_structured_output got an unknown argument {next(iter(kwargs))!r}"
            )
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        traced = {
            "ls_structured_output_format": {
                "kwargs": {"method": method, "strict": strict},
                "schema": convert_to_json_schema(schema),
            }
        }
        parser: Runnable[Any, Any]
        if method == "function_calling":
            tool = convert_to_openai_tool(schema)
            name = tool["function"]["name"]
            llm = self.bind_tools([schema], tool_choice=name, **traced)
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            constraint = (
                "{}"
                if method == "json_mode"
                else json.dumps(convert_to_openai_tool(schema)["function"]["parameters"])
            )
            llm = self.bind(json_schema=constraint, **traced)
            parser = (
                PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
                if is_pydantic
                else JsonOutputParser()
            )
        else:
            raise ValueError(
                f"method must be 'json_schema', 'function_calling' or 'json_mode', not {method!r}"
            )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")


def _tool_plan(
    tools: list[dict[str, Any]], choice: dict[str, Any] | str | bool | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The tools shown to the model, and the ones of which it must call one (None: free)."""
    if not tools or choice in (None, "auto", False):
        return tools, None
    if choice == "none":
        return [], None
    if choice in ("any", "required", True):
        return tools, tools
    wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else choice
    chosen = [t for t in tools if t["function"]["name"] == wanted]
    if not chosen:
        raise ValueError(f"tool_choice names {wanted!r}, which is not among the bound tools")
    return tools, chosen


def _last_chunk(
    model_name: str, completion: Completion, calls: list[dict[str, Any]]
) -> ChatGenerationChunk:
    """The stream's end: the calls, usage and finish reason."""
    usage = completion.usage
    reason = "tool_calls" if calls else completion.finish_reason
    message = AIMessageChunk(
        content="",
        tool_call_chunks=[
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(to_tool_calls(calls))
        ],
        usage_metadata={
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "input_token_details": {"cache_read": usage.cached_tokens},
        },
        response_metadata={
            "model_name": model_name,
            "finish_reason": reason,
            "model_provider": PROVIDER,
        },
        chunk_position="last",
    )
    return ChatGenerationChunk(message=message, generation_info={"finish_reason": reason})


def default_model_name() -> str:
    """The catalog's default chat model (what ``model=None`` loads)."""
    from llm4all.models.catalog import load_catalog

    return load_catalog().default().name
