"""MCP (Model Context Protocol) both ways.

- **Client** (:mod:`.config`, :mod:`.client`, :mod:`.loop`): MCP servers
  listed in ``$LLM4ALL_HOME/mcp.toml`` (or ``mcp.json``, Claude Desktop's
  ``mcpServers`` shape), over stdio or Streamable HTTP; their tools offered
  to a model and the tool loop (call → result → answer) run for the user,
  every call shown, each tool ``allow``/``confirm``/``deny`` (``confirm`` by
  default: nothing runs without consent).
- **Server** (:mod:`.server`): ``llm4all mcp serve`` offers LocalDocs search
  as MCP tools, so other assistants can search a user's documents.

The ``mcp`` package is imported inside functions (see docs/tools.md).
"""

from __future__ import annotations

from llm4all.mcp.config import McpConfig, ServerConfig, load_config

__all__ = ["McpConfig", "ServerConfig", "load_config"]
