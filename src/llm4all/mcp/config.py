"""The MCP servers a user lists: ``$LLM4ALL_HOME/mcp.toml`` or ``mcp.json``.

TOML::

    [servers.weather]                  # a server started over stdio
    command = "python"
    args = ["weather_server.py"]
    env = { API_KEY = "..." }
    tools = { get_forecast = "allow" } # allow | confirm | deny; the rest: default
    default = "confirm"                # the default of defaults

    [servers.files]                    # a server over Streamable HTTP
    url = "http://127.0.0.1:8000/mcp"

JSON, as Claude Desktop writes it (``tools``/``default`` may be added)::

    {"mcpServers": {"weather": {"command": "python", "args": ["weather_server.py"]}}}
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llm4all.errors import Llm4allError

Permission = Literal["allow", "confirm", "deny"]
PERMISSIONS: tuple[str, ...] = ("allow", "confirm", "deny")


class McpConfigError(Llm4allError):
    """The MCP configuration file cannot be used (one line, naming the file)."""


@dataclass(frozen=True)
class ServerConfig:
    """One MCP server: a command (stdio) or a URL (Streamable HTTP), and its tools' permissions."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    tools: dict[str, Permission] = field(default_factory=dict)
    default: Permission = "confirm"

    def permission(self, tool: str) -> Permission:
        """``allow``, ``confirm`` or ``deny`` for ``tool`` (its own, else the server's default)."""
        return self.tools.get(tool, self.default)


@dataclass(frozen=True)
class McpConfig:
    servers: tuple[ServerConfig, ...] = ()
    path: Path | None = None


def default_path() -> Path:
    """``$LLM4ALL_HOME/mcp.toml``, or ``mcp.json`` there when only that exists."""
    from llm4all.paths import home

    toml_path = home() / "mcp.toml"
    json_path = home() / "mcp.json"
    return json_path if json_path.exists() and not toml_path.exists() else toml_path


def load_config(path: str | Path | None = None) -> McpConfig:
    """The servers in ``path`` (default :func:`default_path`); none when the file does not exist."""
    where = Path(path) if path is not None else default_path()
    if not where.exists():
        if path is not None:
            raise McpConfigError(f"{where}: no such MCP configuration file")
        return McpConfig((), where)
    try:
        text = where.read_text(encoding="utf-8")
        data = json.loads(text) if where.suffix == ".json" else tomllib.loads(text)
    except (ValueError, OSError) as exc:
        raise McpConfigError(f"{where}: {exc}") from exc
    servers = data.get("mcpServers", data.get("servers", {}))
    if not isinstance(servers, dict):
        raise McpConfigError(f"{where}: 'servers' (or 'mcpServers') must be a table of servers")
    return McpConfig(tuple(_server(where, n, s) for n, s in servers.items()), where)


def _server(where: Path, name: str, raw: Any) -> ServerConfig:
    def bad(why: str) -> McpConfigError:
        return McpConfigError(f"{where}: server {name!r}: {why}")

    if not isinstance(raw, dict):
        raise bad("must be a table")
    command, url = raw.get("command"), raw.get("url")
    if (command is None) == (url is None):
        raise bad("give either 'command' (stdio) or 'url' (HTTP)")
    if command is not None and not isinstance(command, str):
        raise bad("'command' must be a string")
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise bad("'url' must be an http:// or https:// URL")
    args = raw.get("args", [])
    env = raw.get("env", {})
    tools = raw.get("tools", {})
    default = raw.get("default", "confirm")
    if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        raise bad("'args' must be a list of strings")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise bad("'env' must be a table of strings")
    if not isinstance(tools, dict):
        raise bad("'tools' must be a table of tool = permission")
    for tool, permission in [*tools.items(), ("default", default)]:
        if permission not in PERMISSIONS:
            raise bad(f"{tool} = {permission!r}: use one of {', '.join(PERMISSIONS)}")
    return ServerConfig(name, command, tuple(args), dict(env), url, dict(tools), default)
