"""MCP tools in the web chat: the servers, each chat's switch, the user's consent, the stored calls.

The MCP servers of ``$LLM4ALL_HOME/mcp.toml`` (or ``mcp.json``; see
:mod:`llm4all.mcp.config`) are started once per UI process, on first use (the
page asks for the tool list when it loads, or a chat answers with tools), and
closed at shutdown (:func:`llm4all.server.ui_api.close`). A server that cannot
start is left out with one line saying why; the others still serve.

While an answer runs its tool rounds (:mod:`llm4all.server.ui_chat`), a call
of a ``confirm`` tool waits for the page's Allow or Deny
(``POST /api/chats/{id}/tool-calls/{call_id}``) for at most
:data:`CONSENT_SECONDS`; no answer, or a stop, means the call is not run.
``allow`` tools run at once and ``deny`` tools are never offered.

Each call is saved in the chat as one message of role ``tool`` holding a JSON
record of the call and its result (:mod:`llm4all.mcp.history`, as the
terminal chat saves them), between the question and the answer, so a reloaded
page shows it, ``llm4all chat --continue`` has it, and so does the next
turn's prompt (:func:`prompt_messages`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request

from llm4all.chat.template import Message
from llm4all.errors import ChatNotFound
from llm4all.server.errors import ApiError
from llm4all.server.ui_schemas import ConsentBody, ConsentOut, ToolsOut
from llm4all.store import ChatStore, StoredMessage

if TYPE_CHECKING:
    from llm4all.mcp.client import McpTools

CONSENT_SECONDS = 120.0  # how long a confirm call waits for the user's answer
RESULT_CHARS = 20_000  # a longer tool result is cut (the page and the prompt both get it)


class ChatTools:
    """This UI process's MCP servers: started on first use, closed at shutdown.

    Thread-safe: endpoints run in a thread pool, and the first two uses at
    once start the servers once.
    """

    def __init__(self, path: Path | None = None, consent_seconds: float = CONSENT_SECONDS) -> None:
        self.path = path  # None: the default mcp.toml / mcp.json of LLM4ALL_HOME
        self.consent_seconds = consent_seconds
        self.consents = Consents()
        self.error: str | None = None  # the configuration or the mcp package: nothing runs
        self.failed: dict[str, str] = {}  # server -> why it is left out
        self._lock = threading.Lock()
        self._tools: McpTools | None = None
        self._started = False
        self._closed = False

    def configured(self) -> list[str]:
        """The servers the configuration lists (no server is started)."""
        from llm4all.mcp.config import McpConfigError, load_config

        try:
            return [s.name for s in load_config(self.path).servers]
        except McpConfigError:
            return []

    def start(self) -> McpTools | None:
        """The connected tools (None when none could start; see :attr:`error`, :attr:`failed`)."""
        with self._lock:
            if not self._started and not self._closed:
                self._started = True
                self._tools = self._open()
            return self._tools

    def _open(self) -> McpTools | None:
        from llm4all.mcp.config import McpConfigError, load_config

        try:
            config = load_config(self.path)
        except McpConfigError as exc:
            self.error = str(exc)
            return None
        if not config.servers:
            return None
        try:
            import mcp  # noqa: F401
        except ImportError:
            self.error = "MCP tools need the mcp package: pip install 'llm4all[mcp]'"
            return None
        from llm4all.mcp.client import McpError, McpTools

        try:  # a server that fails is left out, with its reason; the others serve
            tools = McpTools(config, skip_failed=True)
        except McpError as exc:
            self.error = str(exc)
            return None
        self.failed = dict(tools.failed)
        return tools

    def describe(self) -> dict[str, Any]:
        """The servers, their tools and permissions, and what failed (starts them)."""
        tools = self.start()
        listed = tools.tools if tools is not None else []
        servers = []
        for name in self.configured():
            servers.append(
                {
                    "name": name,
                    "error": self.failed.get(name),
                    "tools": [
                        {
                            "name": t.name,
                            "description": t.description,
                            "permission": t.permission,
                        }
                        for t in listed
                        if t.server == name
                    ],
                }
            )
        return {"servers": servers, "error": self.error}

    def problems(self) -> list[str]:
        """One line per thing that keeps tools from the chat."""
        lines = [self.error] if self.error else []
        return lines + list(self.failed.values())

    def close(self) -> None:
        """Stop every server (at the app's shutdown); later uses find no tools."""
        with self._lock:
            self._closed = True
            tools, self._tools = self._tools, None
        if tools is not None:
            tools.close()


class Consents:
    """Calls waiting for the user's Allow or Deny, by chat and call id (answered from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[tuple[str, str], tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]]
        self._waiting = {}

    async def ask(self, chat_id: str, call_id: str, stop: asyncio.Event, timeout: float) -> bool:
        """True when the user allows the call within ``timeout`` seconds (False: denied,
        no answer, or the answer was stopped)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()
        with self._lock:
            self._waiting[(chat_id, call_id)] = (loop, answer)
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {answer, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            return answer.done() and not answer.cancelled() and answer.result()
        finally:
            stopping.cancel()
            with self._lock:
                self._waiting.pop((chat_id, call_id), None)

    def answer(self, chat_id: str, call_id: str, allow: bool) -> bool:
        """Give the user's answer; False when no such call is waiting."""
        with self._lock:
            waiting = self._waiting.get((chat_id, call_id))
        if waiting is None:
            return False
        loop, answer = waiting

        def settle() -> None:
            if not answer.done():
                answer.set_result(allow)

        loop.call_soon_threadsafe(settle)
        return True


# -- stored calls (the terminal chat's format: llm4all.mcp.history) ---------------------------
def call_of(message: StoredMessage) -> dict[str, Any] | None:
    """The call a stored ``tool`` message holds, as the page shows it (None for other messages)."""
    if message.role != "tool":
        return None
    from llm4all.mcp.history import read_record

    call = read_record(message.content)
    if call is None:
        return None
    return {
        "id": call.id or None,
        "server": call.server,
        "name": call.name,
        "arguments": call.arguments,
        "permission": call.permission,
        "status": "done",
        "ran": call.ran,
        "result": call.result[:RESULT_CHARS],
    }


def prompt_messages(history: Sequence[StoredMessage], with_tools: bool) -> list[Message]:
    """The stored chat as prompt messages; its tool calls (as call and result) only ``with_tools``.

    Example: a question, one stored get_weather call and its answer become user,
    assistant (with ``tool_calls``), tool (the result) and assistant messages.
    """
    if with_tools:
        from llm4all.mcp.history import restore

        return restore((m.role, m.content) for m in history)
    return [
        Message("user" if m.role == "user" else "assistant", m.content)
        for m in history
        if m.role in ("user", "assistant")
    ]


# -- routes ---------------------------------------------------------------------------------------
router = APIRouter(prefix="/api", tags=["web UI"])


def chat_tools_of(request: Request) -> ChatTools:
    tools: ChatTools = request.app.state.chat_tools
    return tools


Tools = Annotated[ChatTools, Depends(chat_tools_of)]


@router.get("/tools", response_model=ToolsOut)
def list_tools(tools: Tools) -> Any:
    """The MCP servers' tools with their permissions (the servers start on the first call)."""
    return tools.describe()


@router.post("/chats/{chat_id}/tool-calls/{call_id}", response_model=ConsentOut)
def answer_call(chat_id: str, call_id: str, body: ConsentBody, request: Request) -> Any:
    """Allow or deny a call that waits for the user (404 when none waits under that id)."""
    from llm4all.server.ui_api import chat_store

    store: ChatStore = chat_store(request)
    try:
        chat = store.get_chat(chat_id)
    except ChatNotFound:
        raise ApiError(
            404, f"no chat {chat_id!r}", param="chat_id", code="chat_not_found"
        ) from None
    if not chat_tools_of(request).consents.answer(chat.id, call_id, body.allow):
        raise ApiError(
            404, f"no tool call {call_id!r} waits for an answer", param="call_id", code="not_found"
        )
    return {"allowed": body.allow}
