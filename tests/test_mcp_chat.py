"""MCP tools in ``llm4all run`` and ``llm4all chat`` (issue 22), as a user runs them.

A real MCP server (the ``mcp`` package's own, over stdio, the script of
tests/test_mcp.py) listed in the test's ``$LLM4ALL_HOME/mcp.toml``; the real
command in a subprocess with the default model (Qwen2.5-Coder-0.5B calls
``get_weather`` reliably at temperature 0; SmolLM2 never calls a tool);
consent typed on standard input. The server writes each call it runs to a
log, so "not run" is checked where it matters: on the server's side.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from llm4all.mcp.history import read_record, restore, tool_record
from llm4all.mcp.loop import DECLINED, ToolCall
from llm4all.store import ChatStore
from mcp_helpers import SERVER

pytest.importorskip("mcp")

CLI = [sys.executable, "-m", "llm4all"]
QUESTION = "What's the weather in Paris?"
CALL = "demo.get_weather(city='Paris')"


def llm4all(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=300)


@pytest.fixture
def demo(tmp_path: Path, isolated_home: Path) -> Path:
    """``mcp.toml`` in the test's home, one stdio server; the path of its call log."""
    script = tmp_path / "demo_server.py"
    script.write_text(SERVER)
    log = tmp_path / "calls.log"
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "mcp.toml").write_text(
        f"[servers.demo]\ncommand = {json.dumps(sys.executable)}\n"
        f"args = [{json.dumps(str(script))}]\n"
        f"env = {{ CALLS = {json.dumps(str(log))} }}\n"
    )
    return log


def ran(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_stored_calls_come_back_as_the_exchange_the_model_saw() -> None:
    first = ToolCall("demo", "add", {"a": 2, "b": 3}, "allow", True, "5", "call_1")
    second = ToolCall("demo", "get_weather", {"city": "Oslo"}, "confirm", False, DECLINED, "c2")
    stored = [
        ("user", "2+3, and the weather in Oslo?"),
        ("tool", tool_record(first, said="Let me check.")),
        ("tool", tool_record(second)),
        ("tool", "not a record"),  # left out: a result without its call
        ("assistant", "5; the weather I was not allowed to look up."),
    ]
    history = restore(stored)
    assert [m.role for m in history] == ["user", "assistant", "tool", "tool", "assistant"]
    asked = history[1]
    assert asked.content == "Let me check."
    assert [c["function"] for c in asked.tool_calls] == [
        {"name": "add", "arguments": {"a": 2, "b": 3}},
        {"name": "get_weather", "arguments": {"city": "Oslo"}},
    ]
    assert [(m.tool_call_id, m.content) for m in history[2:4]] == [
        ("call_1", "5"),
        ("c2", DECLINED),
    ]
    assert read_record(stored[2][1]) == second
    assert read_record("plain text") is None


@pytest.mark.default_model
def test_run_without_a_terminal_does_not_run_a_confirm_tool(
    demo: Path, default_model_path: Path
) -> None:
    res = llm4all("run", QUESTION, "-m", str(default_model_path), "--temp", "0", "-n", "60")
    assert res.returncode == 0, res.stderr
    assert f"tool {CALL}" in res.stderr and "no terminal to ask on" in res.stderr
    assert ran(demo) == []  # the server never saw the call
    assert "get_weather" not in res.stdout  # no call written out as the answer


@pytest.mark.default_model
def test_run_yes_runs_the_tool_and_answers_from_it(demo: Path, default_model_path: Path) -> None:
    model = str(default_model_path)
    res = llm4all("run", QUESTION, "-m", model, "--temp", "0", "-n", "60", "--yes", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [(c["name"], c["arguments"], c["ran"]) for c in out["tool_calls"]][:1] == [
        ("get_weather", {"city": "Paris"}, True)
    ]
    assert ran(demo)[:1] == ["get_weather Paris"]
    assert "14" in out["text"] or "rain" in out["text"].lower()
    assert "→ Paris: 14 degrees Celsius, light rain" in res.stderr  # the result, shown
    # --no-tools: the same question, no server started, no call.
    res = llm4all("run", QUESTION, "-m", model, "--temp", "0", "-n", "20", "--no-tools", "--yes")
    assert res.returncode == 0 and "tool " not in res.stderr and len(ran(demo)) == 1


@pytest.mark.default_model
def test_chat_asks_saves_the_calls_and_continues_with_them(
    demo: Path, isolated_home: Path, default_model_path: Path, fast_model_path: Path
) -> None:
    res = llm4all(
        "chat",
        *("-m", str(default_model_path), "--temp", "0", "-n", "60"),
        stdin=f"{QUESTION}\ny\n/tools\n",
    )
    assert res.returncode == 0, res.stderr
    assert f"tool {CALL}" in res.stderr and f"Run {CALL}? [y/N]" in res.stderr
    assert "demo.get_weather  confirm  Current weather in a city" in res.stderr  # /tools
    assert ran(demo) == ["get_weather Paris"]
    store = ChatStore(isolated_home / "llm4all.db")
    [chat] = store.list_chats()
    saved = store.messages(chat.id)
    assert [m.role for m in saved] == ["user", "tool", "assistant"]
    call = read_record(saved[1].content)
    assert call is not None and (call.name, call.ran) == ("get_weather", True)
    assert "rain" in call.result and saved[2].completion_tokens

    # --continue: the calls are shown again and are in the history the model sees; a
    # chat without tools (SmolLM2's template has none) still renders them.
    res = llm4all(
        "chat",
        *("--continue", "-m", str(fast_model_path), "--no-tools", "-n", "8"),
        stdin="/history\nThanks!\n",
    )
    assert res.returncode == 0, res.stderr
    assert "tool get_weather(city='Paris')" in res.stderr
    assert "→ Paris: 14 degrees Celsius, light rain" in res.stderr
    assert [m.role for m in store.messages(chat.id)][3:] == ["user", "assistant"]


def test_chat_goes_on_without_a_server_that_fails(
    demo: Path, isolated_home: Path, fast_model_path: Path
) -> None:
    config = isolated_home / "mcp.toml"
    config.write_text(config.read_text() + '\n[servers.broken]\ncommand = "no-such-mcp-server"\n')
    res = llm4all("chat", "-m", str(fast_model_path), "--no-save", stdin="/tools\n")
    assert res.returncode == 0, res.stderr
    [line] = [x for x in res.stderr.splitlines() if "'broken'" in x and "warning" in x]
    assert "going on without it" in line
    assert "demo.get_weather  confirm" in res.stderr and "broken: not started" in res.stderr


def test_chat_flags(demo: Path, tmp_path: Path, fast_model_path: Path) -> None:
    res = llm4all("chat", "--lora", str(tmp_path / "none.gguf"))
    assert res.returncode == 2 and "does not exist" in res.stderr
    fast = str(fast_model_path)
    res = llm4all("chat", "-m", fast, "--server", "nope", "--no-save")
    assert res.returncode == 1 and "no MCP server named 'nope'" in res.stderr
    res = llm4all("run", "hi", "-m", fast, "--mcp", str(tmp_path / "none.toml"))
    assert res.returncode == 1 and "no such MCP configuration file" in res.stderr


@pytest.mark.slow
@pytest.mark.default_model
def test_run_on_a_terminal_asks_before_running(demo: Path, default_model_path: Path) -> None:
    args = ["run", QUESTION, "-m", str(default_model_path), "--temp", "0", "-n", "60"]
    child = pexpect.spawn(CLI[0], [*CLI[1:], *args], encoding="utf-8")
    child.expect_exact(f"Run {CALL}? [y/N]", timeout=300)
    child.sendline("n")
    child.expect("not run", timeout=60)
    child.expect(pexpect.EOF, timeout=300)
    child.close()
    assert child.exitstatus == 0 and ran(demo) == []
