"""The ``llm4all`` command, run as a real process (and the chat in a real terminal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from llm4all.store import ChatStore

CLI = [sys.executable, "-m", "llm4all"]


def llm4all(
    *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def test_run_streams_only_the_answer_to_stdout(fast_model_path: Path) -> None:
    res = llm4all(
        "run", "Name a colour.", "-m", str(fast_model_path), "--temp", "0", "-n", "12", "--stats"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()
    assert "tok/s" in res.stderr and "tok/s" not in res.stdout
    assert "llama_model_loader" not in res.stderr  # native log is quiet without --debug


def test_run_json_and_stdin(fast_model_path: Path) -> None:
    res = llm4all(
        "run", "-m", str(fast_model_path), "--temp", "0", "-n", "5", "--json", stdin="Say hi."
    )
    data = json.loads(res.stdout)
    assert data["usage"]["completion_tokens"] <= 5 and data["finish_reason"] in ("stop", "length")


def test_run_json_schema_flag(fast_model_path: Path, tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {"answer": {"type": "integer"}},
                "required": ["answer"],
            }
        )
    )
    res = llm4all(
        "run",
        "What is 2 + 2? Reply in JSON.",
        "-m",
        str(fast_model_path),
        "--temp",
        "0",
        "-n",
        "40",
        "--json-schema",
        f"@{schema}",
    )
    assert res.returncode == 0, res.stderr
    assert isinstance(json.loads(res.stdout)["answer"], int)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-p", "3"], "error: invalid top_p=3.0"),
        (["--temp", "-1"], "error: invalid temperature=-1.0"),
        (["-m", "smollm2-135m-instrct"], "did you mean 'smollm2-135m-instruct'"),
        (["-m", "/nonexistent/model.gguf"], "no such file"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    res = llm4all("run", "hi", *args)
    assert res.returncode == 1
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_corrupt_model_is_one_line(tmp_path: Path, fast_model_path: Path) -> None:
    broken = tmp_path / "half.gguf"
    broken.write_bytes(fast_model_path.read_bytes()[:30_000_000])
    res = llm4all("run", "hi", "-m", str(broken))
    assert res.returncode == 1
    assert "cannot load model" in res.stderr and "half.gguf" in res.stderr
    assert "Traceback" not in res.stderr


def test_prompt_longer_than_context(fast_model_path: Path) -> None:
    res = llm4all("run", "word " * 600, "-m", str(fast_model_path), "--ctx", "256")
    assert res.returncode == 1
    assert "context window holds 256" in res.stderr


def test_piped_chat_is_saved_and_continues(fast_model_path: Path, isolated_home: Path) -> None:
    res = llm4all(
        "chat",
        "-m",
        str(fast_model_path),
        "--temp",
        "0",
        "-n",
        "12",
        stdin="Hello!\nHow are you?\n",
    )
    assert res.returncode == 0, res.stderr
    store = ChatStore(isolated_home / "llm4all.db")
    [chat] = store.list_chats()
    assert [m.role for m in store.messages(chat.id)] == ["user", "assistant"] * 2

    res = llm4all("chat", "--continue", "--temp", "0", "-n", "12", stdin="/history\nThanks!\n")
    assert res.returncode == 0, res.stderr
    assert "Hello!" in res.stderr  # /history shows the resumed conversation
    assert [c.id for c in store.list_chats()] == [chat.id]
    assert len(store.messages(chat.id)) == 6


def test_chat_commands(fast_model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "saved.md"
    script = f"/system Answer in one word.\n/params temperature=0 max_tokens=4\nHi\n/save {out}\n/nope\n/exit\n"
    res = llm4all("chat", "-m", str(fast_model_path), stdin=script)
    assert res.returncode == 0, res.stderr
    assert "system prompt set" in res.stderr and "max_tokens = 4" in res.stderr
    assert "unknown command /nope" in res.stderr
    assert "Hi" in out.read_text()


@pytest.mark.slow
def test_terminal_chat_ctrl_c_stops_answer_and_ctrl_d_exits(fast_model_path: Path) -> None:
    child = pexpect.spawn(
        CLI[0],
        [*CLI[1:], "chat", "-m", str(fast_model_path), "--plain", "-n", "400"],
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 120),
        env={**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1"},
    )  # pexpect answers no CPR
    child.expect("Ctrl-D to leave")
    child.expect(">")
    child.sendline("Write a very long story about a brave knight.")
    child.expect("knight")  # our line, echoed (with terminal escapes around it)
    child.expect("\n")
    child.expect(r"\w+ \w+ \w+ \w+")  # the answer is streaming
    child.sendintr()
    child.expect("stopped")
    child.expect(">")  # still in the chat
    child.sendline("/history")
    child.expect("assistant")  # the partial answer was kept
    child.expect(">")  # back at the prompt, which reads Ctrl-D as "leave"
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
