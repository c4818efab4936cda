"""Request and response models at the HTTP boundary (OpenAI's shapes).

Sampling knobs are not declared here: every field of
:class:`~llm4all.params.GenerationParams` (``temperature``, ``top_p``,
``seed``, ``stop``, ``top_k``, ``min_p``, ``repeat_penalty``, ``grammar``, …)
becomes an optional request field with the range and help text declared
there. Requests forbid unknown fields, so a field we do not honour is a 400
that names it instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from llm4all.params import GenerationParams

#: GenerationParams fields that requests spell differently (json_schema is ``response_format``).
_NOT_REQUEST_FIELDS = frozenset({"json_schema"})
KNOB_NAMES = frozenset(
    f.name for f in dataclasses.fields(GenerationParams) if f.name not in _NOT_REQUEST_FIELDS
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _knob_fields() -> dict[str, Any]:
    """One optional pydantic field per generation knob, range and help from ``params.py``."""
    hints = get_type_hints(GenerationParams)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(GenerationParams):
        if f.name not in KNOB_NAMES:
            continue
        kind: Any = hints[f.name]
        if f.name == "stop":
            kind = str | list[str]
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        fields[f.name] = (
            kind | None,
            Field(None, ge=lo, le=hi, description=str(f.metadata.get("help", ""))),
        )
    return fields


if TYPE_CHECKING:
    Knobs = Strict
else:
    Knobs = create_model("Knobs", __base__=Strict, **_knob_fields())


# -- chat messages and tools -------------------------------------------------------------
class TextPart(Strict):
    type: Literal["text"]
    text: str


class FunctionCall(Strict):
    name: str
    arguments: str = Field(description="the arguments as a JSON text")


class ToolCall(Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, description="accepted; not shown to the model")
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = Field(None, description="an assistant's refusal, shown as its content")

    def text(self) -> str:
        if self.content is None:
            return self.refusal or ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDefinition(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class ToolChoiceFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"] = "function"
    function: ToolChoiceFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaFormat(Strict):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TextFormat(Strict):
    type: Literal["text"]


class JsonObjectFormat(Strict):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]


class StreamOptions(Strict):
    include_usage: bool = False


# -- requests ------------------------------------------------------------------------
class _Common(Knobs):
    model: str | None = Field(None, description="model name (default: the server's model)")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(1, ge=1, le=128, description="number of choices")
    user: str | None = Field(None, description="accepted; not used")
    cache_prompt: bool | None = Field(
        True,
        description="reuse the KV cache of a previous prompt that this one extends "
        "(llama.cpp's name); false evaluates the whole prompt",
    )

    def knobs(self) -> dict[str, Any]:
        """The generation knobs the request sets."""
        return self.model_dump(include=set(KNOB_NAMES), exclude_none=True)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    collections: list[str] | None = Field(
        None,
        description="llm4all extension: LocalDocs collections to search for the last user "
        "message; the answer draws on the excerpts and the response lists their references",
    )


TokenIds = list[Annotated[int, Field(ge=0)]]


class CompletionRequest(_Common):
    prompt: str | list[str] | TokenIds | list[TokenIds]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = False


class EmbeddingRequest(Strict):
    model: str | None = None
    input: str | list[str] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None
    #: llm4all extension: the model's task prefix to add ("document", the default, as
    #: ``Embedder.embed``; "query" for search queries; null for none).
    task: Literal["document", "query"] | None = "document"


# -- responses -------------------------------------------------------------------------
class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobInfo(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobInfo] | None
    refusal: list[TokenLogprobInfo] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


FinishReasonOut = Literal["stop", "length", "tool_calls"]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReasonOut


class Citation(BaseModel):
    """A sentence of the answer and this excerpt: cited by the model (``by: model``,
    ``supported`` says whether the excerpt holds it) or found after the answer
    (``by: attribution``) when the answer cited nothing that holds it."""

    sentence: str
    by: Literal["model", "attribution"]
    supported: bool
    support: float = Field(description="the share of the sentence's words the excerpt holds")


class Reference(BaseModel):
    """A LocalDocs excerpt the answer was given, numbered as the model was asked to cite it."""

    index: int
    collection: str
    path: str
    file: str
    location: str = Field(description='"lines 3–4", "line 7", "page 2" or ""')
    page: int | None = None
    line_start: int | None = None
    line_end: int | None = None
    heading: str | None = None
    excerpt: str
    score: float
    citations: list[Citation] = Field(
        default_factory=list,
        description="the answer's sentences this excerpt supports, checked after generation",
    )


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: UsageInfo
    references: list[Reference] | None = Field(
        None,
        description="llm4all extension: the LocalDocs excerpts behind the answer "
        "(only when the request named collections)",
        exclude_if=lambda value: value is None,
    )


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReasonOut


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: UsageInfo


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: UsageInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llm4all"
    kind: str = Field("chat", description="chat, base or embedding")
    loaded: bool = False
    max_model_len: int | None = Field(
        None, description="tokens one request may hold, prompt and answer (as vLLM reports it)"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
