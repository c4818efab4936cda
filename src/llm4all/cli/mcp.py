"""``llm4all mcp``: MCP servers' tools in a chat, and LocalDocs as an MCP server.

- ``llm4all mcp serve`` — LocalDocs search as MCP tools (stdio; ``--port`` for HTTP).
- ``llm4all mcp tools`` — the configured servers (``$LLM4ALL_HOME/mcp.toml``) and their tools.
- ``llm4all mcp ask "question"`` — answer with those tools (as ``llm4all run`` does, see
  :mod:`llm4all.cli.mcp_tools`): every call shown, a
  ``confirm`` tool asked about first (``--yes`` allows them all for this run).
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("mcp")
def mcp_command() -> None:
    """MCP: use MCP servers' tools (mcp.toml), or serve LocalDocs search over MCP."""


@mcp_command.command("serve")
@click.option("--port", type=int, default=None, help="Serve Streamable HTTP on 127.0.0.1:PORT.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address for --port.")
def serve(port: int | None, host: str) -> None:
    """Offer LocalDocs search (list_collections, search_documents) as an MCP server.

    Example (Claude Desktop's config): {"mcpServers": {"llm4all":
    {"command": "llm4all", "args": ["mcp", "serve"]}}}
    """
    from llm4all.mcp.server import localdocs_server

    app = localdocs_server()
    if port is None:
        app.run()
    else:
        app.run("streamable-http", host=host, port=port)


@mcp_command.command("tools")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None)
def tools(config_path: Path | None) -> None:
    """List the configured MCP servers' tools and what each may do (allow/confirm/deny)."""
    from llm4all.mcp.client import McpTools
    from llm4all.mcp.config import load_config

    config = load_config(config_path)
    if not config.servers:
        click.echo(f"no MCP servers configured ({config.path})")
        return
    with McpTools(config) as connected:
        for t in connected.tools:
            about = t.description.splitlines()[0] if t.description else ""
            click.echo(f"{t.server}\t{t.name}\t{t.permission}\t{about}")


@mcp_command.command("ask")
@click.argument("question")
@click.option("-m", "--model", default=None, help="Model (default: the catalog's default).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None)
@click.option("--server", "servers", multiple=True, help="Only this server's tools (repeatable).")
@click.option("--yes", is_flag=True, help="Run 'confirm' tools without asking (not 'deny' ones).")
@click.option("--temp", type=float, default=0.0, show_default=True)
@click.option("--max-rounds", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the answer and the calls as JSON.")
def ask(
    question: str,
    model: str | None,
    config_path: Path | None,
    servers: tuple[str, ...],
    yes: bool,
    temp: float,
    max_rounds: int,
    as_json: bool,
) -> None:
    """Answer QUESTION with the MCP servers' tools; each call is shown, and asked about first."""
    from llm4all.cli._common import load_model
    from llm4all.cli.mcp_tools import ToolConsole
    from llm4all.mcp.client import McpTools
    from llm4all.mcp.config import load_config
    from llm4all.mcp.loop import answer_with_tools

    config = load_config(config_path)
    params_model = load_model(model)
    params = params_model.params.replace(temperature=temp)

    shown = ToolConsole(ask=True, yes=yes)

    with McpTools(config, servers=list(servers) or None) as connected:
        result = answer_with_tools(
            params_model,
            question,
            connected,
            consent=shown.consent,
            on_start=shown.started,
            on_call=shown.done,
            params=params,
            max_rounds=max_rounds,
        )
    if as_json:
        calls = [
            {
                "server": c.server,
                "name": c.name,
                "arguments": c.arguments,
                "ran": c.ran,
                "result": c.result,
            }
            for c in result.calls
        ]
        click.echo(json.dumps({"answer": result.text, "calls": calls}))
    else:
        click.echo(result.text)
