"""Request and response models of the web UI's JSON API (``/api/…``).

The shapes mirror the chat store's dataclasses (:class:`~llm4all.store.Chat`,
:class:`~llm4all.store.StoredMessage`) plus what only the page needs: the
sanitized HTML of each answer, whether a chat is generating right now, and
the catalog facts a user chooses a model by. Requests forbid unknown fields,
as the OpenAI side does, so a typo is a 400 that names it.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Literal, get_args, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm4all.params import GenerationParams
from llm4all.server.errors import ApiError
from llm4all.server.schemas import KNOB_NAMES, Knobs

#: Longest message the page may send (characters); the context window is the real limit.
MAX_MESSAGE_CHARS = 200_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- chats and messages --------------------------------------------------------------------
class ChatOut(BaseModel):
    id: str
    title: str | None
    model: str | None = Field(description="the chat's model (None: the default model)")
    system_prompt: str | None = Field(description="None: the model's own default")
    params: dict[str, Any] = Field(description="generation parameters set for this chat")
    created_at: datetime
    updated_at: datetime
    message_count: int
    generating: bool = Field(False, description="an answer is being generated right now")
    collections: list[str] = Field(
        default_factory=list, description="LocalDocs collections searched for each question"
    )
    tools: bool = Field(True, description="the MCP servers' tools are offered in this chat")


class ToolCallOut(BaseModel):
    """One MCP tool call of an answer: asked for, run (or not), and what came back."""

    id: str | None = Field(None, description="in a stream: the id to allow or deny it by")
    server: str
    name: str
    arguments: dict[str, Any]
    permission: str = Field(description="allow, confirm or deny")
    status: Literal["asking", "running", "done"] = "done"
    ran: bool = False
    result: str | None = Field(None, description="the tool's text, or why it did not run")


class MessageOut(BaseModel):
    id: str
    chat_id: str
    position: int
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    created_at: datetime
    model: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_second: float | None = None
    time_to_first_token: float | None = None
    sources: list[dict[str, Any]] | None = Field(
        None, description="cited excerpts (LocalDocs): file, title, text, …"
    )
    rating: Literal[-1, 1] | None = None
    edited_content: str | None = Field(
        None, description="a better answer the user suggested (the answer itself is kept)"
    )
    html: str | None = Field(None, description="the answer rendered as sanitized HTML")
    call: ToolCallOut | None = Field(None, description="a tool message: the call it holds")


class ChatDetail(ChatOut):
    messages: list[MessageOut]


class ChatCreate(Strict):
    title: str | None = Field(None, max_length=500)
    model: str | None = None
    system_prompt: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    collections: list[str] = Field(default_factory=list)
    tools: bool = True


class ChatPatch(Strict):
    """Only the fields given change; ``null`` clears one (model default, no title, …)."""

    title: str | None = Field(None, max_length=500)
    model: str | None = None
    system_prompt: str | None = None
    params: dict[str, Any] | None = None
    collections: list[str] | None = None
    tools: bool | None = Field(None, description="offer the MCP servers' tools in this chat")


class SendBody(Strict):
    content: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)


class RegenerateBody(Strict):
    message_id: str | None = Field(
        None, description="the answer to replace (default: the last message)"
    )


class RatingBody(Strict):
    rating: Literal[-1, 1] | None


class StopOut(BaseModel):
    stopped: bool


class StreamEvent(BaseModel):
    """One server-sent event of an answer stream (``data: {json}``)."""

    type: Literal[
        "user",
        "start",
        "delta",
        "html",
        "reset",
        "tool_call",
        "tool_result",
        "notice",
        "done",
        "error",
    ]
    message: MessageOut | None = Field(
        None, description="user: the saved message; done: the answer"
    )
    model: str | None = Field(None, description="start: the model answering")
    text: str | None = Field(
        None, description="delta: new text (plain, untrusted); notice: a line for the user"
    )
    call: ToolCallOut | None = Field(
        None, description="tool_call: a call asked for or running; tool_result: with its result"
    )
    html: str | None = Field(None, description="html: the whole answer so far, sanitized")
    error: dict[str, Any] | None = Field(None, description="error: OpenAI-style error object")


class ConsentBody(Strict):
    allow: bool = Field(description="true: run the call; false: do not")


class ConsentOut(BaseModel):
    allowed: bool


class ToolOut(BaseModel):
    name: str = Field(description="as the model sees it")
    description: str
    permission: Literal["allow", "confirm", "deny"]


class ToolServerOut(BaseModel):
    name: str
    error: str | None = Field(None, description="why this server is left out (one line)")
    tools: list[ToolOut]


class ToolsOut(BaseModel):
    """The MCP servers of ``mcp.toml`` / ``mcp.json`` and their tools."""

    servers: list[ToolServerOut]
    error: str | None = Field(None, description="why no tool can run (one line)")


# -- settings and parameters ---------------------------------------------------------------
class UiSettings(Strict):
    default_model: str | None = Field(None, description="model of new chats (None: the server's)")
    default_system_prompt: str | None = Field(
        None, description="system prompt of new chats (None: the model's own)"
    )


class ParamSpec(BaseModel):
    """One generation parameter of a chat, from :class:`~llm4all.params.GenerationParams`."""

    name: str
    type: Literal["int", "float", "text", "list"]
    default: Any
    min: float | None
    max: float | None
    nullable: bool
    help: str


class CollectionOut(BaseModel):
    """A LocalDocs collection and the state of its index."""

    name: str
    folders: list[str]
    files: int
    indexed: int
    chunks: int
    embedded: int
    indexed_at: str | None


def param_specs(defaults: GenerationParams) -> list[dict[str, Any]]:
    """The knobs a chat can set (those of the OpenAI API), with ranges, help and defaults."""
    hints = get_type_hints(GenerationParams)
    kinds = {int: "int", float: "float", str: "text"}
    specs = []
    for f in dataclasses.fields(GenerationParams):
        if f.name not in KNOB_NAMES:
            continue
        args = get_args(hints[f.name])
        base = next((a for a in args if a is not type(None)), hints[f.name])
        default = getattr(defaults, f.name)
        specs.append(
            {
                "name": f.name,
                "type": "list" if f.name == "stop" else kinds[base],
                "default": list(default) if isinstance(default, tuple) else default,
                "min": f.metadata.get("min"),
                "max": f.metadata.get("max"),
                "nullable": type(None) in args,
                "help": str(f.metadata.get("help", "")),
            }
        )
    return specs


def clean_params(params: dict[str, Any]) -> dict[str, Any]:
    """A chat's parameters as stored: checked like a request's knobs; None means "default"."""
    try:
        knobs = Knobs.model_validate(params).model_dump(exclude_none=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0])
        raise ApiError(
            400, f"params.{name}: {first['msg']}", param=f"params.{name}", code="invalid_value"
        ) from None
    if isinstance(knobs.get("stop"), str):
        knobs["stop"] = [knobs["stop"]]
    return knobs


# -- models --------------------------------------------------------------------------------
class ModelOut(BaseModel):
    name: str
    kind: str
    installed: bool
    loaded: bool = False
    default: bool = False
    size: int | None = Field(None, description="file size in bytes")
    ram_required_gb: float | None = None
    parameters: str | None = None
    quantization: str | None = None
    context_length: int | None = None
    license: str | None = None
    description: str | None = None
    url: str | None = None


class PullOut(BaseModel):
    name: str
    status: Literal["running", "done", "error", "cancelled"] = Field(
        description="a cancelled pull keeps what it downloaded: pulling again resumes it"
    )
    phase: str = Field(description="what is happening (the file being fetched or checked)")
    completed: int
    total: int | None
    error: str | None = None


class ModelsOut(BaseModel):
    installed: list[ModelOut]
    catalog: list[ModelOut] = Field(description="catalog models that are not installed")
    pulls: list[PullOut]
    default: str | None = Field(description="the model a chat without one uses")


class PullBody(Strict):
    name: str
