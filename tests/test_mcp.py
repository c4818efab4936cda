"""MCP (issue 22): servers from mcp.toml over stdio and HTTP, the tool loop, LocalDocs served."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm4all.mcp.client import McpTools
from llm4all.mcp.config import McpConfigError, load_config
from llm4all.mcp.loop import DECLINED, answer_with_tools
from mcp_helpers import SERVER

pytest.importorskip("mcp")


@pytest.fixture
def server_script(tmp_path: Path) -> Path:
    path = tmp_path / "demo_server.py"
    path.write_text(SERVER)
    return path


def _stdio_config(tmp_path: Path, script: Path, tools: str = "") -> Path:
    config = tmp_path / "mcp.toml"
    config.write_text(
        f"[servers.demo]\ncommand = {json.dumps(sys.executable)}\n"
        f"args = [{json.dumps(str(script))}]\n"
        f"env = {{ CALLS = {json.dumps(str(tmp_path / 'calls.log'))} }}\n{tools}"
    )
    return config


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_config_files_and_one_line_errors(tmp_path: Path) -> None:
    claude = tmp_path / "mcp.json"
    claude.write_text(json.dumps({"mcpServers": {"f": {"command": "x", "args": ["-v"]}}}))
    (server,) = load_config(claude).servers
    assert (server.command, server.args, server.permission("anything")) == ("x", ("-v",), "confirm")
    bad = tmp_path / "bad.toml"
    for text, why in [
        ('[servers.a]\ncommand = "x"\nurl = "http://h"\n', "either 'command'"),
        ('[servers.a]\nurl = "ftp://h"\n', "http://"),
        ('[servers.a]\ncommand = "x"\ntools = { t = "always" }\n', "use one of allow"),
        ("[servers.a\n", "bad.toml"),
    ]:
        bad.write_text(text)
        with pytest.raises(McpConfigError, match=why) as err:
            load_config(bad)
        assert "\n" not in str(err.value)
    assert load_config().servers == ()  # no file: no servers
    with pytest.raises(McpConfigError, match="no such"):
        load_config(tmp_path / "none.toml")


def test_stdio_server_tools_and_a_call(tmp_path: Path, server_script: Path) -> None:
    config = load_config(_stdio_config(tmp_path, server_script, 'tools = { add = "allow" }\n'))
    with McpTools(config) as tools:
        assert {(t.name, t.permission) for t in tools.tools} == {
            ("add", "allow"),
            ("get_weather", "confirm"),
        }
        spec = next(s for s in tools.specs() if s["function"]["name"] == "add")
        assert spec["function"]["parameters"]["required"] == ["a", "b"]
        assert tools.call("add", {"a": 2, "b": 3}) == "5"
    assert _calls(tmp_path) == ["add 2 3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(tmp_path: Path, server_script: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "CALLS": str(tmp_path / "calls.log")}
    proc = subprocess.Popen(
        [sys.executable, str(server_script), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def test_http_server_and_the_tool_loop_asks_first(
    tmp_path: Path, http_server: str, default_model: Any
) -> None:
    config_path = tmp_path / "mcp.toml"
    config_path.write_text(f'[servers.web]\nurl = "{http_server}"\n')
    asked: list[str] = []
    shown: list[str] = []
    with McpTools(load_config(config_path)) as tools:
        # get_weather is "confirm" (the default) and nobody says yes: it does not run.
        refused = answer_with_tools(
            default_model,
            "What's the weather in Paris?",
            tools,
            consent=lambda c: asked.append(c.line()) or False,  # type: ignore[func-returns-value]
            on_call=lambda c: shown.append(c.line()),
            max_rounds=1,
        )
        assert asked == shown == ["web.get_weather(city='Paris')"]
        assert refused.calls[0].result == DECLINED and not refused.calls[0].ran
        assert _calls(tmp_path) == []
        # With consent it runs, and the answer is made from its result.
        done = answer_with_tools(
            default_model, "What's the weather in Paris?", tools, consent=lambda c: True
        )
    assert [(c.name, c.ran) for c in done.calls][:1] == [("get_weather", True)]
    assert _calls(tmp_path)[0] == "get_weather Paris"
    assert [m.role for m in done.messages][:3] == ["user", "assistant", "tool"]
    assert "14" in done.text or "rain" in done.text.lower()


def test_llm4all_mcp_serve_searches_localdocs(
    tmp_path: Path, notes: Path, embedder: Any, embedding_model_path: Path
) -> None:
    from mcp import Client, StdioServerParameters

    from llm4all.localdocs import LocalDocs
    from llm4all.localdocs.db import default_path

    home = Path(os.environ["LLM4ALL_HOME"])
    with LocalDocs(default_path(), embedder_factory=lambda _: embedder) as docs:
        docs.add("notes", [notes])
        docs.index("notes")
    env = {
        "LLM4ALL_HOME": str(home),
        "LLM4ALL_MODELS": str(embedding_model_path.parent),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    command = Path(sys.executable).with_name("llm4all")

    async def ask() -> tuple[Any, Any]:
        params = StdioServerParameters(command=str(command), args=["mcp", "serve"], env=env)
        async with Client(params) as client:
            listed = await client.call_tool("list_collections", {})
            found = await client.call_tool(
                "search_documents", {"query": "Where is the Zorblax conference?", "k": 2}
            )
            return listed, found

    listed, found = asyncio.run(ask())
    assert "notes" in listed.content[0].text
    hits = found.structured_content["result"]
    assert "Tallinn" in hits[0]["text"] and hits[0]["path"].endswith("events.md")
