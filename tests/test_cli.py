"""The ``llm4all`` command, run as a real process (and the chat in a real terminal)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from llm4all.store import ChatStore, StoredMessage
from llm4all.store.answers import SAVE_EVERY

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

    res = llm4all("chat", "--continue", "--temp", "0", "-n", "12", stdin="Thanks!\n")
    assert res.returncode == 0, res.stderr
    assert "Hello!" in res.stderr and "How are you?" in res.stderr  # its last turns are shown
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


# -- the terminal chat in a real terminal (a pty) --------------------------------------------
LONG_QUESTION = "Write a very long story about a brave knight."
ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>])")


def spawn_chat(*args: str) -> pexpect.spawn:
    """``llm4all chat ARGS`` in a 120-column pseudo-terminal, at its first prompt."""
    child = pexpect.spawn(
        CLI[0],
        [*CLI[1:], "chat", *args],
        encoding="utf-8",
        timeout=90,
        dimensions=(40, 120),
        # pexpect answers no cursor-position requests; one OpenMP waiter per core is plenty
        env={**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "OMP_WAIT_POLICY": "PASSIVE"},
    )
    child.logfile_read = io.StringIO()  # the whole screen, to look for tracebacks
    child.expect("Ctrl-D to leave")
    child.expect(">")
    return child


def screen_of(child: pexpect.spawn) -> str:
    """Everything the chat printed so far, without terminal escapes and carriage returns."""
    assert isinstance(child.logfile_read, io.StringIO)
    return ESCAPES.sub("", child.logfile_read.getvalue()).replace("\r", "")


def answer_on_screen(child: pexpect.spawn) -> str:
    """The text after the echoed question (``--plain`` prints the answer as it is)."""
    return screen_of(child).rsplit(LONG_QUESTION, 1)[1].partition("\n")[2]


def ask_long_question(child: pexpect.spawn) -> None:
    child.sendline(LONG_QUESTION)
    child.expect_exact(LONG_QUESTION)  # our line, echoed
    child.expect("\n")
    child.expect(r"\w+ \w+ \w+ \w+")  # the answer is streaming


def drain(child: pexpect.spawn, seconds: float) -> None:
    """Read (and consume) what the chat prints for ``seconds``, or until it ends."""
    child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=seconds)


def wait_for(child: pexpect.spawn, text: str, since: int = 0) -> None:
    """Read until ``text`` is on the screen (escapes removed) after position ``since``."""
    deadline = time.monotonic() + 90
    while text not in screen_of(child)[since:]:
        assert time.monotonic() < deadline, f"{text!r} not shown: {screen_of(child)[since:]!r}"
        with contextlib.suppress(pexpect.TIMEOUT):
            child.read_nonblocking(65536, timeout=1)


def hang_up(child: pexpect.spawn) -> None:
    """Close the terminal under the chat, as closing its window does (the kernel sends SIGHUP).

    pexpect's ``close()`` would follow up with signals of its own.
    """
    child.ptyproc.fileobj.close()
    child.ptyproc.closed, child.ptyproc.fd = True, -1
    child.child_fd, child.closed = -1, True


def the_answer(home: Path) -> StoredMessage:
    store = ChatStore(home / "llm4all.db")
    [chat] = store.list_chats()
    user, *answers = store.messages(chat.id)
    assert user.content == LONG_QUESTION and len(answers) == 1
    return answers[0]


@pytest.mark.slow
def test_terminal_chat_killed_keeps_the_answer_up_to_its_last_half_second(
    fast_model_path: Path, isolated_home: Path
) -> None:
    child = spawn_chat("-m", str(fast_model_path), "--plain", "--temp", "0", "-n", "2000")
    ask_long_question(child)
    shown = answer_on_screen(child)
    # Make sure a token was printed well after `shown` (a save is due then), then kill.
    drain(child, SAVE_EVERY + 0.5)
    assert child.read_nonblocking(1000, timeout=30)  # new text, straight from the terminal
    child.kill(signal.SIGKILL)
    drain(child, 5)
    child.close()
    assert child.signalstatus == signal.SIGKILL
    answer = the_answer(isolated_home)
    assert answer.content.startswith(shown.rstrip()) and len(answer.content) > len(shown)
    assert answer.finish_reason is None  # it never finished


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "terminal closed"])
def test_terminal_chat_terminated_saves_the_whole_answer_and_exits(
    how: str, fast_model_path: Path, isolated_home: Path
) -> None:
    child = spawn_chat("-m", str(fast_model_path), "--plain", "--temp", "0", "-n", "2000")
    ask_long_question(child)
    drain(child, 1)
    shown = answer_on_screen(child)
    if how == "terminal closed":
        hang_up(child)
        _, status = os.waitpid(child.pid, 0)
        child.terminated = True
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 128 + signal.SIGHUP
    else:
        child.kill(getattr(signal, how))
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 128 + getattr(signal, how)
        assert "Traceback" not in screen_of(child)
        if how == "SIGTERM":  # the terminal is still there: what it shows is what was saved
            shown = answer_on_screen(child).rstrip("\n").removesuffix("[stopped]")
    answer = the_answer(isolated_home)
    assert answer.content.startswith(shown.strip()) and answer.content.strip()
    assert answer.finish_reason == "cancelled"
    assert answer.completion_tokens and answer.completion_tokens > 1
    assert answer.tokens_per_second and answer.tokens_per_second > 0


@pytest.mark.slow
def test_terminal_chat_ctrl_c_stops_answer_and_ctrl_d_exits(
    fast_model_path: Path, isolated_home: Path
) -> None:
    child = spawn_chat("-m", str(fast_model_path), "-n", "400")  # Markdown view
    ask_long_question(child)
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
    # A ^C echoed at the end of a full-width line of the live view shifted its redraw:
    # the first line of the answer showed twice.
    assert "^C" not in screen_of(child)
    answer = the_answer(isolated_home)
    assert answer.finish_reason == "cancelled" and answer.content.strip()
    assert answer.tokens_per_second is None or answer.tokens_per_second > 0


TRICKY_QUESTION = "What is [bold]x[/bold] in fib_sequence[i-1] + fib_sequence[i-2] [/]?"
TRICKY_ANSWER = "x = fib_sequence[i-1] + fib_sequence[i-2] [red]not red[/red] [/]"


@pytest.mark.slow
def test_terminal_chat_shows_text_exactly_and_survives_bad_commands(
    fast_model_path: Path, isolated_home: Path
) -> None:
    store = ChatStore(isolated_home / "llm4all.db")
    chat = store.create_chat(model=str(fast_model_path))
    for n in range(4):
        store.add_message(chat.id, "user", f"old question {n}")
        store.add_message(chat.id, "assistant", f"old answer {n}")
    store.add_message(chat.id, "user", TRICKY_QUESTION)
    store.add_message(chat.id, "assistant", TRICKY_ANSWER)
    # The model answers the tricky text word for word: a grammar allows nothing else.
    grammar = 'root ::= "' + TRICKY_ANSWER + '"'
    child = spawn_chat("--continue", "--temp", "0", "-n", "60", "--grammar", grammar)
    recap = screen_of(child)  # --continue shows where the chat stands: its last turns
    assert "4 earlier messages" in recap and "old question 0" not in recap
    assert "old answer 2" in recap and TRICKY_QUESTION in recap and TRICKY_ANSWER in recap
    for command, shown in [
        ("/help", "/params [k=v ...]"),
        ("/params foo=1", "error: invalid foo='1': expected a parameter name"),
        ("/params temperature", "temperature = 0.0"),
        ("/params temperature=abc", "error: invalid temperature='abc': expected a number"),
        ("/params max_tokens=1.5", "error: invalid max_tokens='1.5': expected an integer"),
        ("/params top_p=3", "error: invalid top_p=3.0"),
        ("/system Use [b]brackets[/b] [/]", "system prompt set"),
        ("/system", "Use [b]brackets[/b] [/]"),
        ("/history", f"assistant: {TRICKY_ANSWER}"),
        ("Say it again.", TRICKY_ANSWER),  # the live Markdown view keeps every bracket
    ]:
        since = len(screen_of(child))
        child.sendline(command)
        wait_for(child, shown, since)
        wait_for(child, "\n>", since)  # the next prompt
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in screen_of(child) and "Usage:" not in screen_of(child)
    assert store.messages(chat.id)[-1].content == TRICKY_ANSWER
