"""MCP tools in the web chat (issue 22): a real MCP server over stdio, the default model.

One uvicorn server with Qwen2.5-Coder-0.5B (which calls ``get_weather`` at
temperature 0; SmolLM2 does not call tools) serves the module; its MCP
servers come from a ``mcp.toml`` naming the ``mcp`` package's own server
(MCPServer over stdio) with one tool of each permission. The API is driven
over HTTP; one test clicks Allow in a real browser (Debian's Chromium).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import CHROMIUM, playwright_or_skip
from llm4all.mcp.loop import DECLINED
from llm4all.params import GenerationParams
from llm4all.server.ui_tools import ChatTools
from llm4all.store import ChatStore
from server_helpers import DEFAULT, LiveServer, fast_settings, running

pytest.importorskip("mcp")
pytestmark = [pytest.mark.slow, pytest.mark.default_model]

#: The MCP server: each call it runs is written to $CALLS.
SERVER = '''
import os
from mcp.server.mcpserver import MCPServer
app = MCPServer("demo")

def _log(line):
    with open(os.environ["CALLS"], "a") as f:
        f.write(line + "\\n")

@app.tool()
def get_weather(city: str) -> str:
    """Current weather in a city"""
    _log(f"get_weather {city}")
    return f"{city}: 14 degrees Celsius, light rain"

@app.tool()
def add(a: int, b: int) -> int:
    """Add two numbers"""
    _log(f"add {a} {b}")
    return a + b

@app.tool()
def wipe_disk() -> str:
    """Erase the disk"""
    _log("wipe_disk")
    return "erased"

app.run()
'''
WEATHER = "What is the weather in Oslo right now?"
ANSWER_TIMEOUT = 240_000  # ms: two shared cores, other work running beside the tests


@dataclass
class Site:
    server: LiveServer
    tools: ChatTools
    calls: Path  # the MCP server's log of the calls it ran

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.url}/api{path}", timeout=120, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def ran(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


def write_config(folder: Path, calls: Path, extra: str = "") -> Path:
    script = folder / "demo_server.py"
    script.write_text(SERVER)
    config = folder / "mcp.toml"
    config.write_text(
        f"[servers.demo]\ncommand = {json.dumps(sys.executable)}\n"
        f"args = [{json.dumps(str(script))}]\n"
        f"env = {{ CALLS = {json.dumps(str(calls))} }}\n"
        'tools = { add = "allow", wipe_disk = "deny" }\n' + extra
    )
    return config


@pytest.fixture(scope="module")
def site(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    models = tmp_path_factory.mktemp("models")
    (models / default_model_path.name).symlink_to(default_model_path)
    home = tmp_path_factory.mktemp("home")
    calls = home / "calls.log"
    settings = fast_settings(
        models,
        model=DEFAULT,
        parallel=1,
        ctx=4096,
        defaults=GenerationParams(temperature=0, max_tokens=96),
    )
    with running(settings) as server:
        state = server.app.state
        state.chat_store = ChatStore(home / "llm4all.db")
        state.chat_tools = ChatTools(write_config(home, calls))
        yield Site(server, state.chat_tools, calls)
        state.chat_tools.close()  # the app's shutdown closes it too


def answer(site: Site, chat_id: str, text: str, allow: bool | None) -> list[dict[str, Any]]:
    """Send ``text`` and read the answer's events, answering a ``confirm`` call with ``allow``
    (None: leave it unanswered)."""
    seen = []
    url = f"{site.url}/api/chats/{chat_id}/messages"
    with httpx.stream("POST", url, json={"content": text}, timeout=300) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            seen.append(event)
            call = event.get("call") or {}
            if event["type"] == "tool_call" and call["status"] == "asking" and allow is not None:
                site.api("POST", f"/chats/{chat_id}/tool-calls/{call['id']}", json={"allow": allow})
    return seen


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


# -- the API --------------------------------------------------------------------------------------
def test_the_servers_tools_are_listed_with_their_permissions(site: Site) -> None:
    listed = site.api("GET", "/tools")
    assert listed["error"] is None
    (server,) = listed["servers"]
    assert server["name"] == "demo" and server["error"] is None
    permissions = {t["name"]: t["permission"] for t in server["tools"]}
    assert permissions == {"get_weather": "confirm", "add": "allow", "wipe_disk": "deny"}
    chat = site.api("POST", "/chats", json={})
    assert chat["tools"] is True
    assert site.api("PATCH", f"/chats/{chat['id']}", json={"tools": False})["tools"] is False
    assert site.api("GET", f"/chats/{chat['id']}")["tools"] is False
    missing = httpx.post(f"{site.url}/api/chats/{chat['id']}/tool-calls/nope", json={"allow": True})
    assert missing.status_code == 404 and "no tool call" in missing.json()["error"]["message"]


def test_an_allowed_call_runs_its_result_is_shown_and_saved(site: Site) -> None:
    before = len(site.ran())
    chat = site.api("POST", "/chats", json={})
    events = answer(site, chat["id"], WEATHER, allow=True)
    asking, running = of_type(events, "tool_call")
    assert asking["call"]["name"] == "get_weather" and asking["call"]["status"] == "asking"
    assert asking["call"]["arguments"] == {"city": "Oslo"}
    assert running["call"]["status"] == "running"
    (result,) = of_type(events, "tool_result")
    assert result["call"]["ran"] and "14 degrees" in result["call"]["result"]
    assert site.ran()[before:] == ["get_weather Oslo"]
    done = of_type(events, "done")[-1]["message"]
    assert "14" in done["content"]
    assert of_type(events, "delta") and not of_type(events, "error")
    # Reloaded: the question, the call with its result, the answer.
    stored = site.api("GET", f"/chats/{chat['id']}")["messages"]
    assert [m["role"] for m in stored] == ["user", "tool", "assistant"]
    call = stored[1]["call"]
    assert (call["name"], call["arguments"], call["ran"]) == ("get_weather", {"city": "Oslo"}, True)
    assert "14 degrees" in call["result"] and call["permission"] == "confirm"


def test_a_call_nobody_answers_is_not_run(site: Site) -> None:
    before = len(site.ran())
    site.tools.consent_seconds = 1.0
    try:
        chat = site.api("POST", "/chats", json={})
        events = answer(site, chat["id"], WEATHER, allow=None)
    finally:
        site.tools.consent_seconds = 120.0
    (result,) = of_type(events, "tool_result")
    assert not result["call"]["ran"] and result["call"]["result"] == DECLINED
    assert site.ran()[before:] == []
    stored = site.api("GET", f"/chats/{chat['id']}")["messages"]
    assert [m["role"] for m in stored] == ["user", "tool", "assistant"]


def test_a_chat_with_tools_off_makes_no_call(site: Site) -> None:
    chat = site.api("POST", "/chats", json={"tools": False})
    events = answer(site, chat["id"], WEATHER, allow=True)
    assert not of_type(events, "tool_call") and of_type(events, "done")[-1]["message"]


def test_a_server_that_cannot_start_is_one_line_and_the_others_serve(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, tmp_path / "calls.log", '\n[servers.broken]\ncommand = "no-such-mcp-server"\n'
    )
    tools = ChatTools(config)
    try:
        listed = tools.describe()
    finally:
        tools.close()
    by_name = {s["name"]: s for s in listed["servers"]}
    assert len(by_name["demo"]["tools"]) == 3 and by_name["demo"]["error"] is None
    error = by_name["broken"]["error"]
    assert "broken" in error and "\n" not in error and by_name["broken"]["tools"] == []


# -- the page -------------------------------------------------------------------------------------
def test_allow_a_call_in_the_page_and_see_its_result_and_the_answer(site: Site) -> None:
    with playwright_or_skip()() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 800})
            tab.set_default_timeout(ANSWER_TIMEOUT)
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.goto(site.url)
            tab.wait_for_selector("body[data-ready]")
            tab.wait_for_selector("#open-tools:not([hidden]).active")
            tab.fill("#input", WEATHER)
            tab.press("#input", "Enter")
            tab.click('.tool-call[data-status="asking"] button.allow')
            tab.wait_for_selector(".tool-call[data-status=done] .tool-result")
            answer = tab.locator(".msg.assistant:not(.streaming)").last
            answer.wait_for()
            assert "14" in answer.inner_text()
            tab.reload()
            tab.wait_for_selector("body[data-ready]")
            card = tab.locator(".msg.tool .tool-call")
            assert "get_weather" in card.inner_text() and "Oslo" in card.inner_text()
            card.locator("summary").click()
            assert "14 degrees" in card.locator(".tool-result pre").inner_text()
            assert not errors, errors
        finally:
            browser.close()
