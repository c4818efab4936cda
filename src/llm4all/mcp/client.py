"""Connections to the configured MCP servers, from synchronous code.

:class:`McpTools` starts one event loop in a thread, connects to every
server (``mcp.Client`` over stdio or Streamable HTTP) and offers their tools
as OpenAI function definitions; :meth:`McpTools.call` runs one and returns
its result as text. Example::

    with McpTools(load_config()) as tools:
        print([t["function"]["name"] for t in tools.specs()])
        print(tools.call("add", {"a": 2, "b": 3}))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from llm4all.errors import Llm4allError
from llm4all.mcp.config import McpConfig, Permission, ServerConfig

T = TypeVar("T")
CONNECT_SECONDS = 60.0
CALL_SECONDS = 120.0


class McpError(Llm4allError):
    """An MCP server could not be reached or a call failed (one line, naming the server)."""


@dataclass(frozen=True)
class McpTool:
    """One tool of one server, with what the user allowed for it."""

    server: str
    name: str  # as the model sees it (the server's name first when two servers share a tool name)
    remote_name: str
    description: str
    parameters: dict[str, Any]
    permission: Permission

    def spec(self) -> dict[str, Any]:
        """The OpenAI function definition the model is shown."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters or {"type": "object", "properties": {}},
            },
        }


class McpTools:
    """The tools of every server in ``config``, connected until :meth:`close`.

    ``servers``: only these (by name). ``skip_failed=True``: a server that cannot
    be started or reached is left out, its one-line reason in :attr:`failed`
    (a chat goes on without it); otherwise its :class:`McpError` is raised.
    """

    def __init__(
        self, config: McpConfig, *, servers: list[str] | None = None, skip_failed: bool = False
    ) -> None:
        chosen = [s for s in config.servers if servers is None or s.name in servers]
        missing = set(servers or ()) - {s.name for s in chosen}
        if missing:
            raise McpError(f"no MCP server named {sorted(missing)[0]!r} in {config.path}")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="mcp")
        self._thread.start()
        self._stop = asyncio.Event()
        self._clients: dict[str, Any] = {}
        self._tasks: list[concurrent.futures.Future[None]] = []
        self.tools: list[McpTool] = []
        self.failed: dict[str, str] = {}  # server -> why it is left out (skip_failed)
        try:
            for server in chosen:
                try:
                    self._connect(server)
                except McpError as exc:
                    if not skip_failed:
                        raise
                    self.failed[server.name] = str(exc)
            self.tools = self._list([s for s in chosen if s.name in self._clients], skip_failed)
        except BaseException:
            self.close()
            raise

    # -- connecting --------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            future.cancel()
            raise McpError(f"{what}: no answer in {timeout:.0f} s") from exc

    def _connect(self, server: ServerConfig) -> None:
        ready: asyncio.Future[Any] = self._loop.create_future()
        task = asyncio.run_coroutine_threadsafe(self._hold(server, ready), self._loop)
        self._tasks.append(task)

        async def wait() -> Any:
            return await ready

        what = f"MCP server {server.name!r}"
        try:
            self._clients[server.name] = self._run(wait(), CONNECT_SECONDS, what)
        except McpError:
            raise
        except Exception as exc:
            raise McpError(f"{what}: cannot connect: {_reason(exc)}") from exc

    async def _hold(self, server: ServerConfig, ready: asyncio.Future[Any]) -> None:
        """Keep one server's connection open (entered and left in this one task)."""
        from mcp import Client, StdioServerParameters

        target: Any
        if server.url is not None:
            target = server.url
        else:
            assert server.command is not None
            target = StdioServerParameters(
                command=server.command, args=list(server.args), env=server.env or None
            )
        try:
            async with Client(target) as client:
                ready.set_result(client)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            elif not isinstance(exc, (Exception, asyncio.CancelledError)):
                raise

    def _list(self, servers: list[ServerConfig], skip_failed: bool) -> list[McpTool]:
        found: list[tuple[ServerConfig, Any]] = []
        for server in servers:
            client = self._clients[server.name]
            what = f"MCP server {server.name!r}"
            try:
                result = self._run(client.list_tools(), CALL_SECONDS, what)
            except Exception as exc:
                error = exc if isinstance(exc, McpError) else McpError(f"{what}: {_reason(exc)}")
                if not skip_failed:
                    raise error from exc
                self.failed[server.name] = str(error)
                continue
            found += [(server, t) for t in result.tools]
        counts: dict[str, int] = {}
        for _, t in found:
            counts[t.name] = counts.get(t.name, 0) + 1
        return [
            McpTool(
                server.name,
                t.name if counts[t.name] == 1 else f"{server.name}_{t.name}",
                t.name,
                t.description or "",
                dict(t.input_schema or {}) if hasattr(t, "input_schema") else dict(t.inputSchema),
                server.permission(t.name),
            )
            for server, t in found
        ]

    # -- using ---------------------------------------------------------------------------------
    def specs(self) -> list[dict[str, Any]]:
        """OpenAI function definitions of every tool not denied."""
        return [t.spec() for t in self.tools if t.permission != "deny"]

    def find(self, name: str) -> McpTool | None:
        return next((t for t in self.tools if t.name == name), None)

    def call(self, name: str, arguments: dict[str, Any] | str) -> str:
        """Run tool ``name`` (no consent asked here: see :mod:`llm4all.mcp.loop`); its text."""
        tool = self.find(name)
        if tool is None:
            raise McpError(f"no MCP tool named {name!r}")
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
        client = self._clients[tool.server]
        what = f"MCP tool {name!r} ({tool.server})"
        try:
            result = self._run(client.call_tool(tool.remote_name, args), CALL_SECONDS, what)
        except McpError:
            raise
        except Exception as exc:
            raise McpError(f"{what}: {_reason(exc)}") from exc
        text = "\n".join(_content_text(c) for c in result.content)
        if getattr(result, "is_error", getattr(result, "isError", False)):
            return f"error: {text}"
        if not text and getattr(result, "structured_content", None) is not None:
            return json.dumps(result.structured_content)
        return text

    def close(self) -> None:
        """Disconnect from every server (stdio servers end) and stop the loop."""
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        for task in self._tasks:
            with contextlib.suppress(Exception):
                task.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> McpTools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _content_text(content: Any) -> str:
    if getattr(content, "type", None) == "text":
        return str(content.text)
    return f"[{getattr(content, 'type', 'content')}]"


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)  # an ExceptionGroup from anyio: its first cause
    if inner:
        return _reason(inner[0])
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
